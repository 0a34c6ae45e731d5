"""Prompt experiments and the feature caches they stand on."""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from zeroshot.data.readers import build_dataset
from zeroshot.commands.evaluate import evaluate
from zeroshot.experiments.templates import ensemble, greedy_selection
from zeroshot.commands.prompts import run_prompts
from zeroshot.features.cache import ImageFeatureCache, TextCache, cache_key
from zeroshot.features.extract import Encoding, extract_features
from zeroshot.errors import PromptError
from zeroshot.models.transforms import image_transform, transform_spec
from conftest import QUIET, make_cfg
from datagen import write_imagefolder

CLASSES = ["apple", "bus", "cat", "dog"]


@pytest.fixture
def folder(tmp_path):
    return write_imagefolder(tmp_path / "imgs", CLASSES, per_class=6)


def cfg_for(tmp_path, checkpoint, folder, *overrides, config="prompts"):
    return make_cfg(config, "dataset=imagefolder", f"dataset.root={folder}", *QUIET, "batch_size=5", "chunk_size=7",
                    *overrides, tmp_path=tmp_path, checkpoint=checkpoint)


def test_cache_key_changes_with_each_part():
    parts = {"checkpoint_sha256": "a" * 64, "architecture": "ViT-B-32", "activation": "quick_gelu", "backend": "zeroshot",
             "precision": "fp32", "preprocess": transform_spec(image_transform(224)), "dataset_fingerprint": "f" * 64,
             "split": "test", "n_images": 10000}
    base = cache_key(parts)
    changes = {"checkpoint_sha256": "b" * 64, "architecture": "ViT-B-16", "activation": "gelu", "backend": "open_clip",
               "precision": "fp16", "preprocess": transform_spec(image_transform(336)), "dataset_fingerprint": "e" * 64,
               "split": "train", "n_images": 9999}
    for key, value in changes.items():
        assert cache_key({**parts, key: value}) != base, key
    assert cache_key(dict(reversed(list(parts.items())))) == base


class Interrupting(torch.nn.Module):
    """Wraps a model and raises on the n-th encode_image call, like a run killed mid-extraction."""

    def __init__(self, model, fail_at):
        super().__init__()
        self.model, self.fail_at, self.calls = model, fail_at, 0

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)

    def encode_image(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("killed")
        return self.model.encode_image(x)


def _dataset(folder):

    from conftest import dataset_config

    cfg = dataset_config("imagefolder", root=folder)
    return build_dataset(cfg, image_transform(32))


def test_interrupted_extraction_resumes_and_bad_chunks_are_recomputed(tmp_path, folder, tiny_vit, capsys):
    ds = _dataset(folder)  # 24 images: chunks of 7 -> 4 chunks; batches of 5 never straddle a chunk
    reference = extract_features(tiny_vit, ds, how=Encoding(batch_size=5))
    cache = ImageFeatureCache(tmp_path / "c", {"k": 1}, chunk_size=7)
    with pytest.raises(KeyboardInterrupt):
        extract_features(Interrupting(tiny_vit, fail_at=5), ds, cache, Encoding(batch_size=5))  # dies in chunk 2
    assert sorted(p.name for p in cache.dir.glob("chunk_*.pt")) == ["chunk_000000.pt", "chunk_000001.pt"]
    assert not list(cache.dir.glob(".*"))  # no half-written temp files left behind

    counting = Interrupting(tiny_vit, fail_at=-1)
    resumed = extract_features(counting, ds, cache, Encoding(batch_size=5))
    assert resumed.from_cache == 14 and counting.calls == 3  # chunk 2 (5+2 images) and chunk 3 (3 images)
    assert torch.allclose(resumed.features, reference.features, atol=1e-6)
    assert torch.equal(resumed.indices, torch.arange(24)) and torch.equal(resumed.labels, reference.labels)

    # a truncated chunk and a chunk from another key are both detected and recomputed
    path = cache.chunk_path(1)
    path.write_bytes(path.read_bytes()[:100])
    other = ImageFeatureCache(tmp_path / "c2", {"k": 2}, chunk_size=7)
    extract_features(tiny_vit, ds, other, Encoding(batch_size=5))
    cache.chunk_path(3).write_bytes(other.chunk_path(3).read_bytes())
    counting = Interrupting(tiny_vit, fail_at=-1)
    again = extract_features(counting, ds, cache, Encoding(batch_size=5))
    assert again.from_cache == 14 and counting.calls == 3  # chunk 1 (2 batches) + chunk 3 (1 batch)
    assert torch.allclose(again.features, reference.features, atol=1e-6)
    out = capsys.readouterr().err  # warnings, through the zeroshot logger
    assert "chunk_000001.pt is corrupt" in out and "chunk_000003.pt is corrupt" in out


def test_text_cache_reuses_and_rejects(tmp_path, tiny_vit):
    from zeroshot.classifier import encode_prompts

    cache = TextCache(tmp_path, "sha-a")
    first = encode_prompts(tiny_vit, ["a cat", "a dog"], text_cache=cache)
    calls = []
    original = tiny_vit.encode_text
    tiny_vit.encode_text = lambda t: calls.append(len(t)) or original(t)
    try:
        again = encode_prompts(tiny_vit, ["a dog", "a cat", "a bus"], text_cache=TextCache(tmp_path, "sha-a"))
    finally:
        del tiny_vit.encode_text
    assert calls == [1] and torch.allclose(again[:2], first.flip(0))
    assert TextCache(tmp_path, "sha-b").get(["a cat"]) == {}  # another checkpoint sees nothing
    for path in cache.dir.glob("*.pt"):
        path.write_bytes(b"garbage")
    assert TextCache(tmp_path, "sha-a").get(["a cat"]) == {}


def test_ensemble_row_equals_eval_top1(tmp_path, folder, tiny_checkpoint):
    common = ["prompts=cifar10", 'prompts.templates=["a photo of a {}.","a drawing of a {}.","art of the {}.","{}"]',
              "dataset.classnames=" + str(_names(tmp_path))]
    summary = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, *common, "bootstrap=200"))
    metrics = evaluate(cfg_for(tmp_path, tiny_checkpoint, folder, *common, "cache=false", config="eval"))
    assert summary["ensemble"]["top1"] == pytest.approx(metrics["top1"], abs=1e-9)
    assert summary["ensemble"]["top5"] == pytest.approx(metrics["top5"], abs=1e-9)
    run = Path(summary["run_dir"])
    for name in ("templates.csv", "selection.csv", "summary.json", "templates.png", "selection.png", "best_prompts.json"):
        assert (run / name).stat().st_size > 0, name
    table = pd.read_csv(run / "templates.csv")
    assert len(table) == 4 and table["top1_ci_low"].le(table["top1"]).all() and table["p_vs_baseline"].between(0, 1).all()
    n = summary["ensemble"]["n_images"]  # leave-one-out changes are whole images: no float residue where nothing changed
    assert ((table["loo_delta"] * n).round(6) % 1 == 0).all()
    same = (table["loo_top1"] * n).round().astype(int) == round(summary["ensemble"]["top1"] * n)
    assert (table.loc[same, "loo_delta"] == 0).all()  # exactly 0, not 4.97e-10
    best = json.loads((run / "best_prompts.json").read_text())
    assert best["templates"] == summary["selected_templates"] and len(best["classnames"]) == 4


def test_selection_is_reported_on_held_out_images(tmp_path, folder, tiny_checkpoint):
    """Greedy selection picks on one part of the images; its headline top-1, CI and p-value come from the rest."""
    templates = '["a photo of a {}.","a drawing of a {}.","art of the {}.","{}","a {} in the wild.","itap of a {}."]'
    s = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, f"prompts.templates={templates}", "bootstrap=200"))
    n_sel, n_held = s["selection_images"], s["heldout_images"]
    assert n_sel + n_held == 24 and s["selected"]["n_images"] == n_held
    assert s["selected_on_selection_images"]["n_images"] == n_sel
    # recompute the headline from the saved pieces: the selected ensemble, scored on the held-out images only
    import numpy as np
    import torch.nn.functional as F

    from zeroshot.experiments.templates import template_features
    from zeroshot.pipeline import prepare, image_features, text_cache

    cfg = cfg_for(tmp_path, tiny_checkpoint, folder, f"prompts.templates={templates}")
    setup = prepare(cfg)
    feats = image_features(cfg, setup, False)
    image = F.normalize(feats.features, dim=-1)
    tf = template_features(setup.model, setup.classnames, s["selected_templates"], cfg, text_cache(setup))
    pred = (image @ ensemble(tf).t()).argmax(1)
    perm = np.random.default_rng(0).permutation(24)
    held = np.sort(perm[round(24 * 0.5):])
    assert s["selected"]["top1"] == pytest.approx(pred[held].eq(feats.labels[held]).double().mean().item(), abs=1e-9)
    # Holm-adjusted p-values sit beside the raw ones, never below them
    table = pd.read_csv(Path(s["run_dir"]) / "templates.csv")
    assert (table["p_vs_baseline_holm"] >= table["p_vs_baseline"] - 1e-12).all() and table["p_vs_baseline_holm"].le(1).all()


def test_selection_part_gets_its_own_resamples(tmp_path, folder, tiny_checkpoint):
    """A selection part smaller than the held-out part: its CI is the bootstrap of its own images (the held-out
    part's resamples indexed past its end before)."""
    import torch.nn.functional as F

    from zeroshot.experiments.templates import template_features
    from zeroshot.metrics.stats import bootstrap_ci, held_out_split
    from zeroshot.pipeline import image_features, prepare, text_cache

    templates = '["a photo of a {}.","a drawing of a {}.","art of the {}."]'
    cfg = cfg_for(tmp_path, tiny_checkpoint, folder, f"prompts.templates={templates}", "bootstrap=60", "select_fraction=0.25")
    s = run_prompts(cfg)
    assert (s["selection_images"], s["heldout_images"]) == (6, 18)
    setup = prepare(cfg)
    feats = image_features(cfg, setup, False)
    tf = template_features(setup.model, setup.classnames, s["selected_templates"], cfg, text_cache(setup))
    right = (F.normalize(feats.features, dim=-1) @ ensemble(tf).t()).argmax(1).eq(feats.labels).numpy()
    sel, held = held_out_split(24, 6, 0)
    row = s["selected_on_selection_images"]
    assert (row["top1_ci_low"], row["top1_ci_high"]) == pytest.approx(bootstrap_ci(right[sel], 60, 0), abs=1e-12)
    assert (s["selected"]["top1_ci_low"], s["selected"]["top1_ci_high"]) == pytest.approx(bootstrap_ci(right[held], 60, 0), abs=1e-12)


def test_a_failure_while_writing_leaves_no_run_directory(tmp_path, folder, tiny_checkpoint, monkeypatch):
    import zeroshot.commands.prompts as command

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(command, "write_prompt_file", broken)  # best_prompts.json, after the tables and a figure
    with pytest.raises(OSError, match="disk full"):
        run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, "bootstrap=10"))
    results = tmp_path / "results"
    assert results.is_dir() and not [p for p in results.rglob("*") if p.is_file()]  # the run's folder went with its files
    assert not [p for p in results.rglob("*") if p.is_dir() and p.name[:2] == "20"]


def test_holm_matches_the_textbook_procedure():
    from zeroshot.metrics.stats import holm

    p = [0.01, 0.04, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 -> 4*0.01, max(.04, 3*0.03), max(.09, 2*0.04), max(.09, 1*0.5)
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_a_single_template_is_called_degenerate(tmp_path, folder, tiny_checkpoint, capsys):
    s = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, 'prompts.templates=["a photo of a {}."]', "bootstrap=20"))
    assert s["degenerate_pool"] is True
    out = capsys.readouterr().err  # a note, through the zeroshot logger
    assert "degenerate" in out and "prompts=imagenet" in out


def _names(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(CLASSES) + "\n")
    return path


def test_second_experiment_encodes_no_image(tmp_path, folder, tiny_checkpoint):
    first = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, "bootstrap=50"))
    second = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, "bootstrap=50", 'prompts.templates=["a {}","the {}"]'))
    assert first["images_encoded"] == 24 and second["images_encoded"] == 0 and second["images_from_cache"] == 24


def test_greedy_selection_deterministic_and_matches_brute_force(tiny_vit):
    torch.manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(6, 5, 16), dim=-1)  # [T, C, D]
    image = torch.nn.functional.normalize(torch.randn(80, 16), dim=-1)
    labels = torch.randint(0, 5, (80,))
    chosen = greedy_selection(image, labels, feats, None)
    assert chosen == greedy_selection(image, labels, feats, None)

    def acc(subset):
        return (image @ ensemble(feats[subset]).t()).argmax(1).eq(labels).float().mean().item()

    expected, best = [], -1.0
    while True:  # the obvious O(T^2) recomputation of every candidate ensemble
        cands = [(acc(expected + [t]), -t) for t in range(6) if t not in expected]
        if not cands or max(cands)[0] <= best + 1e-12:
            break
        a, neg_t = max(cands)
        expected.append(-neg_t)
        best = a
    assert chosen == expected


def test_experiment_is_reproducible_and_checks_inputs(tmp_path, folder, tiny_checkpoint):
    a = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, "prompts=cifar10", f"dataset.classnames={_names(tmp_path)}", "bootstrap=100"))
    b = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, "prompts=cifar10", f"dataset.classnames={_names(tmp_path)}", "bootstrap=100"))
    assert a["selected_templates"] == b["selected_templates"] and a["ensemble"] == b["ensemble"]
    with pytest.warns(UserWarning, match="duplicate"):
        s = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, 'prompts.templates=["a {}","a {}","b {}"]', "bootstrap=10"))
    assert s["n_templates"] == 2
    with pytest.raises(PromptError, match="exactly one"):
        run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, 'prompts.templates=["no slot"]'))
    bad = tmp_path / "three.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(PromptError, match="3 names"):
        run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, f"classnames_variants=[{bad}]", "bootstrap=10"))
    good = tmp_path / "variant.txt"
    good.write_text("red apple\nyellow bus\nhouse cat\npuppy\n")
    s = run_prompts(cfg_for(tmp_path, tiny_checkpoint, folder, f"classnames_variants=[{good}]", "bootstrap=10"))
    assert [v["name"] for v in s["classname_variants"]] == ["classnames: simple", "classnames: variant.txt"]
