"""Suites as Hydra multiruns (the basic and joblib launchers), the pairs they skip and why, and the report's
cross-dataset views: open_clip's 35-dataset average and the ImageNet robustness table."""
from pathlib import Path

import pandas as pd
import pytest

from zeroshot.report.published import PUBLISHED
from zeroshot.commands.report import report
from zeroshot.report.build import build_report
from conftest import make_cfg
from datagen import write_idx_split
from test_report import fixture_run, report_cfg


def suite_cfg(tmp_path, checkpoint, *overrides):
    return make_cfg("report", f"suite_results_dir={tmp_path / 'suites'}", f"output_dir={tmp_path / 'reports'}",
                    f"eval_overrides=['model.checkpoint={checkpoint}','data_dir={tmp_path / 'data'}','cache_dir={tmp_path / 'cache'}',"
                    "'num_workers=0','progress=false','prompts.templates=[\"a photo of a {}.\"]']", *overrides)


@pytest.mark.cli
def test_two_pair_suite_through_the_joblib_launcher(tmp_path, tiny_checkpoint):
    import hydra_plugins.hydra_joblib_launcher  # noqa: F401  (a declared test dependency: hydra-joblib-launcher)

    write_idx_split(tmp_path / "data" / "mnist", 12, "test")
    write_idx_split(tmp_path / "data" / "fashion_mnist", 10, "test", name="FashionMNIST")
    out = report(suite_cfg(tmp_path, tiny_checkpoint, "suite=clip_paper", "suite.models=[default]",
                                 "suite.datasets=[mnist,fashion_mnist]", "launcher=joblib",
                                 "launcher_overrides=['hydra.launcher.n_jobs=2']"))
    table = pd.read_csv(Path(out["report_dir"]) / "report.csv")
    assert sorted(table.dataset) == ["fashion_mnist", "mnist"] and out["not_run"] == []
    assert sorted(table.n_images) == [10, 12]
    assert (tmp_path / "suites" / "clip_paper" / "suite_status.json").is_file()


@pytest.mark.cli
def test_openclip_35_suite_runs_what_is_there_and_says_why_not(tmp_path, tiny_checkpoint):
    write_idx_split(tmp_path / "data" / "mnist", 12, "test")
    out = report(suite_cfg(tmp_path, tiny_checkpoint, "suite=openclip_35", "suite.models=[default]"))
    table = pd.read_csv(Path(out["report_dir"]) / "report.csv")
    assert list(table.dataset) == ["mnist"]
    not_run = {n["dataset"]: n["reason"] for n in out["not_run"]}
    assert len(not_run) == 34 and "mnist" not in not_run
    assert "hf-hub:djghosh/wds_wilds-iwildcam_test" in not_run["iwildcam"]  # the reason names the way to get it
    md = (Path(out["report_dir"]) / "report.md").read_text()
    assert "## Not run" in md and "| default | imagenet |" in md


def test_35_dataset_average_next_to_the_published_one(tmp_path):
    root = tmp_path / "results"
    fixture_run(root, "ViT-B-32/openai", "cifar10", 0.90, "2026-01-01_00-00-00")
    fixture_run(root, "ViT-B-32/openai", "oxford_pets", 0.80, "2026-01-01_00-00-00", mpcr=0.86)
    fixture_run(root, "ViT-B-32/openai", "eurosat", 0.50, "2026-01-01_00-00-00")
    fixture_run(root, "ViT-B-32/openai", "eurosat", 0.40, "2026-01-01_00-00-01", split="all", n_images=27000,
                fingerprint="fp-eurosat-all")  # not comparable: left out of the average
    out = build_report(report_cfg(tmp_path, f"inputs=[{root}]"))
    avg = pd.read_csv(Path(out["report_dir"]) / "average_35.csv").iloc[0]
    pub = pd.read_csv(PUBLISHED)
    pub = pub[(pub.release == "ViT-B-32/openai") & (pub.source == "open_clip")].set_index("dataset").value
    assert avg.datasets == 3 and avg.average == pytest.approx((90 + 86 + 50) / 3)
    assert avg.published_same_datasets == pytest.approx((pub["cifar10"] + pub["oxford_pets"] + pub["eurosat"]) / 3)
    assert avg.published_average_35 == pytest.approx(pub["average_35"])
    assert "## open_clip's 35 datasets: average" in (Path(out["report_dir"]) / "report.md").read_text()


def test_robustness_view_averages_the_shifts(tmp_path):
    root = tmp_path / "results"
    for dataset, top1 in (("imagenet", 0.63), ("imagenetv2", 0.55), ("imagenet_r", 0.69), ("imagenet_o", 0.47)):
        fixture_run(root, "ViT-B-32/openai", dataset, top1, "2026-01-01_00-00-00")
    out = build_report(report_cfg(tmp_path, f"inputs=[{root}]"))
    r = pd.read_csv(Path(out["report_dir"]) / "robustness.csv").iloc[0]
    assert r.imagenet == pytest.approx(63) and r.shifts_run == 2 and r.shift_average == pytest.approx((55 + 69) / 2)
    pub = pd.read_csv(PUBLISHED)
    pub = pub[(pub.release == "ViT-B-32/openai") & (pub.source == "open_clip")].set_index("dataset").value
    assert r.published_shift_average == pytest.approx((pub["imagenetv2"] + pub["imagenet_r"]) / 2)
    assert (Path(out["report_dir"]) / "robustness.png").stat().st_size > 0
