"""The run record: one RunRecord per metrics.json (written as it always was, read back with OLD_RUNS' readings
for what an old run lacks), and one run_directory that every command writes through: fresh, metrics.json last,
nothing left behind when the command fails after its directory exists."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from compositionality_data import write_sugar_crepe
from conftest import REPO, eval_config
from datagen import write_idx_split, write_imagefolder
from retrieval_data import write_captioned_images, write_karpathy
from zeroshot import record as record_module
from zeroshot import runs as runs_module
from zeroshot.record import run_directory
from zeroshot.runs import IDENTITY_KEYS, OLD_RUNS, RunRecord


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# ------------------------------------------------------------------------ run_directory on its own

def test_run_directory_is_fresh_writes_the_record_last_and_removes_a_failed_run(tmp_path):
    with run_directory(tmp_path) as a:
        (a.path / "x.csv").write_text("1")
        assert not (a.path / "metrics.json").exists()  # written when the block ends, after every other file
        a.record = RunRecord("retrieval", {"r": 1.0}, {"model": "m"}, {"timestamp": a.path.name})
    with run_directory(tmp_path) as b:
        b.record = RunRecord("eval", {"top1": 0.5}, {"model": "m"})
    assert a.path != b.path and a.path.parent == b.path.parent == tmp_path  # never an earlier run's directory
    assert json.loads((a.path / "metrics.json").read_text()) == {"kind": "retrieval", "r": 1.0, "model": "m",
                                                                  "timestamp": a.path.name}
    assert json.loads((b.path / "metrics.json").read_text()) == {"top1": 0.5, "model": "m"}  # eval: no kind, as ever

    with pytest.raises(KeyError, match="boom"):
        with run_directory(tmp_path) as c:
            (c.path / "half.csv").write_text("1")
            raise KeyError("boom")
    assert not c.path.exists()
    with pytest.raises(RuntimeError, match="without a record"):  # a command that forgets its record is a bug
        with run_directory(tmp_path) as d:
            pass
    assert not d.path.exists()
    with run_directory(tmp_path, record=False) as e:  # a report's folder: outputs, no metrics.json
        (e.path / "report.md").write_text("#")
    assert sorted(p.name for p in e.path.iterdir()) == ["report.md"]


def test_metrics_json_is_written_once_in_zeroshot():
    hits = [p for p in (REPO / "zeroshot").rglob("*.py") if 'write_json(' in p.read_text()
            and '"metrics.json"' in "".join(line for line in p.read_text().splitlines() if "write_json(" in line)]
    assert [p.name for p in hits] == ["record.py"]
    text = (REPO / "zeroshot" / "record.py").read_text()
    assert sum('"metrics.json"' in line for line in text.splitlines() if "write_json(" in line) == 1


# ------------------------------------------------------------------------ reading old runs

def test_an_old_run_reads_as_old_runs_says_and_is_said_once(tmp_path, capsys):
    run = tmp_path / "cifar10" / "m" / "p" / "2025-01-01_00-00-00"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"top1": 0.5, "model": "m", "dataset": "cifar10", "n_images": 10}))
    runs_module._said.clear()
    r = RunRecord.from_json(run / "metrics.json")
    assert r.kind == "eval" and r.run_dir == run
    assert r.get("split") == "test" and r.get("dataset_fingerprint") == "cifar10:10"
    assert r.get("timestamp") == run.name and r.get("prompts_hash") == "" and r.get("main_metric") == 0.5
    assert r.get("not_comparable_reason") == "run recorded no benchmark" and r.get("comparable") is False
    assert r.get("backend") is None  # not in OLD_RUNS: unknown, never a guess
    r.get("split")
    said = [m for m in capsys.readouterr().err.splitlines() if "runs written before" in m]  # the zeroshot logger
    assert len([m for m in said if "'split'" in m]) == 1  # once per field
    assert {k for k in OLD_RUNS} <= set(IDENTITY_KEYS) | {"timestamp", "metric", "main_metric"}
    with pytest.raises(KeyError):
        r["backend"]
    (run / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        RunRecord.from_json(run / "metrics.json")


# ------------------------------------------------------------------------ every command: record, and no half-written run

def _disk_full(*_args, **_kwargs):
    raise OSError(28, "No space left on device")


def test_eval_record_round_trips_and_a_failure_leaves_no_run(tmp_path, tiny_checkpoint, monkeypatch):
    from zeroshot.commands import evaluate as ev

    root = write_imagefolder(tmp_path / "f", ["cat", "dog"], per_class=2)
    cfg = eval_config(tmp_path, tiny_checkpoint, "dataset=imagefolder", f"dataset.root={root}")
    m = ev.evaluate(cfg)
    written = json.loads((Path(m["run_dir"]) / "metrics.json").read_text())
    r = RunRecord.from_json(Path(m["run_dir"]) / "metrics.json")
    assert "kind" not in written and r.kind == "eval"
    assert r.to_json() == written and list(r.to_json()) == list(written)  # same keys, values and order
    assert list(r.identity) == list(IDENTITY_KEYS)  # run_record writes exactly the identity the record knows
    assert {k: v for k, v in m.items() if k != "run_dir"} == written

    results = tmp_path / "results"
    before = set(_files(results))
    monkeypatch.setattr(record_module, "write_json", _disk_full)  # the very last write fails
    with pytest.raises(OSError, match="No space"):
        ev.evaluate(cfg)
    monkeypatch.undo()
    monkeypatch.setattr(ev, "recorded_config", lambda *_: 1 / 0)  # or one in the middle, after the CSVs
    with pytest.raises(ZeroDivisionError):
        ev.evaluate(cfg)
    assert set(_files(results)) == before
    assert list(Path(m["run_dir"]).parent.iterdir()) == [Path(m["run_dir"])]  # the complete run, nothing beside it


def fails_then_runs(command, cfg, results: Path, monkeypatch) -> RunRecord:
    """The command with its last write failing leaves nothing under `results`; run again, its record."""
    monkeypatch.setattr(record_module, "write_json", _disk_full)
    with pytest.raises(OSError, match="No space"):
        command(cfg)
    assert _files(results) == []
    monkeypatch.undo()
    return RunRecord.from_json(Path(command(cfg)["run_dir"]) / "metrics.json")


def test_retrieval_failure_leaves_no_run(tmp_path, tiny_checkpoint, monkeypatch):
    from zeroshot.commands.retrieval import run_retrieval

    captions = [[f"photo {i} of a {w}" for w in ("cat", "dog")] for i in range(4)]
    paths = write_captioned_images(tmp_path / "k" / "flickr30k-images", captions)
    write_karpathy(tmp_path / "k", "flickr30k-images", paths, captions)
    cfg = eval_config(tmp_path, tiny_checkpoint, "dataset=flickr30k", f"dataset.root={tmp_path / 'k'}", config="retrieval")
    r = fails_then_runs(run_retrieval, cfg, tmp_path / "results", monkeypatch)
    assert r.kind == "retrieval" and r["captions_hash"] == r["prompts_hash"] and "mean_recall@1" in r.results


def test_compositionality_failure_leaves_no_run(tmp_path, tiny_checkpoint, monkeypatch):
    from zeroshot.commands.compositionality import run_compositionality

    root = write_sugar_crepe(tmp_path / "sugar_crepe", per_subset=2)
    cfg = eval_config(tmp_path, tiny_checkpoint, f"dataset.root={root}", config="compositionality")
    r = fails_then_runs(run_compositionality, cfg, tmp_path / "results", monkeypatch)
    assert r.kind == "compositionality" and r["instances_hash"] == r["prompts_hash"]


def test_linear_probe_failure_leaves_no_run(tmp_path, tiny_checkpoint, monkeypatch):
    from zeroshot.commands.linear_probe import linear_probe

    root = tmp_path / "data" / "mnist"
    write_idx_split(root, 20, "train", seed=1, separable=True)
    write_idx_split(root, 10, "test", seed=2, separable=True)
    cfg = eval_config(tmp_path, tiny_checkpoint, "dataset=mnist", f"data_dir={tmp_path / 'data'}",
                      "dataset.download=false", "probe.c_values=[1.0]", config="linear_probe")
    r = fails_then_runs(linear_probe, cfg, tmp_path / "results", monkeypatch)  # probe_sweep.csv goes with its directory
    assert r.kind == "linear_probe" and r["prompts"] == "" and (r.run_dir / "probe_sweep.csv").exists()
