"""Benchmark reports from fixture runs, the published comparison, suites and the linear probe."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from zeroshot.errors import DatasetError
from zeroshot.commands.linear_probe import linear_probe
from zeroshot.report.published import PUBLISHED
from zeroshot.errors import ReportError
from zeroshot.commands.report import report
from zeroshot.report.build import build_report
from conftest import QUIET, REPO, make_cfg
from datagen import write_idx_split


def _benchmarks() -> dict:
    """Each dataset config's `benchmark`, as a run records it."""
    import yaml

    out = {}
    for path in (REPO / "configs" / "dataset").glob("[!_]*.yaml"):  # _x.yaml: a base
        bench = yaml.safe_load(path.read_text()).get("benchmark")
        if bench:
            out[path.stem] = bench
    return out


BENCH = _benchmarks()


def fixture_run(root: Path, release: str, dataset: str, top1: float, stamp: str, mpcr=None, sha=None, n_images=None,
                split="test", fingerprint=None, prompts_hash=None, label=None) -> Path:
    """A metrics.json as `eval` writes it, for the report to read."""
    from zeroshot.record import comparability
    from omegaconf import OmegaConf

    sha = sha or {"ViT-B-32/openai": "40d36571" * 8, "RN50/openai": "afeb0e10" * 8}.get(release, "ab" * 32)
    bench = BENCH.get(dataset)
    n_images = n_images or (bench["n_images"] if bench else 100)
    comparable, why = comparability(OmegaConf.create({"dataset": {"benchmark": bench, "split": split}}), n_images, 0)
    run = root / dataset / release.replace("/", "_") / dataset / stamp
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "top1": top1, "top5": min(1.0, top1 + 0.1), "mean_per_class_recall": mpcr if mpcr is not None else top1 - 0.01,
        "n_images": n_images, "n_classes": 10, "n_templates": 18, "model": label or release, "model_release": release,
        "architecture": release.split("/")[0], "dataset": dataset, "dataset_label": dataset,
        "dataset_fingerprint": fingerprint or f"fp-{dataset}", "split": split, "benchmark": bench,
        "comparable": comparable, "not_comparable_reason": why,
        "prompts": dataset, "prompts_hash": prompts_hash or f"h-{dataset}", "prompts_label": f"{dataset}#{(prompts_hash or 'h')[:8]}",
        "precision": "fp32", "device": "cpu", "checkpoint_sha256": sha, "timestamp": stamp,
        "versions": {"zeroshot": "0.2.0", "git_commit": "0123456789abcdef"},
    }))
    return run


def report_cfg(tmp_path, *overrides):
    return make_cfg("report", f"output_dir={tmp_path / 'reports'}", *overrides)


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "results"
    fixture_run(root, "ViT-B-32/openai", "cifar10", 0.8983, "2026-01-01_00-00-00")
    fixture_run(root, "ViT-B-32/openai", "cifar10", 0.9010, "2026-01-02_00-00-00")  # a repeat that disagrees
    fixture_run(root, "ViT-B-32/openai", "oxford_pets", 0.80, "2026-01-01_00-00-00", mpcr=0.871)
    fixture_run(root, "RN50/openai", "cifar10", 0.7157, "2026-01-01_00-00-00")
    fixture_run(root, "RN50/openai", "oxford_pets", 0.60, "2026-01-01_00-00-00", mpcr=0.70)
    broken = root / "cifar10" / "broken" / "x" / "2026"
    broken.mkdir(parents=True)
    (broken / "metrics.json").write_text('{"top1": 0.5, "model": ')
    partial = root / "cifar10" / "partial" / "x" / "2026"
    partial.mkdir(parents=True)
    (partial / "metrics.json").write_text('{"top1": 0.5}')
    return root


def test_report_from_fixture_runs(tmp_path, runs, capsys):
    out = build_report(report_cfg(tmp_path, f"inputs=[{runs}]"))
    assert out["rows"] == 4 and out["skipped"] == 2
    report = Path(out["report_dir"])
    table = pd.read_csv(report / "report.csv")
    assert set(zip(table.model, table.dataset)) == {("ViT-B-32/openai", "cifar10"), ("ViT-B-32/openai", "oxford_pets"),
                                                    ("RN50/openai", "cifar10"), ("RN50/openai", "oxford_pets")}
    vit_c10 = table[(table.model == "ViT-B-32/openai") & (table.dataset == "cifar10")].iloc[0]
    assert vit_c10.top1 == pytest.approx(0.9010) and vit_c10.n_runs == 2  # latest of the two
    assert vit_c10.published == pytest.approx(91.3) and vit_c10.published_source == "clip_paper"
    assert vit_c10.delta == pytest.approx(90.10 - 91.3) and vit_c10.flag != "!"

    md = (report / "report.md").read_text()
    assert "## cifar10" in md and "## oxford_pets" in md
    assert "| ViT-B-32/openai | cifar10#h | **90.10** |" in md  # best per dataset in bold
    assert "| RN50/openai | cifar10#h | 71.57 |" in md
    assert "Reproducibility warnings" in md and "2 runs of the same weights" in md
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # heatmap + a bar chart per dataset, inlined
    for name in ("heatmap_top1.png", "bars_cifar10.png", "bars_oxford_pets.png"):
        assert (report / name).stat().st_size > 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err  # the table on stdout, the warnings through the zeroshot logger (stderr)
    assert "skipping" in captured.err and "broken" in printed and "partial" in printed


def test_published_comparison_uses_each_sources_metric(tmp_path, runs):
    table = pd.read_csv(Path(build_report(report_cfg(tmp_path, f"inputs=[{runs}]"))["report_dir"]) / "report.csv")
    pets = table[(table.model == "ViT-B-32/openai") & (table.dataset == "oxford_pets")].iloc[0]
    # open_clip reports Pets as mean per-class recall (87.0): compared with our 87.1 recall, not our 80.0 top-1
    assert pets.published_metric == "mean_per_class_recall" and pets.published == pytest.approx(87.0)
    assert pets.delta == pytest.approx(0.1, abs=1e-6) and pets.flag != "!"
    rn = table[(table.model == "RN50/openai") & (table.dataset == "cifar10")].iloc[0]
    assert rn.published_metric == "top1" and rn.published == pytest.approx(75.6)  # the paper first
    assert rn.flag == "!"  # 71.57 vs 75.6: beyond the 2-point threshold
    assert pets.benchmark_metric == "mean_per_class_recall"
    ref = pd.read_csv(PUBLISHED)
    assert set(ref[ref.metric == "mean_per_class_recall"].dataset) == {"oxford_pets", "flowers102", "caltech101", "fgvc_aircraft"}


def test_report_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="No runs found"):
        build_report(report_cfg(tmp_path, f"inputs=[{tmp_path / 'empty'}]"))
    with pytest.raises(ReportError, match="does not exist"):
        build_report(report_cfg(tmp_path, f"inputs=[{tmp_path / 'nope'}]"))


@pytest.mark.cli
def test_cli_report_takes_paths(tmp_path, runs):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "zeroshot", "report", str(runs), f"output_dir={tmp_path / 'cli'}"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "4 rows from 5 runs (2 files skipped)" in r.stdout
    assert (next((tmp_path / "cli").iterdir()) / "report.md").exists()


@pytest.mark.cli
def test_suite_runs_what_has_data_and_skips_the_rest(tmp_path, tiny_checkpoint):
    write_idx_split(tmp_path / "data" / "mnist", 12, "test")
    cfg = report_cfg(tmp_path, "suite=clip_paper", "suite.models=[default]", "suite.datasets=[mnist,cifar100]",
                     f"suite_results_dir={tmp_path / 'suites'}",
                     f"eval_overrides=['model.checkpoint={tiny_checkpoint}','data_dir={tmp_path / 'data'}','dataset.download=false',"
                     f"'cache_dir={tmp_path / 'cache'}','num_workers=0','progress=false']")
    out = report(cfg)
    table = pd.read_csv(Path(out["report_dir"]) / "report.csv")
    assert list(table.dataset) == ["mnist"]


def probe_cfg(tmp_path, checkpoint, *overrides):
    return make_cfg("linear_probe", "dataset=mnist", f"data_dir={tmp_path / 'data'}", "dataset.download=false",
                    f"results_dir={tmp_path / 'probe'}", f"cache_dir={tmp_path / 'cache'}", *QUIET, *overrides,
                    checkpoint=checkpoint)


def mnist_features(root, checkpoint, train: bool):
    """Features computed independently of the probe's pipeline: zeroshot.load + its preprocess, image by image."""
    import zeroshot
    from PIL import Image
    from torchvision.datasets import MNIST

    model, preprocess = zeroshot.load(checkpoint)
    ds = MNIST(str(root), train=train)
    x = torch.stack([preprocess(Image.fromarray(ds.data[i].numpy(), mode="L")) for i in range(len(ds))])
    with torch.no_grad():
        return model.encode_image(x).numpy(), ds.targets.numpy()


def test_linear_probe_matches_direct_sklearn_fit(tmp_path, tiny_checkpoint):
    root = tmp_path / "data" / "mnist"
    write_idx_split(root, 120, "train", seed=1, separable=True)
    write_idx_split(root, 40, "test", seed=2, separable=True)
    m = linear_probe(probe_cfg(tmp_path, tiny_checkpoint, "probe.c_values=[0.01,1.0,100.0]"))

    (x_tr, y_tr), (x_te, y_te) = mnist_features(root, tiny_checkpoint, True), mnist_features(root, tiny_checkpoint, False)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y_tr))
    val, fit = perm[:24], perm[24:]
    val_acc = {c: (LogisticRegression(C=c, max_iter=1000, random_state=0).fit(x_tr[fit], y_tr[fit]).predict(x_tr[val]) == y_tr[val]).mean()
               for c in (0.01, 1.0, 100.0)}
    best = max(val_acc, key=lambda c: (val_acc[c], -c))
    assert m["C"] == best
    direct = LogisticRegression(C=best, max_iter=1000, random_state=0).fit(x_tr, y_tr)
    assert m["top1"] == pytest.approx((direct.predict(x_te) == y_te).mean(), abs=1e-12)
    assert m["n_train"] == 120 and m["n_images"] == 40

    report = build_report(report_cfg(tmp_path, f"inputs=[{tmp_path / 'probe'}]"))
    table = pd.read_csv(Path(report["report_dir"]) / "report.csv")
    assert table.linear_probe.iloc[0] == pytest.approx(m["top1"])


def test_few_shot_probe_and_no_train_split(tmp_path, tiny_checkpoint):
    root = tmp_path / "data" / "mnist"
    write_idx_split(root, 100, "train", seed=1, separable=True)
    write_idx_split(root, 30, "test", seed=2, separable=True)
    m = linear_probe(probe_cfg(tmp_path, tiny_checkpoint, "probe.shots=4", "probe.seeds=[0,1]", "probe.c_values=[1.0]",
                               "probe.val_fraction=0.25"))
    assert m["shots"] == 4 and m["seeds"] == [0, 1]
    # the same few-shot protocol done by hand: per seed, the first 4 of each class in a seeded permutation,
    # one C, scored on the whole test set; the probe reports the mean over seeds
    (x_tr, y_tr), (x_te, y_te) = mnist_features(root, tiny_checkpoint, True), mnist_features(root, tiny_checkpoint, False)
    accs = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        idx = np.concatenate([rng.permutation(np.flatnonzero(y_tr == k))[:4] for k in range(10)])
        clf = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(x_tr[idx], y_tr[idx])
        accs.append((clf.predict(x_te) == y_te).mean())
    assert m["top1"] == pytest.approx(np.mean(accs), abs=1e-12) and m["top1_std"] == pytest.approx(np.std(accs), abs=1e-12)
    assert m["n_train_per_seed"] == [40, 40]
    with pytest.raises(DatasetError, match="no 'train' split"):
        linear_probe(probe_cfg(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={tmp_path}"))


def test_heatmap_has_a_row_per_system_as_the_tables():
    """One model's runs with two prompt sets are two rows of the heatmap, each with its own number."""
    from zeroshot.report.aggregates import heatmap_grid

    table = pd.DataFrame({"model": ["ViT-B/32", "ViT-B/32", "RN50"], "prompts_label": ["simple", "imagenet", "simple"],
                          "dataset_label": ["cifar10"] * 3, "top1": [0.5, 0.75, 0.25]})
    grid = heatmap_grid(table)
    assert grid["cifar10"].to_dict() == {"RN50 (simple)": 25.0, "ViT-B/32 (imagenet)": 75.0, "ViT-B/32 (simple)": 50.0}
