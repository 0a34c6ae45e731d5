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

REQUIRED = ("top1", "top5", "mean_per_class_recall", "model", "dataset", "prompts")


METRIC_COLUMNS = list(CLASSIFICATION_METRICS)


# A row is one set of weights on one set of images with one set of prompts: what the numbers depend on.
ROW_KEY = ["checkpoint_sha256", "dataset_fingerprint", "split", "prompts_hash"]


def run_records(inputs, kind: str):
    """(path, record) of each readable metrics.json of this kind under the inputs, skipping trackers' copies of runs;
    one that cannot be read is load_runs' to warn about."""
    for root in map(Path, inputs):
        for path in sorted(root.rglob("metrics.json")) if root.exists() else []:
            if TRACKERS_DIR in path.relative_to(root).parts[:-1]:  # a tracker's copy of a run (logger=...), not a run
                continue
            try:
                m = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
            if isinstance(m, dict) and m.get("kind") == kind:
                yield path, m


def load_runs(inputs: list[str | Path]) -> pd.DataFrame:
    """One record per complete run (eval) or probe; a malformed metrics.json is skipped with a warning."""
    records = []
    for root in map(Path, inputs):
        if not root.exists():
            raise ReportError(f"Results directory {root} does not exist. Pass directories that hold runs (default: results/)")
        for path in sorted(root.rglob("metrics.json")):
            if TRACKERS_DIR in path.relative_to(root).parts[:-1]:  # a tracker's copy of a run (logger=...), not a run
                continue
            try:
                m = json.loads(path.read_text())
                kind = m.get("kind", "eval")
                if kind in ("retrieval", "compositionality"):  # read by their own report views, into their own tables
                    continue
                needed = ("top1", "model", "dataset") if kind == "linear_probe" else REQUIRED
                missing = [k for k in needed if k not in m]
                if missing:
                    raise ValueError(f"missing {', '.join(missing)}")
                float(m["top1"])
            except (ValueError, TypeError, json.JSONDecodeError) as e:
                warnings.warn(f"skipping {path}: not a complete metrics.json ({e})")
                continue
            versions = m.get("versions") or {}
            bench = m.get("benchmark") or {}
            records.append({
                "kind": kind, "model": m["model"], "model_release": m.get("model_release"),
                "architecture": m.get("architecture", ""), "dataset": m["dataset"],
                "dataset_label": m.get("dataset_label") or m["dataset"],
                # runs written before fingerprints existed are keyed by what they did record
                "dataset_fingerprint": m.get("dataset_fingerprint") or f"{m['dataset']}:{m.get('n_images')}",
                "split": m.get("split", "test"), "prompts": m.get("prompts", ""),
                "prompts_hash": m.get("prompts_hash") if m.get("prompts_hash") is not None else m.get("prompts", ""),
                "prompts_label": m.get("prompts_label") or m.get("prompts", ""),
                **{k: m.get(k) for k in METRIC_COLUMNS}, **{k: m[k] for k in EXTRA_METRICS if k in m},
                "n_images": m.get("n_images"), "comparable": bool(m.get("comparable", False)),
                "not_comparable_reason": m.get("not_comparable_reason") or ("run recorded no benchmark" if "comparable" not in m else ""),
                "benchmark_metric": bench.get("metric"), "checkpoint_sha256": m.get("checkpoint_sha256") or "",
                "precision": m.get("precision"), "device": m.get("device"), "date": m.get("timestamp") or path.parent.name,
                "version": versions.get("zeroshot"), "git_commit": (versions.get("git_commit") or "")[:10],
                "run_dir": str(path.parent), "language": m.get("language"), **class_prompt_fields(m),
            })
    if not records:
        raise ReportError(f"No runs found under {', '.join(map(str, inputs))} (no complete metrics.json). "
                          "Run `python -m zeroshot eval ...` first, or point the report at the directories that hold runs.")
    return pd.DataFrame(records)


EXTRA_METRICS = BENCHMARK_METRICS

# The class-prompt protocol a run recorded (record.run_record's class_prompts), as columns `cp_<key>`; what the
# WaffleCLIP view matches to published protocols. A key the run did not record stays None, never a default.
CLASS_PROMPT_KEYS = ("kind", "seed", "aggregate", "descriptions_mode", "descriptor_pattern", "combine", "waffle",
                     "waffle_with_descriptions", "descriptions_sha256", "n_prompts")


def class_prompt_fields(m: dict) -> dict:
    """cp_* columns: cp_kind is "templates" where the run recorded class_prompts: null (templates only), None
    where it recorded no class_prompts at all (runs from before it was recorded); `templates` as JSON text."""
    cp = m.get("class_prompts")
    out = {f"cp_{k}": (cp or {}).get(k) for k in CLASS_PROMPT_KEYS}
    if "class_prompts" in m and cp is None:
        out["cp_kind"] = "templates"
    out["templates"] = json.dumps(m["templates"]) if isinstance(m.get("templates"), list) else None
    return out


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
    latest = evals.groupby(ROW_KEY, as_index=False).tail(1).copy()
    latest["n_runs"] = latest.set_index(ROW_KEY).index.map(evals.groupby(ROW_KEY).size()).to_numpy()
    return latest, notes
