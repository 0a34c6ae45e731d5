"""Reading run records: every complete metrics.json under the inputs, one row per run, keyed by what the numbers
depend on (weights sha256, dataset fingerprint and split, prompts hash); repeats that disagree are noted.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from zeroshot.errors import ReportError
from zeroshot.metrics.classification import BENCHMARK_METRICS, CLASSIFICATION_METRICS
from zeroshot.paths import TRACKERS_DIR
from zeroshot.runs import RunRecord

REQUIRED = ("top1", "top5", "mean_per_class_recall", "model", "dataset", "prompts")


METRIC_COLUMNS = list(CLASSIFICATION_METRICS)


# A row is one set of weights on one set of images with one set of prompts: what the numbers depend on.
ROW_KEY = ["checkpoint_sha256", "dataset_fingerprint", "split", "prompts_hash"]


def record_paths(root: Path):
    """Every metrics.json under root, skipping trackers' copies of runs (logger=...)."""
    for path in sorted(root.rglob("metrics.json")) if root.exists() else []:
        if TRACKERS_DIR not in path.relative_to(root).parts[:-1]:
            yield path


def run_records(inputs, kind: str):
    """Each readable run record of this kind under the inputs; one that cannot be read is load_runs' to warn about."""
    for root in map(Path, inputs):
        for path in record_paths(root):
            try:
                r = RunRecord.from_json(path)
            except (ValueError, OSError):
                continue
            if r.kind == kind:
                yield r


def load_runs(inputs: list[str | Path]) -> pd.DataFrame:
    """One record per complete run (eval) or probe; a malformed metrics.json is skipped with a warning."""
    records = []
    for root in map(Path, inputs):
        if not root.exists():
            raise ReportError(f"Results directory {root} does not exist. Pass directories that hold runs (default: results/)")
        for path in record_paths(root):
            try:
                r = RunRecord.from_json(path)
                if r.kind in ("retrieval", "compositionality"):  # read by their own report views, into their own tables
                    continue
                needed = ("top1", "model", "dataset") if r.kind == "linear_probe" else REQUIRED
                missing = [k for k in needed if k not in r]
                if missing:
                    raise ValueError(f"missing {', '.join(missing)}")
                float(r["top1"])
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                warnings.warn(f"skipping {path}: not a complete metrics.json ({e})")
                continue
            records.append(table_row(r))
    if not records:
        raise ReportError(f"No runs found under {', '.join(map(str, inputs))} (no complete metrics.json). "
                          "Run `python -m zeroshot eval ...` first, or point the report at the directories that hold runs.")
    return pd.DataFrame(records)


def table_row(r: RunRecord) -> dict:
    """A classification run's (or probe's) row of the report's table; what an old run lacks reads as OLD_RUNS says."""
    versions = r.get("versions") or {}
    return {
        "kind": r.kind, "model": r["model"], "model_release": r.get("model_release"),
        "architecture": r.get("architecture"), "dataset": r["dataset"], "dataset_label": r.get("dataset_label"),
        "dataset_fingerprint": r.get("dataset_fingerprint"), "split": r.get("split"), "prompts": r.get("prompts"),
        "prompts_hash": r.get("prompts_hash"), "prompts_label": r.get("prompts_label"),
        **{k: r.get(k) for k in METRIC_COLUMNS}, **{k: r[k] for k in EXTRA_METRICS if k in r},
        "n_images": r.get("n_images"), "comparable": bool(r.get("comparable")),
        "not_comparable_reason": r.get("not_comparable_reason"),
        "benchmark_metric": (r.get("benchmark") or {}).get("metric"), "checkpoint_sha256": r.get("checkpoint_sha256"),
        "precision": r.get("precision"), "device": r.get("device"), "date": r.get("timestamp"),
        "version": versions.get("zeroshot"), "git_commit": (versions.get("git_commit") or "")[:10],
        "run_dir": str(r.run_dir), "language": r.get("language"), **class_prompt_fields(r),
    }


EXTRA_METRICS = BENCHMARK_METRICS

# The class-prompt protocol a run recorded (record.run_record's class_prompts), as columns `cp_<key>`; what the
# WaffleCLIP view matches to published protocols. A key the run did not record stays None, never a default.
CLASS_PROMPT_KEYS = ("kind", "seed", "aggregate", "descriptions_mode", "descriptor_pattern", "combine", "waffle",
                     "waffle_with_descriptions", "descriptions_sha256", "n_prompts")


def class_prompt_fields(m: RunRecord | dict) -> dict:
    """cp_* columns: cp_kind is "templates" where the run recorded class_prompts: null (templates only), None
    where it recorded no class_prompts at all (runs from before it was recorded); `templates` as JSON text."""
    cp = m.get("class_prompts")
    out = {f"cp_{k}": (cp or {}).get(k) for k in CLASS_PROMPT_KEYS}
    if "class_prompts" in m and cp is None:
        out["cp_kind"] = "templates"
    out["templates"] = json.dumps(m["templates"]) if isinstance(m.get("templates"), list) else None
    return out


def latest_per_row(runs: pd.DataFrame) -> pd.DataFrame:
    """The latest run of each row key (weights, images, split, prompts)."""
    return runs.sort_values("date", kind="stable").groupby(ROW_KEY, as_index=False).tail(1).copy()  # ties: input order


def reproducibility(runs: pd.DataFrame, tolerance: float) -> tuple[pd.DataFrame, list[str]]:
    """Keep the latest of repeated runs of one row key; note every repeat whose top-1 disagrees beyond `tolerance`."""
    notes = []
    evals = runs[runs.kind == "eval"].sort_values("date")
    for _, group in evals.groupby(ROW_KEY):
        if len(group) > 1 and group.top1.max() - group.top1.min() > tolerance:
            r = group.iloc[-1]
            notes.append(f"{r.model} / {r.dataset_label} / {r.prompts_label}: {len(group)} runs of the same weights "
                         f"(sha256 {r.checkpoint_sha256[:12]}), images and prompts disagree: top-1 from "
                         f"{100 * group.top1.min():.2f}% to {100 * group.top1.max():.2f}% ({', '.join(group.run_dir)})")
    latest = latest_per_row(evals)
    latest["n_runs"] = latest.set_index(ROW_KEY).index.map(evals.groupby(ROW_KEY).size()).to_numpy()
    return latest, notes
