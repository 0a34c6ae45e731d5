"""logger=mlflow|tensorboard|wandb|csv: each finished run, read back with the tracker's own reader, holds the run's
identity, metrics equal to metrics.json and its files; a tracker that fails only warns; results/ never changes."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUIET, REPO, make_cfg
from datagen import write_imagefolder
from zeroshot import trackers
from zeroshot.commands.evaluate import evaluate
from zeroshot.errors import ConfigError

IDENTITY = ("model", "checkpoint_sha256", "dataset_fingerprint", "split", "prompts_hash")


def cfg(tmp_path, checkpoint, *overrides, config="eval"):
    return make_cfg(config, *QUIET, "batch_size=4", "dataset=imagefolder", f"dataset.root={tmp_path / 'pets'}",
                    *overrides, tmp_path=tmp_path, checkpoint=checkpoint)


@pytest.fixture
def pets(tmp_path):
    return write_imagefolder(tmp_path / "pets", ["cat", "dog", "fox"], per_class=2)


def numbers(m: dict) -> dict:
    """What a tracker must hold of a record: its top-level numbers, and calibration's as calibration/<key>."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    out = {k: float(v) for k, v in m.items() if number(v) and k not in trackers.IDENTITY}
    return out | {f"calibration/{k}": float(v) for k, v in (m.get("calibration") or {}).items() if number(v)}


def record(run: dict) -> dict:
    return json.loads((Path(run["run_dir"]) / "metrics.json").read_text())


@pytest.mark.cli
def test_mlflow_multirun_reads_back_with_search_runs(tmp_path, tiny_checkpoint, pets):
    """`zeroshot eval -m prompts=simple,classname logger=mlflow`: each job its own MLflow run, in one experiment."""
    import mlflow

    from zeroshot.report.runs import load_runs

    results = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "zeroshot", "eval", "-m", "prompts=simple,classname", "logger=mlflow",
                        f"model.checkpoint={tiny_checkpoint}", "dataset=imagefolder", f"dataset.root={pets}",
                        f"results_dir={results}", f"cache_dir={tmp_path / 'cache'}", "num_workers=0", "progress=false"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-3000:]
    records = {json.loads(p.read_text())["prompts"]: p.parent for p in results.rglob("metrics.json")
               if "trackers" not in p.parts}
    assert sorted(records) == ["classname", "simple"]
    mlflow.set_tracking_uri(f"sqlite:///{results / 'trackers' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["zeroshot"])
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    for row in runs.to_dict("records"):
        run_dir = records[row["params.prompts"]]
        m = json.loads((run_dir / "metrics.json").read_text())
        for key in IDENTITY:
            assert row[f"params.{key}"] == str(m[key]) and row[f"tags.zeroshot.{key}"] == str(m[key])
        logged = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.") and v == v}
        assert logged == numbers(m) and logged["top1"] == m["top1"]
        assert row["tags.mlflow.runName"] == run_dir.relative_to(results).as_posix()
        files = {f.path for f in mlflow.MlflowClient().list_artifacts(row["run_id"])}
        assert {"metrics.json", "config.yaml", "per_class.csv", "confusion_matrix.png", "per_class_accuracy.png"} <= files
        copy = mlflow.artifacts.download_artifacts(run_id=row["run_id"], artifact_path="metrics.json",
                                                   dst_path=str(tmp_path / row["run_id"]))
        assert json.loads(Path(copy).read_text()) == m
    assert len(load_runs([results])) == 2  # the store's copies of metrics.json are not runs


def test_tensorboard_event_files_parse(tmp_path, tiny_checkpoint, pets):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = evaluate(cfg(tmp_path, tiny_checkpoint, "logger=tensorboard"))
    m = record(run)
    folder = tmp_path / "results" / "trackers" / "tensorboard" / Path(run["run_dir"]).relative_to(tmp_path / "results")
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert set(numbers(m)) <= set(tags["scalars"])
    assert events.Scalars("top1")[0].value == pytest.approx(m["top1"], abs=1e-6)
    assert {"confusion_matrix", "per_class_accuracy"} <= set(tags["images"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    identity = events.Tensors("identity/text_summary")[0].tensor_proto.string_val[0].decode()
    assert all(str(m[k]) in identity for k in IDENTITY)


def test_wandb_offline_writes_its_run_folder(tmp_path, tiny_checkpoint, pets, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = evaluate(cfg(tmp_path, tiny_checkpoint, "logger=wandb", "figures=false"))
    folders = list((tmp_path / "results" / "trackers" / "wandb").glob("offline-run-*"))
    assert len(folders) == 1
    m = record(run)
    assert json.loads((folders[0] / "files" / "metrics.json").read_text()) == m  # kept for `wandb sync`
    data = next(folders[0].glob("run-*.wandb")).read_bytes()  # the run's records: config and logged values
    assert m["checkpoint_sha256"].encode() in data and json.dumps(m["top1"]).encode() in data


def test_csv_and_a_failing_tracker(tmp_path, tiny_checkpoint, pets, caplog):
    import csv

    run = evaluate(cfg(tmp_path, tiny_checkpoint, "logger=csv", "figures=false"))
    folder = tmp_path / "results" / "trackers" / "csv" / Path(run["run_dir"]).relative_to(tmp_path / "results")
    row = next(csv.DictReader((folder / "metrics.csv").open()))
    assert float(row["top1"]) == record(run)["top1"] and "checkpoint_sha256" in (folder / "hparams.yaml").read_text()
    # a prompt experiment logs its summary.json: the numbers one dict down too
    from zeroshot.commands.prompts import run_prompts

    summary = run_prompts(cfg(tmp_path, tiny_checkpoint, "logger=csv", "figures=false", "bootstrap=20",
                                  'prompts.templates=["a {}.","the {}."]', config="prompts"))
    folder = tmp_path / "results" / "trackers" / "csv" / Path(summary["run_dir"]).relative_to(tmp_path / "results")
    row = next(csv.DictReader((folder / "metrics.csv").open()))
    assert float(row["ensemble/top1"]) == summary["ensemble"]["top1"]
    # a store that cannot be made (its folder is a file): one warning, the run stands
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="zeroshot"):
        caplog.handler.setLevel(logging.WARNING)
        logging.getLogger("zeroshot").addHandler(caplog.handler)
        try:
            ok = evaluate(cfg(tmp_path, tiny_checkpoint, "logger=mlflow", "figures=false",
                              f"logger.mlflow.tracking_uri={blocker}/mlflow.db"))
        finally:
            logging.getLogger("zeroshot").removeHandler(caplog.handler)
    warned = [r.getMessage() for r in caplog.records if "logger=mlflow" in r.getMessage()]
    assert len(warned) == 1 and "was not logged" in warned[0] and ok["run_dir"] in warned[0]
    assert (Path(ok["run_dir"]) / "metrics.json").is_file()


def test_wandb_without_credentials_warns_and_never_prompts(tmp_path, tiny_checkpoint, pets, monkeypatch, caplog):
    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no W&B settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    logging.getLogger("zeroshot").addHandler(caplog.handler)
    try:
        run = evaluate(cfg(tmp_path, tiny_checkpoint, "logger=wandb", "figures=false"))
    finally:
        logging.getLogger("zeroshot").removeHandler(caplog.handler)
    warned = [r.getMessage() for r in caplog.records if "logger=wandb" in r.getMessage()]
    assert len(warned) == 1 and "no W&B credentials" in warned[0] and (Path(run["run_dir"]) / "metrics.json").is_file()
    assert trackers.mlflow_name("text_retrieval_recall@5") == "text_retrieval_recall_at_5"


def test_a_tracker_not_installed_names_its_extra(tmp_path, tiny_checkpoint, pets, monkeypatch):
    monkeypatch.setitem(trackers.PACKAGES, "wandb", ("zeroshot_no_such_package", "wandb"))
    with pytest.raises(ConfigError, match=r'pip install "zeroshot\[wandb\]"'):
        evaluate(cfg(tmp_path, tiny_checkpoint, "logger=wandb"))
    assert not (tmp_path / "results").exists()  # checked before any work
