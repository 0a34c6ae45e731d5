"""Published numbers beside a report's rows: the CLIP paper's, else open_clip's measurement of the same release, in
the metric the benchmark uses, shown only where the run used the benchmark's split and image count.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from zeroshot.paths import REFERENCE

PUBLISHED = REFERENCE / "published.csv"


def published_table() -> pd.DataFrame:
    ref = pd.read_csv(PUBLISHED)
    rank = {"clip_paper": 0, "open_clip": 1}
    return ref.sort_values("source", key=lambda s: s.map(rank), kind="stable").drop_duplicates(["release", "dataset"])


NOT_A_RELEASE = "weights are not a published release"


def published_for(release, hit: tuple[float, str] | None, comparable: bool, reason, *, missing: str = "") -> tuple[float, str]:
    """(published value, note) for one row of any report table: the hit (value, note) where the release has one
    and the run is comparable; else NaN and why (not a release, `missing`, or not comparable)."""
    if hit is None:
        return np.nan, missing if isinstance(release, str) else NOT_A_RELEASE
    if not comparable:
        return np.nan, f"not comparable: {reason}"
    return hit


def add_delta(table: pd.DataFrame, rows: list[tuple[float, str]], ours, threshold: float) -> pd.DataFrame:
    """published / published_note from published_for's rows, delta = ours - published in points, flag past threshold."""
    table["published"] = [value for value, _ in rows]
    table["published_note"] = [note for _, note in rows]
    table["delta"] = np.asarray(ours, dtype=float) - table["published"].to_numpy(dtype=float)
    table["flag"] = np.where(np.abs(table["delta"]) > threshold, "!", "")
    return table


def add_published(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """published / delta in points, in the metric the source used, for runs of a known release on the benchmark's
    canonical split and image count; every other row says why no published number applies."""
    ref = published_table().rename(columns={"source": "published_source", "metric": "published_metric",
                                            "value": "published_value", "release": "model_release"})
    table = table.merge(ref, on=["model_release", "dataset"], how="left")
    rows, ours = [], []
    for _, r in table.iterrows():
        metric = r["benchmark_metric"] if isinstance(r["benchmark_metric"], str) else r["published_metric"]
        hit = (r["published_value"], "") if isinstance(r["published_metric"], str) else None
        rows.append(published_for(r["model_release"], hit, r["comparable"], r["not_comparable_reason"]))
        value = r.get(metric) if metric in r else np.nan
        ours.append(np.nan if value is None else 100 * value)  # the delta is NaN wherever no published value applies
    return add_delta(table, rows, ours, threshold)


def add_linear_probe(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The latest probe of the same weights on the same images, beside the zero-shot rows (or as its own row)."""
    key = ["checkpoint_sha256", "dataset_fingerprint", "split"]
    probes = runs[runs.kind == "linear_probe"].sort_values("date").groupby(key, as_index=False).tail(1)
    if probes.empty:
        table["linear_probe"] = np.nan
        return table
    keep = key + ["model", "dataset", "dataset_label", "model_release", "architecture"]
    probes = probes[keep + ["top1"]].rename(columns={"top1": "linear_probe"})
    table = table.merge(probes, on=key, how="outer", suffixes=("", "_probe"))
    for col in ("model", "dataset", "dataset_label", "model_release", "architecture"):
        table[col] = table[col].fillna(table.pop(f"{col}_probe"))
    for col in ("prompts", "prompts_label", "published_note", "flag"):
        table[col] = table[col].fillna("")
    return table
