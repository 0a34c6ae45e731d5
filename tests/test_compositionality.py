"""Image-caption selection (`zeroshot compositionality`): SugarCrepe, Winoground, ARO and a user's JSONL read from
their real layouts, scored against brute force and against CLIP_benchmark's image_caption_selection.evaluate on
the same random weights; bad input named in one line, nothing half-written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compositionality_data import (
    SUBSETS,
    winoground_rows,
    write_aro_vg,
    write_order,
    write_sugar_crepe,
    write_user_jsonl,
    write_winoground_jsonl,
    write_winoground_parquet,
    write_winoground_repo,
)
from conftest import eval_config, make_cfg
from zeroshot.commands.compositionality import run_compositionality
from zeroshot.errors import DatasetError
from zeroshot.metrics.compositionality import chosen_right, outcomes


def ccfg(tmp_path, checkpoint, *overrides):
    return eval_config(tmp_path, checkpoint, "batch_size=4", *overrides, config="compositionality")


class Direct:
    """Features computed outside the pipeline: zeroshot.load, its preprocess image by image, the tokenizer."""

    def __init__(self, checkpoint):
        import zeroshot

        self.model, self.preprocess = zeroshot.load(str(checkpoint))
        self.tokenize = lambda texts: zeroshot.tokenize(texts, truncate=True)

    @torch.no_grad()
    def image(self, pil) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model.encode_image(self.preprocess(pil.convert("RGB")).unsqueeze(0))[0], dim=-1)

    @torch.no_grad()
    def text(self, captions: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(self.model.encode_text(self.tokenize(captions)), dim=-1)


# ------------------------------------------------------------------------ metric, on features


def test_outcomes_equal_a_loop_over_instances_and_ties_follow_the_rule():
    torch.manual_seed(0)
    images, texts = torch.randn(7, 8), torch.randn(20, 8)
    insts = [([0], [0, 1], [0]), ([1], [2, 3, 4], [2]), ([2, 3], [5, 6], [0, 1]), ([4, 5], [7, 8, 9], [1, 0]),
             ([6], [10, 11], [1])]
    got = outcomes(images, texts, insts, "strict")
    n = torch.nn.functional.normalize
    for k, (im, tx, ans) in enumerate(insts):
        s = n(images[im], dim=-1) @ n(texts[tx], dim=-1).T
        text_ok = all(all(s[i, ans[i]] > s[i, j] for j in range(len(tx)) if j != ans[i]) for i in range(len(im)))
        assert got.text[k] == text_ok
        if len(im) > 1:
            image_ok = all(all(s[i, ans[i]] > s[o, ans[i]] for o in range(len(im)) if o != i) for i in range(len(im)))
            assert got.image[k] == image_ok and got.group[k] == (text_ok and image_ok)
        else:
            assert np.isnan(got.image[k]) and got.group[k] == text_ok
    # an exact tie: the strict rule (SugarCrepe, Winoground, ARO VG) counts it wrong; argmax-first counts it right
    # when the right candidate comes first (CLIP_benchmark, ARO's order sets), wrong when it comes after
    tie = torch.tensor([[[0.5, 0.5, 0.1]]])
    assert not chosen_right(tie, torch.tensor([[0]]), "strict") and chosen_right(tie, torch.tensor([[0]]), "first")
    assert not chosen_right(tie, torch.tensor([[1]]), "first")
    same = outcomes(torch.ones(1, 4), torch.ones(2, 4), [([0], [0, 1], [0])], "first")
    assert same.text[0] == 1 and outcomes(torch.ones(1, 4), torch.ones(2, 4), [([0], [0, 1], [0])]).text[0] == 0


# ------------------------------------------------------------------------ SugarCrepe


def test_sugar_crepe_equals_brute_force_and_clip_benchmark(tmp_path, tiny_checkpoint):
    from PIL import Image

    root = write_sugar_crepe(tmp_path / "sugar_crepe")
    m = run_compositionality(ccfg(tmp_path, tiny_checkpoint, f"dataset.root={root}", "chunk_size=4"))
    direct = Direct(tiny_checkpoint)
    brute = {}
    for subset in SUBSETS:  # SugarCrepe's main_eval.py rule: right if pos_score > neg_score
        ann = json.loads((root / f"{subset}.json").read_text())
        right = []
        for entry in ann.values():
            im = direct.image(Image.open(root / "val2017" / entry["filename"]))
            pos, neg = direct.text([entry["caption"], entry["negative_caption"]]) @ im
            right.append(float(pos > neg))
        brute[subset] = float(np.mean(right))
    assert m["subsets"] == pytest.approx(brute, abs=1e-12)
    assert m["group_means"]["swap"] == pytest.approx((brute["swap_obj"] + brute["swap_att"]) / 2)
    assert m["group_means"]["replace"] == pytest.approx(np.mean([brute[s] for s in SUBSETS[:3]]))
    assert m["main_metric"] == m["text_accuracy_mean_of_subsets"] == pytest.approx(np.mean(list(brute.values())))
    assert m["n_instances"] == 28 and m["n_images"] == 10 and m["kind"] == "compositionality" and m["ties"] == "strict"
    assert "image_accuracy" not in m and not m["comparable"]
    for key in ("checkpoint_sha256", "architecture", "dataset_fingerprint", "versions", "world_size", "instances_hash"):
        assert key in m, key
    # CLIP_benchmark's own SugarCrepe reader and loop, the same weights: equal per subset
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.datasets.sugar_crepe import SugarCrepe
    from clip_benchmark.metrics.image_caption_selection import evaluate

    for subset in SUBSETS:
        ds = SugarCrepe(str(root / "val2017"), str(root / f"{subset}.json"), transform=direct.preprocess)
        loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=image_captions_collate_fn)
        ref = evaluate(direct.model, loader, direct.tokenize, "cpu", amp=False)
        assert m["subsets"][subset] == pytest.approx(ref["text_acc"], abs=1e-12), subset
    run = Path(m["run_dir"])
    z = np.load(run / "outcomes.npz", allow_pickle=False)
    assert len(z["keys"]) == 28 and z["keys"][0] == "replace_obj/0" and z["text"].mean() == pytest.approx(m["text_accuracy"])
    again = run_compositionality(ccfg(tmp_path, tiny_checkpoint, f"dataset.root={root}", "chunk_size=4"))
    assert again["images_from_cache"] == 10 and again["subsets"] == m["subsets"]


# ------------------------------------------------------------------------ Winoground


class _Pairs(torch.utils.data.Dataset):
    """Winoground rows as CLIP_benchmark's WinoGround dataset yields them: ([2, C, H, W], [caption_0, caption_1])."""

    def __init__(self, rows, preprocess):
        from PIL import Image
        import io

        self.items = [(torch.stack([preprocess(Image.open(io.BytesIO(r[f"image_{k}"])).convert("RGB")) for k in (0, 1)]),
                       [r["caption_0"], r["caption_1"]]) for r in rows]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_winoground_parquet_and_jsonl_equal_brute_force_and_clip_benchmark(tmp_path, tiny_checkpoint):
    import io

    from PIL import Image

    rows = winoground_rows()
    a = run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=winoground",
                                  f"dataset.root={write_winoground_parquet(tmp_path / 'wg_parquet', rows)}"))
    b = run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=winoground",
                                  f"dataset.root={write_winoground_jsonl(tmp_path / 'wg_jsonl', rows)}"))
    c = run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=winoground",
                                  f"dataset.root={write_winoground_repo(tmp_path / 'wg_repo', rows)}", "num_workers=2"))
    direct = Direct(tiny_checkpoint)
    text, image, group = [], [], []
    for r in rows:  # the paper's definitions
        i0, i1 = (direct.image(Image.open(io.BytesIO(r[f"image_{k}"]))) for k in (0, 1))
        c0, c1 = direct.text([r["caption_0"], r["caption_1"]])
        s = {(c, i): float(cv @ iv) for c, cv in ((0, c0), (1, c1)) for i, iv in ((0, i0), (1, i1))}
        t = s[0, 0] > s[1, 0] and s[1, 1] > s[0, 1]
        v = s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0]
        text.append(t), image.append(v), group.append(t and v)
    for m in (a, b, c):
        assert m["text_score"] == pytest.approx(np.mean(text)) and m["image_score"] == pytest.approx(np.mean(image))
        assert m["group_score"] == pytest.approx(np.mean(group)) and m["main_metric"] == m["group_score"]
        assert m["n_instances"] == 6 and m["n_images"] == 12 and set(m["per_group"]) == {"Object", "Relation", "Both"}
        assert not m["comparable"] and m["not_comparable_reason"] == "6 of 400 images"
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics.image_caption_selection import evaluate

    loader = torch.utils.data.DataLoader(_Pairs(rows, direct.preprocess), batch_size=4, collate_fn=image_captions_collate_fn)
    ref = evaluate(direct.model, loader, direct.tokenize, "cpu", amp=False)
    assert (a["text_score"], a["image_score"], a["group_score"]) == pytest.approx((ref["text_acc"], ref["image_acc"], ref["acc"]))
    # the same instances from another layout: another fingerprint (other files) and instances hash (other image names)
    assert a["dataset_fingerprint"] != b["dataset_fingerprint"] and a["instances_hash"] != b["instances_hash"]
    import shutil

    shutil.copytree(tmp_path / "wg_jsonl", tmp_path / "elsewhere")  # a copy of the same files: the same row
    d = run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=winoground", f"dataset.root={tmp_path / 'elsewhere'}"))
    assert d["instances_hash"] == b["instances_hash"] and d["text_score"] == b["text_score"]


def test_winoground_from_the_hub_cache_and_the_gated_message(tmp_path, tiny_checkpoint, monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors

    snapshot = write_winoground_repo(tmp_path / "snapshot", winoground_rows(n=3))
    calls = []

    def fake(repo, **kw):
        calls.append((repo, kw))
        if kw.get("local_files_only"):
            raise errors.LocalEntryNotFoundError("not cached")
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    m = run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=winoground", f"dataset.root={tmp_path / 'none'}",
                                  "dataset.download=true"))
    assert m["n_instances"] == 3 and calls[0][0] == "facebook/winoground" and calls[0][1]["repo_type"] == "dataset"
    with pytest.raises(DatasetError, match=r"not in the Hugging Face cache.*accept its terms at https://huggingface.co/datasets/facebook/winoground.*log in"):
        run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=winoground", "dataset.root=hf-hub:facebook/winoground"))

    def gated(repo, **kw):  # what huggingface_hub raises for a gated repo whose terms this account has not accepted
        e = errors.GatedRepoError.__new__(errors.GatedRepoError)
        Exception.__init__(e, "403 gated")
        raise e

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(DatasetError, match=r"facebook/winoground is gated: accept its terms"):
        run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=winoground", "dataset.root=hf-hub:facebook/winoground",
                                  "dataset.download=true"))


# ------------------------------------------------------------------------ ARO


def test_aro_vg_macro_accuracies_equal_brute_force_on_crops(tmp_path, tiny_checkpoint):
    from PIL import Image

    root = write_aro_vg(tmp_path / "aro")
    direct = Direct(tiny_checkpoint)
    symmetric = set(json.loads((Path(__file__).resolve().parents[1] / "zeroshot/reference/aro_symmetric_relations.json")
                               .read_text())["relations"])
    for dataset, file, field in (("aro_vg_relation", "visual_genome_relation.json", "relation_name"),
                                 ("aro_vg_attribution", "visual_genome_attribution.json", "attributes")):
        m = run_compositionality(ccfg(tmp_path, tiny_checkpoint, f"dataset={dataset}", f"dataset.root={root}",
                                      *(["dataset.macro_min_count=5"] if field == "attributes" else [])))
        per: dict[str, list[float]] = {}
        for case in json.loads((root / file).read_text()):
            im = Image.open(root / "images" / case["image_path"]).convert("RGB")
            x, y, w, h = case["bbox_x"], case["bbox_y"], case["bbox_w"], case["bbox_h"]
            feats = direct.text([case["false_caption"], case["true_caption"]]) @ direct.image(im.crop((x, y, x + w, y + h)))
            key = case[field] if field == "relation_name" else "_".join(case[field])
            per.setdefault(key, []).append(float(np.argmax(feats.numpy()) == 1))  # ARO: argmax over [false, true]
        if field == "relation_name":
            macro = [np.mean(v) for k, v in per.items() if k not in symmetric]
            assert m["macro_excluded"] == ["next to"] and m["macro_groups"] == 3
        else:
            macro = [np.mean(v) for k, v in per.items() if len(v) >= 5]
            assert m["macro_excluded"] == ["big_small"] and m["macro_groups"] == 1  # 4 cases: under the minimum
        assert m["main_metric"] == m["macro_accuracy"] == pytest.approx(np.mean(macro))
        assert m["text_accuracy"] == pytest.approx(np.mean([x for v in per.values() for x in v]))
        assert m["n_images"] == 12  # one crop per case (the 4 images, each under 3 boxes)


def test_order_set_counts_a_tie_for_the_true_caption_and_user_jsonl(tmp_path, tiny_checkpoint):
    root = write_order(tmp_path / "order")
    m = run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=aro_coco_order", f"dataset.root={root}"))
    rows = __import__("pandas").read_csv(Path(m["run_dir"]) / "instances.csv")
    scores = [np.array(json.loads(s)) for s in rows.scores]
    assert scores[0][0, 0] == scores[0][0, 2]  # the unchanged perturbation ties with the true caption
    assert list(rows.text_correct) == [float(np.argmax(s[0]) == 0) for s in scores] and m["ties"] == "first"
    path = write_user_jsonl(tmp_path / "mine")
    u = run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=caption_selection", f"dataset.path={path}"))
    rows = __import__("pandas").read_csv(Path(u["run_dir"]) / "instances.csv")
    s = [np.array(json.loads(x)) for x in rows.scores]
    assert rows.text_correct[0] == float(s[0][0, 1] > max(s[0][0, 0], s[0][0, 2]))
    assert np.isnan(rows.image_correct[0]) and rows.image_correct[2] == float(s[2][0, 0] > s[2][1, 0] and s[2][1, 1] > s[2][0, 1])
    assert u["n_instances"] == 3 and u["n_images"] == 3 and set(u["per_group"]) == {"a", "b"}


# ------------------------------------------------------------------------ bad input


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, tiny_checkpoint):
    root = write_sugar_crepe(tmp_path / "sc", per_subset=2)
    results = tmp_path / "results"

    def fails(pattern, *overrides):
        with pytest.raises(DatasetError, match=pattern) as e:
            run_compositionality(ccfg(tmp_path, tiny_checkpoint, *overrides))
        assert "\n" not in str(e.value)

    first = sorted((root / "val2017").iterdir())[0]
    first.rename(tmp_path / "moved.jpg")  # an annotation naming an image that is not there
    fails(r"images SugarCrepe's annotations names are not there \(first: .*val2017/000000000139.jpg\)", f"dataset.root={root}")
    (tmp_path / "moved.jpg").rename(first)
    ann = json.loads((root / "swap_att.json").read_text())
    key = next(iter(ann))
    ann[key]["negative_caption"] = ""  # an instance with one caption
    (root / "swap_att.json").write_text(json.dumps(ann))
    fails(rf"swap_att.json, id {key}: negative_caption is ''", f"dataset.root={root}")
    (root / "swap_att.json").write_bytes('{"1": {"filename": "x.jpg", "caption": "caf\u00e9"}}'.encode("latin-1"))
    fails(r"swap_att.json is not UTF-8 text", f"dataset.root={root}")
    (root / "swap_att.json").unlink()
    fails(r"SugarCrepe's swap_att annotation file .*swap_att.json is not there", f"dataset.root={root}")
    mine = write_user_jsonl(tmp_path / "mine")
    mine.write_text(json.dumps({"image": "img/0.png", "captions": ["only one"], "answer": 0}) + "\n")
    fails(r"mine.jsonl, line 1 has 1 caption\(s\): an instance needs the right caption and at least one wrong",
          "dataset=caption_selection", f"dataset.path={mine}")
    fails(r"not an image-caption selection set.*sugar_crepe", "dataset=cifar10")
    from zeroshot.commands.evaluate import evaluate

    with pytest.raises(DatasetError, match=r"image-caption selection set.*`zeroshot compositionality dataset=sugar_crepe`"):
        evaluate(ccfg(tmp_path, tiny_checkpoint, f"dataset.root={root}"))
    assert not results.exists() or not list(results.rglob("metrics.json"))
    from zeroshot.errors import ConfigError
    from zeroshot.settings import check_settings  # what the CLI's one dispatch checks before any work

    with pytest.raises(ConfigError, match=r"dataset.ties='last' is not a choice: strict, first"):
        check_settings(ccfg(tmp_path, tiny_checkpoint, f"dataset.path={mine}", "dataset=caption_selection",
                                  "dataset.ties=last"))
    # an unreadable image with skip_bad_images=true: its instances leave, counted, and the run is not comparable
    write_user_jsonl(tmp_path / "mine")
    (tmp_path / "mine" / "img" / "2.png").write_bytes(b"not a png")
    m = run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=caption_selection", f"dataset.path={mine}",
                                  "skip_bad_images=true"))
    assert m["instances_dropped"] == 1 and m["n_instances"] == 2 and m["skipped_images"] == 1 and not m["comparable"]


@pytest.mark.cli
def test_the_command_line_runs_it_and_names_a_missing_image(tmp_path, tiny_checkpoint):
    import subprocess
    import sys

    root = write_sugar_crepe(tmp_path / "sc", per_subset=1)
    repo = Path(__file__).resolve().parents[1]
    common = [sys.executable, "-m", "zeroshot", "compositionality", f"model.checkpoint={tiny_checkpoint}",
              f"dataset.root={root}", "num_workers=0", "progress=false", f"results_dir={tmp_path / 'r'}",
              f"cache_dir={tmp_path / 'c'}"]
    ok = subprocess.run(common, capture_output=True, text=True, cwd=repo, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    run = next((tmp_path / "r").rglob("metrics.json")).parent
    assert (run / "per_group.png").stat().st_size > 0 and "replace" in ok.stdout
    sorted((root / "val2017").iterdir())[0].unlink()
    bad = subprocess.run(common, capture_output=True, text=True, cwd=repo, timeout=300)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert bad.stderr.startswith("zeroshot compositionality: error:") and "are not there" in bad.stderr


# ------------------------------------------------------------------------ report and compare


@pytest.fixture
def tiny_rn_checkpoint(tmp_path, tiny_rn):
    from conftest import save_openai_archive

    return save_openai_archive(tiny_rn, tmp_path / "tiny-rn.pt")


def test_report_table_and_compare_pair_per_instance(tmp_path, tiny_checkpoint, tiny_rn_checkpoint, monkeypatch):
    from zeroshot.commands.compare import compare
    from zeroshot.metrics.paired import mcnemar_exact
    from zeroshot.report import compositionality as view
    from zeroshot.report.build import build_report

    rows = winoground_rows(n=8)
    root = write_winoground_parquet(tmp_path / "wg", rows)
    a = run_compositionality(ccfg(tmp_path, tiny_checkpoint, "dataset=winoground", f"dataset.root={root}"))
    b = run_compositionality(ccfg(tmp_path, tiny_rn_checkpoint, "dataset=winoground", f"dataset.root={root}"))
    results = tmp_path / "results"
    # a published number shows only for a known release on the full set: these runs are neither
    fake = tmp_path / "published.csv"
    fake.write_text("source,release,dataset,metric,value\ntest,ViT-B-32/openai,winoground,group_score,8.0\n")
    monkeypatch.setattr(view, "PUBLISHED_COMPOSITIONALITY", fake)
    rcfg = make_cfg("report", f"inputs=[{results}]", f"output_dir={tmp_path / 'reports'}")
    ccfg_ = make_cfg("compare", f"inputs=[{results}]", f"output_dir={tmp_path / 'compare'}", "compare.n_boot=200")
    out = build_report(rcfg)
    assert {r["model"] for r in out["compositionality"]} == {a["model"], b["model"]}
    assert all(r["published_note"] == "weights are not a published release" for r in out["compositionality"])
    md = (Path(out["report_dir"]) / "report.md").read_text()
    assert "## Compositionality (image-caption selection)" in md and "## Compositionality: paired per instance" in md
    got = compare(ccfg_)
    (row,) = got["compositionality"]
    za, zb = (np.load(Path(m["run_dir"]) / "outcomes.npz") for m in (a, b))
    ra, rb = za["group"] > 0.5, zb["group"] > 0.5  # both runs list the instances in the same order here
    if row["model_a"] != a["model"]:
        ra, rb = rb, ra
    assert row["outcome"] == "group" and row["n_instances"] == 8
    assert (row["only_a"], row["only_b"]) == (int(np.sum(ra & ~rb)), int(np.sum(~ra & rb)))
    assert row["mcnemar_p"] == mcnemar_exact(row["only_a"], row["only_b"]) and row["diff"] == pytest.approx(ra.mean() - rb.mean())
    assert (Path(got["compare_dir"]) / "compare_compositionality.csv").is_file()


@pytest.mark.cli
@pytest.mark.dist
def test_two_ranks_equal_one_process(tmp_path, tiny_checkpoint):
    """torchrun: images and captions split across two ranks, rank 0 scores; every outcome as in one process."""
    from conftest import one_and_two_ranks

    root = write_winoground_parquet(tmp_path / "wg", winoground_rows(n=5))
    common = [f"model.checkpoint={tiny_checkpoint}", "dataset=winoground", f"dataset.root={root}", "num_workers=0",
              "progress=false", "batch_size=2", "chunk_size=4", "figures=false"]
    m1, m2, d1, d2 = one_and_two_ranks("compositionality", common, tmp_path)
    assert m1["world_size"] == 1 and m2["world_size"] == 2 and m1["n_instances"] == m2["n_instances"] == 5
    z1, z2 = np.load(d1 / "outcomes.npz"), np.load(d2 / "outcomes.npz")
    for key in ("text", "image", "group"):
        assert (z1[key] == z2[key]).all(), key
    assert len(list((tmp_path / "cache" / "image_features").rglob("chunk_*.pt"))) >= 2  # each rank cached its share


def test_suite_jobs_run_the_pairs_dataset(tmp_path):
    """A suite job composes its command's config with the pair's `override /dataset`: that dataset must win over
    the command config's own default (it did not for retrieval.yaml's `override dataset: flickr30k`)."""
    from zeroshot.__main__ import COMMANDS
    from zeroshot.suite import JOB_COMMANDS, write_pair_group

    names = write_pair_group(tmp_path, [("vit_b32", "winoground"), ("vit_b32", "mscoco")])
    for task, dataset, name in (("compositionality", "winoground", names[0]), ("retrieval", "mscoco", names[1])):
        config = COMMANDS[JOB_COMMANDS[task]][0]
        c = make_cfg(config, f"+pair={name}", f"hydra.searchpath=[file://{tmp_path}]")
        assert c.dataset.name == dataset, (task, config)
