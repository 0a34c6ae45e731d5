"""Zero-shot image-text retrieval: recall against a brute-force computation and CLIP_benchmark's own code, on
data written in CLIP_benchmark's retrieval webdataset layout (by its converter) and in Karpathy's JSON layout."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zeroshot.errors import DatasetError
from zeroshot.commands.retrieval import run_retrieval
from zeroshot.metrics.retrieval import caption_table, retrieve
from conftest import QUIET, REPO, make_cfg, shared_path
from retrieval_data import write_captioned_images, write_karpathy, write_retrieval_wds

# 1 to 3 captions an image, and one long caption that only fits once cut at the context length
CAPTIONS = [[f"photo {i} of a {w}" for w in ("cat", "dog", "red car")[: 1 + i % 3]] for i in range(14)]
CAPTIONS[2].append("a very long caption " + "with many words " * 30)


def brute_force(image_feats, text_feats, text_image, ks=(1, 5, 10)) -> dict:
    """Recall@k by sorting every row of the full similarity matrix, the textbook way."""
    sim = F.normalize(image_feats.double(), dim=-1) @ F.normalize(text_feats.double(), dim=-1).T  # [N, T]
    n, out = len(image_feats), {}
    for k in ks:
        i2t = [bool(set(torch.argsort(sim[i], descending=True)[:k].tolist()) & {t for t in range(len(text_image)) if text_image[t] == i})
               for i in range(n)]
        t2i = [int(text_image[t]) in torch.argsort(sim[:, t], descending=True)[:k].tolist() for t in range(len(text_image))]
        out[f"text_retrieval_recall@{k}"], out[f"image_retrieval_recall@{k}"] = np.mean(i2t), np.mean(t2i)
    return out


def clip_benchmark_recalls(image_feats, text_feats, text_image, ks=(1, 5, 10)) -> dict:
    """CLIP_benchmark's own zeroshot_retrieval.evaluate on the same features: the "model" looks them up."""
    import clip_benchmark.metrics.zeroshot_retrieval as zsr  # a declared test dependency (clip-benchmark)
    captions = [[] for _ in range(len(image_feats))]
    for t, i in enumerate(text_image.tolist()):
        captions[i].append(t)

    class Lookup(torch.nn.Module):
        def encode_image(self, idx):
            return image_feats[idx]

        def encode_text(self, idx):
            return text_feats[idx]

    batches = [(torch.arange(a, min(a + 4, len(captions))), captions[a:a + 4]) for a in range(0, len(captions), 4)]
    return zsr.evaluate(Lookup(), batches, lambda ids: torch.tensor(ids), "cpu", amp=False, recall_k_list=list(ks))


def test_recall_equals_brute_force_and_clip_benchmark_on_random_features():
    g = torch.Generator().manual_seed(0)
    n = 40
    text_image = torch.cat([torch.arange(n), torch.randint(0, n, (90,), generator=g)])[torch.randperm(n + 90, generator=g)]
    images = torch.randn(n, 16, generator=g)
    texts = images[text_image] + 1.3 * torch.randn(len(text_image), 16, generator=g)  # noisy: recalls well inside (0, 1)
    for block in (7, 1000):  # blocks that do and do not divide the queries give the same answer
        ours = retrieve(images, texts, text_image, block=block).recalls()
        ref = brute_force(images, texts, text_image)
        cb = clip_benchmark_recalls(images, texts, text_image)
        assert 0.05 < ours["text_retrieval_recall@1"] < 0.95 and 0.05 < ours["image_retrieval_recall@1"] < 0.95
        for key, value in ref.items():
            assert ours[key] == pytest.approx(value, abs=1e-12), key
            assert ours[key] == pytest.approx(cb[key], abs=1e-6), key
        assert ours["mean_recall@1"] == pytest.approx((ref["text_retrieval_recall@1"] + ref["image_retrieval_recall@1"]) / 2)


def test_an_image_found_only_by_its_second_caption():
    e = torch.eye(4)
    images = e[:3]  # three images on three axes
    # image 0's first caption points at image 1; its second caption is image 0 itself
    texts = torch.stack([0.5 * e[1] + 0.3 * e[0] + 0.8 * e[3], e[0], e[1] + 0.5 * e[0], e[2] + 0.1 * e[0]])
    text_image = torch.tensor([0, 0, 1, 2])
    r = retrieve(images, texts, text_image)
    assert r.image_ranks.tolist() == [0, 0, 0]  # image 0 is found at 1, by caption 1 alone
    assert r.text_ranks.tolist() == [1, 0, 0, 0]  # caption 0 finds image 1 first
    m = r.recalls((1, 5))
    assert m["text_retrieval_recall@1"] == 1.0 and m["image_retrieval_recall@1"] == 0.75
    assert m == pytest.approx({k: v for k, v in brute_force(images, texts, text_image, (1, 5)).items()} | {"mean_recall@1": 0.875})
    # counting only each image's first caption (CLIP_benchmark #7) would miss image 0
    first_only = retrieve(images, texts[[0, 2, 3]], torch.tensor([0, 1, 2])).recalls((1,))
    assert first_only["text_retrieval_recall@1"] == pytest.approx(2 / 3)


def test_ties_are_broken_as_clip_benchmark_and_collapse_does_not_score_100():
    """Collapsed features (every score ties): CLIP_benchmark's torch.topk takes k of the N candidates, so recall@k is
    about k / N, never 100; every query is counted as tied at each k below the number of candidates."""
    n = 20
    same = torch.ones(n, 8)
    text_image = torch.arange(n).repeat_interleave(2)  # captions image by image, as the dataloaders give them
    r = retrieve(same, same[text_image], text_image)
    ours, cb = r.recalls(), clip_benchmark_recalls(same, same[text_image], text_image)
    for key, value in cb.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key  # its float32 mean
    assert ours["text_retrieval_recall@1"] < 0.2 and ours["image_retrieval_recall@5"] < 0.5
    ties = r.tie_counts()
    assert ties["text_retrieval_ties@1"] == n and ties["image_retrieval_ties@10"] == 2 * n


def test_tied_captions_give_clip_benchmarks_recall():
    """Identical captions (each class's images share one caption, as a classification webdataset turned retrieval
    set has; MSCOCO has duplicates too) tie exactly: recall follows CLIP_benchmark's zeroshot_retrieval.evaluate,
    where "a tie counts against the query" gave text-retrieval recall@5 = 0 against its 0.025."""
    g = torch.Generator().manual_seed(3)
    n_classes, per_class = 8, 5
    classes = torch.randn(n_classes, 16, generator=g)
    label = torch.arange(n_classes).repeat_interleave(per_class)
    images = classes[label] + 0.8 * torch.randn(len(label), 16, generator=g)
    text_image = torch.arange(len(label))
    texts = classes[label] + 0.0  # one caption per image, identical within a class: exact ties
    for block in (3, 1000):
        r = retrieve(images, texts, text_image, block=block)
        ours, cb = r.recalls(), clip_benchmark_recalls(images, texts, text_image)
        for key, value in cb.items():
            assert ours[key] == pytest.approx(value, abs=1e-6), key  # its float32 mean
    ties = r.tie_counts()
    assert ties["text_retrieval_ties@1"] > 0 and ties["image_retrieval_ties@1"] == 0
    # each image ties with its class's other 4 captions: "a tie counts against the query" (rank < 1) gave 0 at k=1
    assert (r.image_ranks < 1).sum() == 0 and ours["text_retrieval_recall@1"] > 0.1


def test_caption_table_and_bad_assignments():
    table = caption_table(torch.tensor([2, 0, 2, 1, 2]), 3)
    assert table.tolist() == [[1, -1, -1], [3, -1, -1], [0, 2, 4]]
    with pytest.raises(ValueError, match="image 1 has no caption"):
        caption_table(torch.tensor([0, 2]), 3)
    with pytest.raises(ValueError, match="image index"):
        retrieve(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 5]))


# ------------------------------------------------------------------------ end to end, real layouts

def rcfg(tmp_path, checkpoint, *overrides, config="retrieval"):
    return make_cfg(config, *QUIET, "batch_size=4", *overrides, tmp_path=tmp_path, checkpoint=checkpoint)


@pytest.fixture
def layouts(tmp_path):
    karpathy = tmp_path / "karpathy"
    paths = write_captioned_images(karpathy / "flickr30k-images", CAPTIONS)
    write_karpathy(karpathy, "flickr30k-images", paths, CAPTIONS)
    return write_retrieval_wds(tmp_path / "wds", paths, CAPTIONS, max_count=5), karpathy, paths


def direct_features(checkpoint, paths, captions):
    """Features computed outside the pipeline: zeroshot.load, its preprocess image by image, the tokenizer."""
    import zeroshot
    from PIL import Image

    model, preprocess = zeroshot.load(str(checkpoint))
    with torch.no_grad():
        images = torch.cat([model.encode_image(preprocess(Image.open(p)).unsqueeze(0)) for p in paths])
        texts = model.encode_text(zeroshot.tokenize([c for caps in captions for c in caps], truncate=True))
    return images, texts, torch.tensor([i for i, caps in enumerate(captions) for _ in caps])


def test_webdataset_recalls_equal_brute_force(tmp_path, tiny_checkpoint, layouts):
    shards, _, paths = layouts
    assert (shards / "test" / "nshards.txt").read_text().strip() == "3" and (shards / "dataset_type.txt").is_file()
    m = run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={shards}", "chunk_size=4"))
    ref = brute_force(*direct_features(tiny_checkpoint, paths, CAPTIONS))
    for key, value in ref.items():
        assert m[key] == pytest.approx(value, abs=1e-9), key
    assert m["main_metric"] == m["mean_recall@1"] == pytest.approx(
        (ref["text_retrieval_recall@1"] + ref["image_retrieval_recall@1"]) / 2)
    n_captions = sum(map(len, CAPTIONS))
    assert m["n_images"] == 14 and m["n_captions"] == n_captions and m["captions_per_image"] == [1, 2, 3, 4]
    assert m["kind"] == "retrieval" and m["metric"] == "mean_recall@1" and m["dataset_fingerprint_kind"] == "shards"
    assert not m["comparable"] and m["not_comparable_reason"] == "14 of 1,000 images"
    assert m["prompts_label"].startswith("captions#") and m["captions_hash"] == m["prompts_hash"]
    for key in ("checkpoint_sha256", "architecture", "activation", "preprocess", "dataset_fingerprint", "versions", "world_size"):
        assert key in m, key  # what a classification run records
    run = Path(m["run_dir"])
    ranks = np.load(run / "ranks.npz")
    assert (ranks["image_ranks"] < 1).mean() == pytest.approx(m["text_retrieval_recall@1"])
    t2i = __import__("pandas").read_csv(run / "text_to_image.csv")
    assert len(t2i) == n_captions and t2i.text[sum(map(len, CAPTIONS[:3]))] == CAPTIONS[3][0]  # captions in order, with their images
    # a second run reads every image from the cache and encodes no caption again
    again = run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={shards}", "chunk_size=4"))
    assert again["images_from_cache"] == 14 and again["mean_recall@1"] == m["mean_recall@1"]


def test_karpathy_json_gives_what_the_webdataset_gives(tmp_path, tiny_checkpoint, layouts):
    shards, karpathy, _ = layouts
    a = run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={shards}"))
    b = run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={karpathy}"))
    keys = [k for k in a if "recall" in k]
    assert len(keys) == 7 and {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert a["captions_hash"] == b["captions_hash"] and a["n_captions"] == b["n_captions"]  # train entries left out
    assert b["dataset_fingerprint_kind"] == "files+annotations" and a["dataset_fingerprint"] != b["dataset_fingerprint"]
    # another caption for one image is another caption set: another row, another fingerprint
    data = json.loads((karpathy / "dataset_flickr30k.json").read_text())
    data["images"][0]["sentences"].append({"raw": "one more"})
    (karpathy / "dataset_flickr30k.json").write_text(json.dumps(data))
    c = run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={karpathy}"))
    assert c["captions_hash"] != b["captions_hash"] and c["dataset_fingerprint"] != b["dataset_fingerprint"]


def test_mistakes_are_named(tmp_path, tiny_checkpoint, layouts):
    shards, karpathy, _ = layouts
    with pytest.raises(DatasetError, match=r"retrieval set.*zeroshot retrieval dataset=flickr30k.*flickr30k, mscoco"):
        from zeroshot.commands.evaluate import evaluate

        evaluate(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={shards}", config="eval"))
    with pytest.raises(DatasetError, match=r"not an image-text retrieval set.*flickr30k\|mscoco"):
        run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=cifar10"))
    with pytest.raises(DatasetError, match=r"no images in split 'val'.*test, train"):
        run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={karpathy}", "dataset.split=val"))
    with pytest.raises(DatasetError, match=r"not under .*dataset.images=FOLDER"):
        run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={karpathy}", "dataset.images=elsewhere"))
    with pytest.raises(DatasetError, match=r"neither a webdataset.*hf-hub:clip-benchmark/wds_flickr30k"):
        run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={tmp_path / 'none'}",
                           "dataset.download=false"))
    (shards / "dataset_type.txt").unlink()
    with pytest.raises(DatasetError, match="classification webdataset"):
        run_retrieval(rcfg(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={shards}"))


def test_benchmark_counts_match_datacomps_task_list():
    import yaml

    tasks = yaml.safe_load(shared_path("reference", "datacomp_tasklist.yml").read_text())
    for name, key in (("flickr30k", "retrieval/flickr_1k_test_image_text_retrieval"),
                      ("mscoco", "retrieval/mscoco_2014_5k_test_image_text_retrieval")):
        cfg = yaml.safe_load((REPO / "configs" / "dataset" / f"{name}.yaml").read_text())
        assert cfg["benchmark"]["n_images"] == tasks[key]["size"] and cfg["metric"] == tasks[key]["main_metric"]


# ------------------------------------------------------------------------ reports and the 38-task suite

def retrieval_fixture_run(root: Path, release: str, dataset: str, mean_r1: float, stamp: str, n_images: int, sha: str) -> Path:
    """A metrics.json as `zeroshot retrieval` writes it, for the report to read."""
    import yaml
    from omegaconf import OmegaConf

    from zeroshot.record import comparability

    bench = yaml.safe_load((REPO / "configs" / "dataset" / f"{dataset}.yaml").read_text())["benchmark"]
    comparable, why = comparability(OmegaConf.create({"dataset": {"benchmark": bench, "split": "test"}}), n_images, 0)
    run = root / dataset / release.replace("/", "_") / "captions" / stamp
    run.mkdir(parents=True)
    recalls = {f"{d}_retrieval_recall@{k}": min(1.0, mean_r1 + 0.1 * k) for d in ("text", "image") for k in (1, 5, 10)}
    recalls.update({"text_retrieval_recall@1": mean_r1 + 0.1, "image_retrieval_recall@1": mean_r1 - 0.1, "mean_recall@1": mean_r1})
    (run / "metrics.json").write_text(json.dumps({
        "kind": "retrieval", **recalls, "metric": "mean_recall@1", "main_metric": mean_r1, "model": release,
        "model_release": release, "architecture": release.split("/")[0], "dataset": dataset, "dataset_label": dataset,
        "dataset_fingerprint": f"fp-{dataset}-{n_images}", "split": "test", "benchmark": bench, "comparable": comparable,
        "not_comparable_reason": why, "prompts": "captions", "prompts_hash": "c" * 64, "captions_hash": "c" * 64,
        "prompts_label": "captions#cccccccc", "n_images": n_images, "n_captions": 5 * n_images, "checkpoint_sha256": sha,
        "timestamp": stamp}))
    return run


def test_report_has_a_retrieval_table_and_the_38_task_average(tmp_path):
    import pandas as pd

    from test_report import fixture_run, report_cfg
    from zeroshot.report.published import PUBLISHED
    from zeroshot.report.build import build_report
    from zeroshot.report.retrieval import PUBLISHED_RETRIEVAL

    root, sha = tmp_path / "results", "40d36571" * 8
    fixture_run(root, "ViT-B-32/openai", "cifar10", 0.90, "2026-01-01_00-00-00")
    retrieval_fixture_run(root, "ViT-B-32/openai", "flickr30k", 0.70, "2026-01-01_00-00-00", 1000, sha)
    retrieval_fixture_run(root, "ViT-B-32/openai", "mscoco", 0.40, "2026-01-01_00-00-00", 4999, sha)  # one image short
    out = build_report(report_cfg(tmp_path, f"inputs=[{root}]"))
    assert out["skipped"] == 0  # retrieval runs are not "incomplete classification runs"
    pub = pd.read_csv(PUBLISHED_RETRIEVAL)
    pub = pub[pub.release == "ViT-B-32/openai"].set_index(["dataset", "metric"]).value
    rows = {r["dataset"]: r for r in out["retrieval"]}
    assert rows["flickr30k"]["published"] == pub["flickr30k", "mean_recall@1"]
    assert rows["flickr30k"]["delta"] == pytest.approx(70 - pub["flickr30k", "mean_recall@1"])
    assert np.isnan(rows["mscoco"]["published"]) and rows["mscoco"]["published_note"] == "not comparable: 4,999 of 5,000 images"
    (avg,) = out["average_38"]
    cls = pd.read_csv(PUBLISHED)
    cifar = cls[(cls.release == "ViT-B-32/openai") & (cls.source == "open_clip") & (cls.dataset == "cifar10")].value.item()
    assert avg["tasks"] == 2 and avg["average"] == pytest.approx((90 + 70) / 2)  # mscoco is not comparable: left out
    assert avg["published_same_tasks"] == pytest.approx((cifar + pub["flickr30k", "mean_recall@1"]) / 2)
    assert avg["published_average_38"] == pub["average_38", "average"]
    not_run = avg["not_run"].split(", ")
    assert len(not_run) == 36 and "mscoco" in not_run and "cifar10" not in not_run and "misc/winogavil (not implemented)" in not_run
    md = (Path(out["report_dir"]) / "report.md").read_text()
    assert "## Image-text retrieval" in md and "## DataComp's 38 tasks: average" in md and "WinoGAViL is an association game" in md
    # a results folder of retrieval runs alone still makes a report
    only = build_report(report_cfg(tmp_path, f"inputs=[{root / 'flickr30k'}]"))
    assert len(only["retrieval"]) == 1 and (Path(only["report_dir"]) / "retrieval.csv").is_file()


@pytest.mark.cli
def test_datacomp_38_suite_lists_the_task_list_and_says_why_not(tmp_path, tiny_checkpoint, layouts):
    import yaml

    from test_suites import suite_cfg
    from datagen import write_idx_split
    from zeroshot.commands.report import report

    tasklist = yaml.safe_load(shared_path("reference", "datacomp_tasklist.yml").read_text())
    suite = yaml.safe_load((REPO / "configs" / "suite" / "datacomp_38.yaml").read_text())
    listed = [*suite["tasks"], *suite["not_implemented"]]
    assert len(listed) == len(set(listed)) == 38 and set(listed) | set(suite["not_in_average"]) == set(tasklist)
    assert all((REPO / "configs" / "dataset" / f"{d}.yaml").is_file() for d in suite["tasks"].values())

    shards, _, _ = layouts
    write_idx_split(tmp_path / "data" / "mnist", 12, "test")
    import shutil

    shutil.copytree(shards, tmp_path / "data" / "flickr30k")  # under data_dir, where the suite looks
    out = report(suite_cfg(tmp_path, tiny_checkpoint, "suite=datacomp_38", "suite.models=[default]"))
    not_run = {n["dataset"]: n["reason"] for n in out["not_run"]}
    assert len(not_run) == 36 and "mnist" not in not_run and "flickr30k" not in not_run
    assert not_run["misc/winogavil"].startswith("not implemented: WinoGAViL")
    assert "hf-hub:clip-benchmark/wds_mscoco_captions" in not_run["mscoco"]  # the reason names the way to get it
    assert [r["dataset"] for r in out["retrieval"]] == ["flickr30k"] and out["retrieval"][0]["n_images"] == 14
    assert out["average_38"] == []  # 12 and 14 images are no benchmark's count: nothing enters the published comparison


@pytest.mark.cli
@pytest.mark.dist
def test_two_ranks_equal_one_process(tmp_path, tiny_checkpoint, layouts):
    from conftest import one_and_two_ranks

    shards, _, _ = layouts
    common = [f"model.checkpoint={tiny_checkpoint}", "dataset=flickr30k", f"dataset.root={shards}", "num_workers=0",
              "progress=false", "batch_size=2", "chunk_size=4", "similarity_block=5"]
    m1, m2, d1, d2 = one_and_two_ranks("retrieval", common, tmp_path)
    assert m1["world_size"] == 1 and m2["world_size"] == 2 and m1["n_captions"] == m2["n_captions"]
    for key in [k for k in m1 if "recall" in k]:
        assert m2[key] == pytest.approx(m1[key], abs=1e-12), key
    r1, r2 = np.load(d1 / "ranks.npz"), np.load(d2 / "ranks.npz")
    assert (r1["image_ranks"] == r2["image_ranks"]).all() and (r1["text_ranks"] == r2["text_ranks"]).all()
    # each rank cached its share of the images: a single process now finds all 14
    chunks = list((tmp_path / "cache" / "image_features").rglob("chunk_*.pt"))
    assert len(chunks) == 4
