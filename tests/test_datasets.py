"""Benchmark datasets: CLIP_benchmark's webdatasets, the ImageNet shifts, ObjectNet, and the per-dataset metrics,
each on data written in its real on-disk format by the test itself."""
import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zeroshot.errors import DatasetError
from zeroshot.commands.evaluate import evaluate
from conftest import QUIET, REPO, make_cfg
from datagen import write_imagefolder


def cfg(tmp_path, checkpoint, *overrides):
    return make_cfg("eval", *QUIET, "batch_size=4", *overrides, tmp_path=tmp_path, checkpoint=checkpoint)


class _Files(torch.utils.data.Dataset):
    """(path, label) pairs with .classes and .templates, for CLIP_benchmark's converter to copy as they are."""

    def __init__(self, folder: Path, templates):
        from torchvision.datasets import ImageFolder

        inner = ImageFolder(str(folder))
        self.samples, self.classes, self.templates = inner.samples, inner.classes, templates

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def write_wds(folder: Path, out: Path, templates=("a photo of a {c}.", "art of the {c}."), max_count=5) -> Path:
    """CLIP_benchmark's own writer (clip_benchmark.webdataset_builder.convert_dataset), image files copied as they are."""
    import clip_benchmark.webdataset_builder as builder  # a declared test dependency (clip-benchmark)
    builder.convert_dataset(_Files(folder, list(templates)), "test", str(out), transform=builder.path_to_bytes,
                            max_count=max_count, verbose=False)
    return out


@pytest.fixture
def pets(tmp_path):
    folder = write_imagefolder(tmp_path / "pets", ["cat", "dog", "fox"], per_class=4)
    return folder, write_wds(folder, tmp_path / "pets_wds")


# ------------------------------------------------------------------------ webdatasets

def test_webdataset_equals_the_image_folder(tmp_path, tiny_checkpoint, pets):
    folder, shards = pets
    assert (shards / "test" / "nshards.txt").read_text().strip() == "3"  # 12 samples, 5 a shard
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nfox\n")
    tpl = 'prompts.templates=["a photo of a {}.","art of the {}."]'
    a = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=wds", f"dataset.root={shards}"))
    b = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={folder}", f"dataset.classnames={names}", tpl))
    la, lb = np.load(Path(a["run_dir"]) / "logits.npz"), np.load(Path(b["run_dir"]) / "logits.npz")
    assert np.array_equal(la["labels"], lb["labels"]) and np.allclose(la["logits"], lb["logits"], atol=1e-6)
    assert a["prompts"] == "wds_shipped" and a["n_templates"] == 2 and a["dataset_fingerprint_kind"] == "shards"
    preds = (Path(a["run_dir"]) / "predictions.csv").read_text()
    assert "0.tar:s0000000" in preds


def test_webdataset_cache_resume_workers_and_order(tmp_path, tiny_checkpoint, pets):
    _, shards = pets
    base = ["dataset=wds", f"dataset.root={shards}", "chunk_size=4"]
    first = evaluate(cfg(tmp_path, tiny_checkpoint, *base))
    # a killed run keeps whole chunks: drop one and the next run encodes only it, with 2 DataLoader workers
    chunks = sorted((tmp_path / "cache" / "image_features").rglob("chunk_*.pt"))
    assert len(chunks) == 3
    chunks[1].unlink()
    second = evaluate(cfg(tmp_path, tiny_checkpoint, *base, "num_workers=2"))
    assert second["images_from_cache"] == 8 and second["top1"] == first["top1"]
    l1, l2 = np.load(Path(first["run_dir"]) / "logits.npz"), np.load(Path(second["run_dir"]) / "logits.npz")
    assert np.allclose(l1["logits"], l2["logits"], atol=1e-6)
    # the same images in another order are another dataset for the cache: its key follows sample order
    reordered = tmp_path / "reordered"
    import shutil

    shutil.copytree(shards, reordered)
    for i, j in ((0, 2), (2, 0)):
        shutil.copy(shards / "test" / f"{i}.tar", reordered / "test" / f"{j}.tar")
    third = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=wds", f"dataset.root={reordered}", "chunk_size=4"))
    assert third["images_from_cache"] == 0 and third["dataset_fingerprint"] != first["dataset_fingerprint"]


def test_truncated_shard_is_named_or_skipped(tmp_path, tiny_checkpoint, pets):
    _, shards = pets
    shard = shards / "test" / "1.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # cut in the middle of a sample
    with pytest.raises(DatasetError, match=r"1\.tar.*(truncated|corrupt)|1\.tar.*s000"):
        evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=wds", f"dataset.root={shards}", "cache=false"))
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=wds", f"dataset.root={shards}", "cache=false", "skip_bad_images=true"))
    assert m["skipped_images"] >= 1 and m["n_images"] + m["skipped_images"] <= 12 and m["n_images"] >= 7


def test_missing_layout_files_are_named(tmp_path, tiny_checkpoint, pets):
    _, shards = pets
    (shards / "classnames.txt").unlink()
    with pytest.raises(DatasetError, match="classnames.txt is missing"):
        evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=wds", f"dataset.root={shards}"))
    (shards / "test" / "nshards.txt").unlink()
    with pytest.raises(DatasetError, match="nshards.txt is missing"):
        evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=wds", f"dataset.root={shards}"))


def test_command_line_prompts_override_the_shipped_ones(tmp_path, tiny_checkpoint, pets):
    _, shards = pets
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=wds", f"dataset.root={shards}", "prompts=simple"))
    assert m["prompts"] == "simple" and m["n_templates"] == 1


def test_named_dataset_from_its_webdataset_checks_the_label_order(tmp_path, tiny_checkpoint):
    """dataset=rendered_sst2 read from a webdataset: the shipped names must be its prompt set's, in order."""
    folder = write_imagefolder(tmp_path / "sst", ["negative", "positive"], per_class=3)
    good = write_wds(folder, tmp_path / "sst_wds", templates=("a {c} review of a movie.",))
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=rendered_sst2", f"dataset.root={good}"))
    assert m["n_images"] == 6 and not m["comparable"] and "6 of 1,821" in m["not_comparable_reason"]
    swapped = write_imagefolder(tmp_path / "sst2", ["positive", "zz_negative"], per_class=1)
    bad = write_wds(swapped, tmp_path / "bad_wds")
    with pytest.raises(Exception, match="another label order"):
        evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=rendered_sst2", f"dataset.root={bad}"))


@pytest.mark.cli
def test_webdataset_from_the_hub(tmp_path, tiny_checkpoint, pets):
    from fakehub import Hub, serve

    _, shards = pets
    httpd, url = serve()
    try:
        Hub.repos["datasets/lab/wds_pets"] = {str(p.relative_to(shards)): p.read_bytes() for p in shards.rglob("*") if p.is_file()}
        Hub.repos["datasets/lab/not_wds"] = {"README.md": b"# hi", "classnames.txt": b"a\nb\n"}
        env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
        common = [sys.executable, "-m", "zeroshot", "eval", "dataset=wds", f"model.checkpoint={tiny_checkpoint}",
                  f"results_dir={tmp_path / 'r'}", f"cache_dir={tmp_path / 'c'}", "num_workers=0", "progress=false"]
        r = subprocess.run([*common, "dataset.root=hf-hub:lab/wds_pets"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        m = json.loads(next((tmp_path / "r").rglob("metrics.json")).read_text())
        assert m["n_images"] == 12 and m["prompts"] == "wds_shipped"
        r = subprocess.run([*common, "dataset.root=hf-hub:lab/not_wds"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 1 and "has classnames.txt of" in r.stderr, r.stderr[-2000:]
        offline = subprocess.run([*common, "dataset.root=hf-hub:lab/other"], capture_output=True, text=True,
                                 env={**env, "HF_HUB_OFFLINE": "1"}, timeout=300)
        assert offline.returncode == 1 and "hf download lab/other --repo-type dataset" in offline.stderr
    finally:
        httpd.shutdown()


# ------------------------------------------------------------------------ the ImageNet shifts

def _folders(root: Path, names, per=1, size=8):
    pixel = Image.new("RGB", (size, size), (120, 30, 200))
    for i, n in enumerate(names):
        (root / n).mkdir(parents=True)
        for j in range(per):
            pixel.save(root / n / f"{i:04d}_{j}.png")
    return root


def test_imagenetv2_folder_k_is_class_k(tmp_path, tiny_checkpoint):
    from omegaconf import OmegaConf

    from zeroshot.data.readers import build_dataset

    root = _folders(tmp_path / "v2" / "imagenetv2-matched-frequency-format-val", [str(k) for k in range(1000)])
    dcfg = make_cfg("eval", "dataset=imagenetv2", f"dataset.root={tmp_path / 'v2'}").dataset
    ds = build_dataset(dcfg)
    by_folder = {Path(p).parent.name: label for p, label in ds.source.samples}
    assert all(by_folder[str(k)] == k for k in range(1000))  # a string sort would give "10" label 2
    import shutil

    shutil.rmtree(root / "999")
    with pytest.raises(DatasetError, match="found 999 class folders, expected 1000"):
        build_dataset(OmegaConf.create(OmegaConf.to_container(dcfg, resolve=True)))


def test_imagenet_r_subset_and_its_classifier(tmp_path, tiny_checkpoint):
    from zeroshot.data.imagenet import wnid_lists

    wnids = wnid_lists()["imagenet_r"]
    _folders(tmp_path / "r" / "imagenet-r", wnids)
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=imagenet_r", f"dataset.root={tmp_path / 'r'}", "prompts.template_set=null",
                     'prompts.templates=["a photo of a {}."]'))
    assert m["n_classes"] == 200 and m["n_images"] == 200
    import pandas as pd

    preds = pd.read_csv(Path(m["run_dir"]) / "predictions.csv")
    imagenet = json.loads((REPO / "prompts" / "imagenet.json").read_text())["classnames"]
    all_wnids = wnid_lists()["imagenet"]
    expected = {w: imagenet[all_wnids.index(w)] for w in wnids}
    for path, name in zip(preds.path, preds.label_name):
        assert expected[Path(path).parent.name] == name
    (tmp_path / "r" / "imagenet-r" / wnids[0]).rename(tmp_path / "r" / "imagenet-r" / "n99999999")
    with pytest.raises(DatasetError, match="missing 1 .*unexpected 1"):
        evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=imagenet_r", f"dataset.root={tmp_path / 'r'}"))


def _cb_literal(name):
    import clip_benchmark.datasets.builder as builder  # a declared test dependency (clip-benchmark)
    for node in ast.walk(ast.parse(Path(builder.__file__).read_text())):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return ast.literal_eval(node.value)
    raise AssertionError(name)


@pytest.mark.parametrize("ours,theirs", [("imagenet", "all_imagenet_wordnet_ids"), ("imagenet_a", "imagenet_a_wnids"),
                                         ("imagenet_r", "imagenet_r_wnids"), ("imagenet_o", "imagenet_o_wnids")])
def test_wnid_lists_equal_the_published_ones(ours, theirs):
    from zeroshot.data.imagenet import wnid_lists

    published = _cb_literal(theirs)
    assert wnid_lists()[ours] == sorted(published) and len(set(published)) == len(published)
    if ours != "imagenet":
        assert len(published) == 200
        from zeroshot.data.imagenet import subset_positions

        imagenet = json.loads((REPO / "prompts" / "imagenet.json").read_text())["classnames"]
        names = [imagenet[i] for i in subset_positions(ours)]
        mask = [w in set(published) for w in _cb_literal("all_imagenet_wordnet_ids")]
        assert names == [c for c, keep in zip(imagenet, mask) if keep]


def test_objectnet_mapping_and_protocol(tmp_path, tiny_checkpoint):
    base = tmp_path / "objectnet" / "objectnet-1.0"
    _folders(base / "images", ["air_freshener", "alarm_clock", "backpack", "zz_unmapped"], per=2, size=12)
    (base / "mappings").mkdir(parents=True)
    (base / "mappings" / "folder_to_objectnet_label.json").write_text(json.dumps(
        {"air_freshener": "Air freshener", "alarm_clock": "Alarm clock", "backpack": "Backpack", "zz_unmapped": "Something"}))
    (base / "mappings" / "objectnet_to_imagenet_1k.json").write_text(json.dumps(
        {"Alarm clock": "analog clock; digital clock", "Backpack": "backpack, back pack, knapsack, packsack, rucksack, haversack",
         "Air freshener": "perfume, essence"}))
    from omegaconf import OmegaConf

    from zeroshot.data.readers import build_dataset

    dcfg = make_cfg("eval", "dataset=objectnet", f"dataset.root={tmp_path / 'objectnet'}",
                    "dataset.num_classes=3").dataset
    ds = build_dataset(dcfg)
    assert ds.classes == ["air freshener", "alarm clock", "backpack"] and len(ds) == 6  # the unmapped folder is left out
    image, label = ds.source[0]
    assert image.size == (10, 10) and label == 0  # the 1-pixel border is cut from each side
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=objectnet", f"dataset.root={tmp_path / 'objectnet'}", "dataset.num_classes=3"))
    assert m["n_classes"] == 3 and m["n_templates"] == 80
    del OmegaConf


# ------------------------------------------------------------------------ metrics

def test_metrics_against_reference_implementations():
    from sklearn.metrics import average_precision_score, f1_score

    from zeroshot.metrics.classification import group_accuracies, macro_f1, mean_average_precision

    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    y[y == 6] = 5  # a class that never occurs in the labels is left out, as WILDS does
    assert macro_f1(pred, y) == pytest.approx(f1_score(y, pred, average="macro", labels=np.unique(y)), abs=1e-12)
    scores, multi = rng.normal(size=(80, 5)), rng.integers(0, 2, (80, 5))
    expected = np.mean([average_precision_score(multi[:, k], scores[:, k]) for k in range(5)])
    assert mean_average_precision(scores, multi) == pytest.approx(expected, abs=1e-12)
    correct, groups = rng.integers(0, 2, 50).astype(bool), rng.integers(0, 4, 50)
    acc = group_accuracies(correct, groups, exclude=[3])
    assert set(acc) == {0, 1, 2} and all(acc[g] == pytest.approx(correct[groups == g].mean()) for g in acc)


def _wilds_wds(out: Path, classes, metadata, labels, seed=0):
    """Shards as DataComp publishes WILDS and fairness sets: image, .cls label, .npy metadata row (webdataset's writer)."""
    import webdataset

    (out / "test").mkdir(parents=True)
    (out / "classnames.txt").write_text("\n".join(classes) + "\n")
    (out / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n")
    rng = np.random.default_rng(seed)
    with webdataset.ShardWriter(str(out / "test" / "%d.tar"), maxcount=10) as sink:
        for i, (label, meta) in enumerate(zip(labels, metadata)):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, format="png")
            sink.write({"__key__": f"s{i:07d}", "png": buf.getvalue(), "cls": int(label), "npy": np.asarray(meta)})
        n = sink.shard
    (out / "test" / "nshards.txt").write_text(f"{n}\n")
    return out


def test_fmow_worst_region_from_webdataset_metadata(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 30)
    regions = rng.integers(0, 6, 30)
    shards = _wilds_wds(tmp_path / "fmow", ["airport", "barn", "dam", "park"], np.stack([regions, regions * 0 + 2016, labels], 1), labels)
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=fmow", f"dataset.root={shards}", "dataset.num_classes=4"))
    z = np.load(Path(m["run_dir"]) / "logits.npz")
    correct = z["logits"].argmax(1) == z["labels"]
    expected = min(correct[regions[z["indices"]] == r].mean() for r in set(regions.tolist()) - {5})
    assert m["metric"] == "worst_region_top1" and m["main_metric"] == pytest.approx(expected)
    assert "5" not in m["group_accuracy"] and m["group_field"] == "region"


def test_dollar_street_worst_group_top5(tmp_path, tiny_checkpoint):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 8, 40)
    income = rng.integers(0, 4, 40)
    shards = _wilds_wds(tmp_path / "ds", [f"thing {i}" for i in range(8)], np.stack([income, income, income], 1), labels)
    m = evaluate(cfg(tmp_path, tiny_checkpoint, "dataset=dollar_street", f"dataset.root={shards}", "dataset.num_classes=8"))
    z = np.load(Path(m["run_dir"]) / "logits.npz")
    top5 = np.argsort(-z["logits"], 1)[:, :5]
    hit = (top5 == z["labels"][:, None]).any(1)
    assert m["main_metric"] == pytest.approx(min(hit[income == g].mean() for g in range(4)))
