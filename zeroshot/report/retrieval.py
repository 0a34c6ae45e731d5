"""The report's retrieval table and DataComp's 38-task average.

Retrieval rows follow classification's rules: a row is one set of weights (sha256) on one set of images
(fingerprint, split) with one caption set (hash); the latest of repeats is shown. Published numbers are
open_clip's (zeroshot/reference/published_retrieval.csv, see tools/make_retrieval_reference.py), shown only
for a known release run on the benchmark's canonical split and image count; otherwise the cell says why.

The 38-task view (configs/suite/datacomp_38.yaml) averages, per set of weights, each task's DataComp main
metric over the tasks it ran comparably, beside open_clip's published values for the same release over the
same tasks and DataComp's published 38-task average; the tasks not run are named, with their reasons.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import yaml

from zeroshot.paths import REFERENCE, config_dir
from zeroshot.report.published import PUBLISHED, add_delta, published_for
from zeroshot.report.runs import latest_per_row, run_records
from zeroshot.report.tables import fmt

PUBLISHED_RETRIEVAL = REFERENCE / "published_retrieval.csv"
RECALLS = [f"{d}_retrieval_recall@{k}" for d in ("text", "image") for k in (1, 5, 10)]


def load_retrieval_runs(inputs) -> pd.DataFrame:
    """One record per complete retrieval run (metrics.json with kind "retrieval") under the inputs."""
    records = []
    for m in run_records(inputs, "retrieval"):
        if "mean_recall@1" not in m or "model" not in m:
            warnings.warn(f"skipping {m.path}: not a complete retrieval metrics.json")
            continue
        records.append({
            "model": m["model"], "model_release": m.get("model_release"), "architecture": m.get("architecture"),
            "dataset": m["dataset"], "dataset_label": m.get("dataset_label"),
            "dataset_fingerprint": m.get("dataset_fingerprint"), "split": m.get("split"),
            "prompts_hash": m.get("captions_hash") or m.get("prompts_hash"), "captions": m.get("prompts_label"),
            **{k: m.get(k) for k in [*RECALLS, "mean_recall@1"]}, "n_images": m.get("n_images"),
            "n_captions": m.get("n_captions"), "comparable": bool(m.get("comparable")),
            "not_comparable_reason": m.get("not_comparable_reason"),
            "benchmark_metric": (m.get("benchmark") or {}).get("metric", "mean_recall@1"),
            "checkpoint_sha256": m.get("checkpoint_sha256"), "date": m.get("timestamp"),
            "run_dir": str(m.run_dir), "language": m.get("language"),
            "dataset_language": (m.get("language_detail") or {}).get("dataset_language"),
        })
    return pd.DataFrame(records)


def retrieval_table(runs: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The latest run per row key, with open_clip's published value of the benchmark metric and the delta."""
    if runs.empty:
        return runs
    latest = latest_per_row(runs)
    pub = pd.read_csv(PUBLISHED_RETRIEVAL)
    lookup = {(r.release, r.dataset, r.metric): (r.value, "") for r in pub.itertuples()}
    rows = [published_for(r.model_release, lookup.get((r.model_release, r.dataset, r.benchmark_metric))
                          if isinstance(r.model_release, str) else None, r.comparable, r.not_comparable_reason)
            for r in latest.itertuples()]
    ours = 100 * latest.apply(lambda r: r[r["benchmark_metric"]], axis=1).astype(float)
    add_delta(latest, rows, ours, threshold)
    return latest.sort_values(["dataset_label", "mean_recall@1"], ascending=[True, False])


def datacomp_suite() -> dict:
    return yaml.safe_load((config_dir() / "suite" / "datacomp_38.yaml").read_text())


def _value(row: dict) -> float:
    metric = row.get("benchmark_metric") if isinstance(row.get("benchmark_metric"), str) else "top1"
    value = row.get(metric)
    return float(value) * 100 if value is not None and not pd.isna(value) else np.nan


def datacomp_38(classification: pd.DataFrame, retrieval: pd.DataFrame) -> pd.DataFrame:
    """Per set of weights: the mean over the 38 tasks it ran comparably, open_clip's published mean over those
    tasks and DataComp's published 38-task average (open_clip's measurement of the same release)."""
    suite = datacomp_suite()
    tasks = suite["tasks"]  # DataComp task key -> our dataset name
    names = set(tasks.values())
    frames = []
    if classification is not None and not classification.empty:
        evals = classification[classification.kind == "eval"] if "kind" in classification else classification
        frames.append(evals)
    if retrieval is not None and not retrieval.empty:
        frames.append(retrieval)
    if not frames:
        return pd.DataFrame()
    rows_all = pd.concat(frames, ignore_index=True, sort=False)
    rows_all = rows_all[rows_all.dataset.isin(names) & rows_all.comparable.astype(bool)]
    pub = pd.concat([pd.read_csv(PUBLISHED), pd.read_csv(PUBLISHED_RETRIEVAL)])
    pub = pub[(pub.source == "open_clip") & ~pub.metric.isin(RECALLS)]  # each task's main metric only
    out = []
    for sha, group in rows_all.sort_values("date").groupby("checkpoint_sha256"):
        group = group.drop_duplicates("dataset", keep="last")
        release = group.model_release.dropna().iloc[0] if group.model_release.notna().any() else None
        ours = {r["dataset"]: _value(r) for r in group.to_dict("records")}
        ref = pub[(pub.release == release)] if release else pub.iloc[:0]
        main = dict(zip(ref.dataset, ref.value))
        same = [d for d in ours if d in main]
        out.append({
            "model": group.model.iloc[0], "release": release, "sha256": sha[:12], "tasks": len(ours),
            "average": float(np.mean(list(ours.values()))),
            "published_same_tasks": float(np.mean([main[d] for d in same])) if same and len(same) == len(ours) else np.nan,
            "published_average_38": main.get("average_38", np.nan),
            "not_run": ", ".join([d for d in tasks.values() if d not in ours]
                                 + [f"{t} (not implemented)" for t in suite.get("not_implemented") or {}]),
        })
    frame = pd.DataFrame(out)
    if not frame.empty:
        frame["delta_same_tasks"] = frame["average"] - frame["published_same_tasks"]
    return frame


def markdown(table: pd.DataFrame, dc38: pd.DataFrame) -> list[str]:
    lines = []
    if table is not None and not table.empty:
        lines += ["## Image-text retrieval", "",
                  "Recall in %. image->text is DataComp's and CLIP_benchmark's `text_retrieval` (an image finds one of its "
                  "own captions among the k nearest), text->image their `image_retrieval`; `mean_recall@1`, DataComp's main "
                  "metric, is the mean of the two recall@1. `published` is open_clip's measurement of the same release.", "",
                  "| dataset | model | captions | i->t R@1 | i->t R@5 | i->t R@10 | t->i R@1 | t->i R@5 | t->i R@10 | "
                  "mean R@1 | published | delta | | images | captions | sha256 | date |",
                  "|" + "---|" * 17]
        for r in table.to_dict("records"):
            pub = f"{r['published']:.2f} (open_clip)" if not pd.isna(r["published"]) else r["published_note"]
            cells = [r["dataset_label"], r["model"], r["captions"], *[fmt(r[k], pct=True) for k in RECALLS],
                     fmt(r["mean_recall@1"], pct=True), pub, fmt(r["delta"], signed=True), r["flag"],
                     str(r["n_images"]), str(r["n_captions"]), str(r["checkpoint_sha256"])[:12], str(r["date"])]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        lines.append("")
    if dc38 is not None and not dc38.empty:
        skipped = datacomp_suite().get("not_implemented") or {}
        lines += ["## DataComp's 38 tasks: average", "",
                  "Each model's mean over the DataComp tasks it ran comparably (each in DataComp's main metric), beside "
                  "open_clip's published mean for the same release over the same tasks, and DataComp's published 38-task "
                  "average. " + " ".join(f"{k}: not implemented ({v})." for k, v in skipped.items()), "",
                  "| model | tasks | average | published, same tasks | delta | published 38-task average | not run |",
                  "|---|---|---|---|---|---|---|"]
        for r in dc38.to_dict("records"):
            lines.append(f"| {r['model']} | {r['tasks']} of 38 | {r['average']:.2f} | {fmt(r['published_same_tasks'])} | "
                         f"{fmt(r['delta_same_tasks'], signed=True)} | {fmt(r['published_average_38'])} | {r['not_run'] or '-'} |")
        lines.append("")
    return lines


def retrieval_only_report(cfg, runs: pd.DataFrame, not_run: list[dict], selection: pd.DataFrame | None = None) -> dict:
    """The report when the inputs hold no classification runs: the retrieval table, the 38-task view, the
    compositionality table (report.compositionality), what did not run."""
    from zeroshot.record import run_directory
    from zeroshot.report import compositionality
    from zeroshot.report.tables import not_run_lines

    from zeroshot.report.multilingual import markdown as multilingual_markdown
    from zeroshot.report.multilingual import multilingual_table

    table = retrieval_table(runs, float(cfg.delta_threshold))
    avg38 = datacomp_38(None, table) if not table.empty else pd.DataFrame()
    languages = multilingual_table(None, table) if not table.empty else pd.DataFrame()
    selection = pd.DataFrame() if selection is None else selection
    with run_directory(cfg.output_dir, record=False) as report_dir:
        out = report_dir.path
        for name, frame in (("retrieval.csv", table), ("average_38.csv", avg38), ("multilingual.csv", languages),
                            ("compositionality.csv", selection)):
            if not frame.empty:
                frame.to_csv(out / name, index=False)
        lines = ["# zeroshot benchmark report", "", *markdown(table, avg38), *multilingual_markdown(languages),
                 *compositionality.report_lines(selection, cfg),
                 *not_run_lines(not_run)]
        (out / "report.md").write_text("\n".join(lines))
        body = "".join(f"<h2>{title}</h2>{frame.to_html(index=False, na_rep='', float_format=lambda x: f'{x:.4g}')}"
                       for title, frame in (("Image-text retrieval", table), ("DataComp's 38 tasks: average", avg38),
                                            ("Multilingual", languages),
                                            ("Compositionality (image-caption selection)", selection)) if not frame.empty)
        (out / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>zeroshot report</title></head>"
                                         f"<body><h1>zeroshot benchmark report</h1>{body}</body></html>")
    print(f"{len(table)} retrieval rows from {len(runs)} runs, {len(selection)} compositionality rows -> "
          f"{out}/report.md, report.html")
    return {"report_dir": str(out), "rows": 0, "skipped": 0, "notes": [], "not_run": not_run, "average_35": [],
            "robustness": [], "retrieval": table.to_dict("records"), "average_38": avg38.to_dict("records"),
            "compositionality": selection.to_dict("records"), "multilingual": languages.to_dict("records")}
