"""Every number attributable and comparable: identity from the weights, cache keys that cannot go stale,
report rows keyed by what produced them, clean errors, and a package that installs as a wheel."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from zeroshot.errors import ArchitectureError
from zeroshot.commands.evaluate import evaluate
from zeroshot.report.build import build_report
from conftest import QUIET, REPO, TINY_RN, cli, make_cfg, random_model, save_openai_archive
from datagen import write_imagefolder


def cfg(tmp_path, *overrides, config="eval"):
    return make_cfg(config, *QUIET, "batch_size=4", *overrides, tmp_path=tmp_path)


@pytest.fixture(scope="module")
def tiny_rn_checkpoint(tmp_path_factory):
    return save_openai_archive(random_model(TINY_RN, seed=1), tmp_path_factory.mktemp("rn") / "tiny-rn.pt")


# ------------------------------------------------------------------ identity comes from the weights

def test_checkpoint_alone_is_labelled_by_the_checkpoint(tmp_path, tiny_rn_checkpoint):
    folder = write_imagefolder(tmp_path / "imgs", ["ant", "bee"], per_class=2)
    m = evaluate(cfg(tmp_path, f"model.checkpoint={tiny_rn_checkpoint}", "dataset=imagefolder", f"dataset.root={folder}"))
    assert m["model"] == "tiny-rn.pt" and m["architecture"].startswith("custom (ResNet")
    assert m["checkpoint_sha256"] in m["run_dir"].replace("/", " ").replace("_", " ") or m["checkpoint_sha256"][:8] in m["run_dir"]
    assert "ViT-B" not in json.dumps({k: m[k] for k in ("model", "architecture", "model_slug")})


def test_model_config_and_checkpoint_of_another_architecture(tmp_path, tiny_rn_checkpoint):
    folder = write_imagefolder(tmp_path / "imgs", ["ant", "bee"], per_class=1)
    with pytest.raises(ArchitectureError) as e:
        evaluate(cfg(tmp_path, "model=rn50", f"model.checkpoint={tiny_rn_checkpoint}", "dataset=imagefolder",
                     f"dataset.root={folder}"))
    assert "RN50" in str(e.value) and "tiny-rn.pt is a custom (ResNet" in str(e.value)
    assert not (tmp_path / "results").exists()


def test_a_known_release_is_recognised_by_sha256(tmp_path, tiny_checkpoint, monkeypatch):
    """A file whose sha256 is one of OpenAI's releases is that release, whatever its name on disk."""
    from zeroshot.models import loader as pretrained, registry as sources
    from zeroshot.files import sha256sum

    monkeypatch.setitem(sources.OPENAI_SHA256, sha256sum(tiny_checkpoint), "ViT-B-32/openai")
    monkeypatch.setattr(pretrained, "OPENAI_SHA256", sources.OPENAI_SHA256)
    model = pretrained.load_model(tiny_checkpoint)
    assert model.identity.release == "ViT-B-32/openai"
    assert model.identity.activation == "quick_gelu" and "sha256" in model.identity.activation_from


# ------------------------------------------------------------------ cache keys that cannot go stale

def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    return path


def test_relabelled_csv_gets_its_own_labels(tmp_path, tiny_checkpoint):
    """Two CSVs over the same images, same row count, different labels: the second must not reuse the first's."""
    write_imagefolder(tmp_path / "data" / "images", ["x"], per_class=20)
    images = [f"images/x/{i:03d}.png" for i in range(20)]
    first = _csv(tmp_path / "data" / "a.csv", [(p, "cat" if i % 2 else "dog") for i, p in enumerate(images)])
    second = _csv(tmp_path / "data" / "b.csv", [(p, "dog" if i % 3 else "cat") for i, p in enumerate(images)])
    common = [f"model.checkpoint={tiny_checkpoint}", "dataset=csv", "dataset.classnames=" + str(_names(tmp_path))]
    runs = [evaluate(cfg(tmp_path, *common, f"dataset.path={csv}")) for csv in (first, second)]
    for run, csv in zip(runs, (first, second)):
        preds = pd.read_csv(Path(run["run_dir"]) / "predictions.csv")
        truth = pd.read_csv(csv)
        assert (preds["label_name"].to_numpy() == truth["label"].to_numpy()).all()  # all 20 right, not 19 of 200
    assert runs[0]["dataset_fingerprint"] != runs[1]["dataset_fingerprint"]
    assert runs[1]["images_from_cache"] == 0


def _names(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("cat\ndog\n")
    return path


def test_moved_image_changes_the_key(tmp_path, tiny_checkpoint):
    root = write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=3)
    common = [f"model.checkpoint={tiny_checkpoint}", "dataset=imagefolder", f"dataset.root={root}"]
    first = evaluate(cfg(tmp_path, *common))
    (root / "cat" / "000.png").rename(root / "dog" / "100.png")  # same bytes, another class
    second = evaluate(cfg(tmp_path, *common))
    assert second["dataset_fingerprint"] != first["dataset_fingerprint"] and second["images_from_cache"] == 0
    preds = pd.read_csv(Path(second["run_dir"]) / "predictions.csv")
    assert preds.loc[preds.path.str.endswith("dog/100.png"), "label_name"].tolist() == ["dog"]
    third = evaluate(cfg(tmp_path, *common))  # nothing changed: everything from the cache
    assert third["images_from_cache"] == 6 and third["dataset_fingerprint"] == second["dataset_fingerprint"]
    os.utime(root / "dog" / "100.png", ns=(time.time_ns() + 10**9,) * 2)  # touched: a new key
    assert evaluate(cfg(tmp_path, *common))["images_from_cache"] == 0


def test_packed_files_are_hashed(tmp_path, tiny_checkpoint, monkeypatch):
    """A CIFAR batch file replaced in place (same name) changes the fingerprint."""
    import torchvision.datasets.cifar as tv_cifar

    from datagen import write_cifar

    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    write_cifar(tmp_path / "c", n=8, seed=0)
    common = [f"model.checkpoint={tiny_checkpoint}", "dataset=cifar10", f"dataset.root={tmp_path / 'c'}"]
    first = evaluate(cfg(tmp_path, *common))
    write_cifar(tmp_path / "c", n=8, seed=1)
    second = evaluate(cfg(tmp_path, *common))
    assert first["dataset_fingerprint_kind"] == "packed" and second["dataset_fingerprint"] != first["dataset_fingerprint"]
    assert second["images_from_cache"] == 0


def test_preprocessing_is_in_the_key(tmp_path, tiny_checkpoint):
    root = write_imagefolder(tmp_path / "imgs", ["cat", "dog"], per_class=2)
    common = [f"model.checkpoint={tiny_checkpoint}", "dataset=imagefolder", f"dataset.root={root}"]
    evaluate(cfg(tmp_path, *common))
    squash = evaluate(cfg(tmp_path, *common, "model.preprocess.resize_mode=squash"))
    assert squash["images_from_cache"] == 0 and squash["preprocess"]["resize_mode"] == "squash"
    assert evaluate(cfg(tmp_path, *common, "model.activation=gelu"))["images_from_cache"] == 0


# ------------------------------------------------------------------ report rows

def test_report_keeps_different_folders_and_prompts_apart(tmp_path, tiny_checkpoint):
    a = write_imagefolder(tmp_path / "set_a", ["cat", "dog"], per_class=2, seed=0)
    b = write_imagefolder(tmp_path / "set_b", ["cat", "dog"], per_class=2, seed=1)
    base = [f"model.checkpoint={tiny_checkpoint}", "dataset=imagefolder"]
    evaluate(cfg(tmp_path, *base, f"dataset.root={a}"))
    evaluate(cfg(tmp_path, *base, f"dataset.root={b}"))
    evaluate(cfg(tmp_path, *base, f"dataset.root={b}", 'prompts.templates=["a blurry photo of a {}."]'))
    rcfg = make_cfg("report", f"inputs=[{tmp_path / 'results'}]", f"output_dir={tmp_path / 'reports'}")
    out = build_report(rcfg)
    table = pd.read_csv(Path(out["report_dir"]) / "report.csv")
    assert out["rows"] == 3 and sorted(table.dataset_label) == ["imagefolder:set_a", "imagefolder:set_b", "imagefolder:set_b"]
    labels = set(table.prompts_label)
    assert len(labels) == 2 and all("#" in x for x in labels)


def test_published_number_only_for_the_canonical_split_and_count(tmp_path):
    from test_report import fixture_run, report_cfg

    root = tmp_path / "results"
    fixture_run(root, "ViT-B-32/openai", "cifar10", 0.90, "2026-01-01_00-00-00")
    fixture_run(root, "ViT-B-32/openai", "cifar10", 0.91, "2026-01-01_00-00-01", n_images=9000, fingerprint="fp-subset")
    fixture_run(root, "ViT-B-32/openai", "eurosat", 0.50, "2026-01-01_00-00-00", split="all", n_images=27000)
    fixture_run(root, "my-finetune", "cifar10", 0.95, "2026-01-01_00-00-00", sha="cd" * 32)
    table = pd.read_csv(Path(build_report(report_cfg(tmp_path, f"inputs=[{root}]"))["report_dir"]) / "report.csv")
    full = table[(table.dataset == "cifar10") & (table.n_images == 10000) & (table.model == "ViT-B-32/openai")].iloc[0]
    part = table[(table.dataset == "cifar10") & (table.n_images == 9000)].iloc[0]
    euro = table[table.dataset == "eurosat"].iloc[0]
    mine = table[table.model == "my-finetune"].iloc[0]
    assert full.published == pytest.approx(91.3)
    assert pd.isna(part.published) and part.published_note == "not comparable: 9,000 of 10,000 images"
    assert pd.isna(euro.published) and euro.published_note.startswith("not comparable: split=all")
    assert pd.isna(mine.published)


# ------------------------------------------------------------------ clean errors

def _one_clean_line(r):
    err = r.stderr.strip()
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("args,expect", [
    (["eval", "dataset=imagefolder"], "dataset.root is required"),
    (["eval", "model=vit_huge"], "unknown model 'vit_huge'. Choices: "),
    (["eval", "dataset=cifar10,nope", "-m"], "unknown dataset 'nope'"),
    (["eval", "device=cuda", "dataset=imagefolder", "dataset.root=."], "CUDA is not available"),
    (["eval", "model.name=ViT-B-32/laion2b_s34b_b79", "dataset=imagefolder", "dataset.root=."], "Closest: ViT-B-32/laion2b_s34b_b79k"),
    (["report", "/nonexistent/results"], "does not exist"),
    (["prompts", "dataset=imagefolder", "dataset.root=/nonexistent"], "not found under /nonexistent"),
    (["linear-probe", "dataset=imagefolder", "dataset.root=."], "no 'train' split"),
])
@pytest.mark.cli
def test_input_errors_are_one_clean_line(args, expect, tmp_path):
    if args[1:2] == ["device=cuda"] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    err = _one_clean_line(cli(*args, f"cache_dir={tmp_path}", cwd=tmp_path) if args[0] != "report" else cli(*args))
    assert expect in err, err
    if "Choices" in expect:
        assert "vit_b32" in err and "rn50" in err


# ------------------------------------------------------------------ suites never download by surprise

def test_suite_does_not_download_unless_asked(tmp_path, tiny_checkpoint, monkeypatch):
    """Every pair is checked (and run) with dataset.download=false unless the report says download=true."""
    from zeroshot.data import readers as datasets
    from zeroshot.suite import check_pairs

    seen = []
    real = datasets.build_dataset
    monkeypatch.setattr(datasets, "build_dataset", lambda c, *a, **k: seen.append(bool(c.download)) or real(c, *a, **k))
    for flag, expected in (([], [False]), (["download=true"], [True])):
        seen.clear()
        # eurosat downloads through the Hugging Face Hub, which the tests keep offline (HF_HUB_OFFLINE=1)
        rcfg = make_cfg("report", "suite=clip_paper", "suite.models=[default]", "suite.datasets=[eurosat]",
                        f"suite_results_dir={tmp_path / 's'}", *flag,
                        f"eval_overrides=['model.checkpoint={tiny_checkpoint}','data_dir={tmp_path}']")
        runnable, skipped = check_pairs(rcfg)
        assert seen == expected and not runnable
        assert ("not found under" in skipped[0]["reason"]) == (not flag)  # without download: not on disk; with: the Hub, offline


# ------------------------------------------------------------------ the wheel

@pytest.mark.cli
@pytest.mark.wheel
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path, tiny_checkpoint):
    """pip wheel, install into a fresh target, then one eval and one report from a folder outside the checkout."""
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(dist)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(dist.glob("zeroshot-*.whl"))
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp_path / "elsewhere"
    images = write_imagefolder(work / "imgs", ["cat", "dog"], per_class=2)
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import zeroshot.paths as c; print(c.config_dir())"], capture_output=True,
                           text=True, cwd=work, env=env)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    run = subprocess.run([str(target / "bin" / "zeroshot"), "eval", "dataset=imagefolder", f"dataset.root={images}",
                          f"model.checkpoint={tiny_checkpoint}", "num_workers=0", "progress=false", f"cache_dir={work / 'cache'}"],
                         capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list((work / "results").rglob("metrics.json"))) == 1
    report = subprocess.run([sys.executable, "-m", "zeroshot", "report", "results"], capture_output=True, text=True,
                            cwd=work, env=env, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert list((work / "results" / "reports").rglob("report.md"))
