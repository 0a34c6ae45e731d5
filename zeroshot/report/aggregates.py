"""Cross-dataset summaries of a report: open_clip's 35-dataset average, the ImageNet robustness view, and which
figures of them the report has (drawn by figures/report.py).

Both are computed per set of weights (checkpoint sha256), from rows whose numbers are comparable with the
published ones (canonical split and image count), each in its benchmark's metric. An average over fewer
datasets than the full set is shown with the published average over the same datasets, so the two columns
always compare like with like.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from zeroshot.figures.report import plot_dataset_bars, plot_heatmap, plot_robustness
from zeroshot.paths import config_dir
from zeroshot.record import slug
from zeroshot.report.tables import fmt


def _main_value(row) -> float:
    metric = row["benchmark_metric"] if isinstance(row.get("benchmark_metric"), str) else "top1"
    value = row.get(metric)
    return float(value) * 100 if value is not None and not pd.isna(value) else np.nan


def openclip_35(table: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Per model: its average over the open_clip datasets it ran (comparably), beside open_clip's published
    values for the same release over those same datasets, and open_clip's published 35-dataset average."""
    ref = published[published.source == "open_clip"]
    datasets = sorted(set(ref.dataset) - {"average_35"})
    rows = []
    evals = table[table.kind == "eval"] if "kind" in table else table
    for sha, group in evals[evals.dataset.isin(datasets) & evals.comparable.astype(bool)].groupby("checkpoint_sha256"):
        group = group.drop_duplicates("dataset", keep="last")
        release = group.model_release.dropna().iloc[0] if group.model_release.notna().any() else None
        ours = {r.dataset: _main_value(r._asdict()) for r in group.itertuples()}
        pub = ref[ref.release == release].set_index("dataset").value if release else pd.Series(dtype=float)
        same = [d for d in ours if d in pub.index]
        rows.append({
            "model": group.model.iloc[0], "release": release, "sha256": sha[:12], "datasets": len(ours),
            "average": np.mean(list(ours.values())),
            "published_same_datasets": np.mean([pub[d] for d in same]) if same and len(same) == len(ours) else np.nan,
            "published_average_35": pub.get("average_35", np.nan) if release else np.nan,
            "missing": ", ".join(d for d in datasets if d not in ours),
        })
    out = pd.DataFrame(rows)
    if not out.empty:
        out["delta_same_datasets"] = out["average"] - out["published_same_datasets"]
    return out


def robustness_suite() -> dict:
    return yaml.safe_load((config_dir() / "suite" / "imagenet_robustness.yaml").read_text())


def robustness(table: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Per model with an ImageNet row: ImageNet top-1, each shift, and the average over the suite's
    `average_over` shifts it ran (the CLIP paper's effective-robustness axes), beside the published ones."""
    suite = robustness_suite()
    shifts, everything = list(suite["average_over"]), list(suite["datasets"])
    evals = table[(table.kind == "eval") if "kind" in table else slice(None)]
    ref = published[published.source == "open_clip"]
    rows = []
    for sha, group in evals[evals.dataset.isin(everything)].groupby("checkpoint_sha256"):
        group = group.drop_duplicates("dataset", keep="last").set_index("dataset")
        if "imagenet" not in group.index:
            continue
        release = group.model_release.dropna().iloc[0] if group.model_release.notna().any() else None
        row = {"model": group.model.iloc[0], "release": release, "sha256": sha[:12]}
        for d in everything:
            row[d] = 100 * group.loc[d, "top1"] if d in group.index else np.nan
        ran = [d for d in shifts if d in group.index]
        row["shift_average"] = np.mean([row[d] for d in ran]) if ran else np.nan
        row["shifts_run"] = len(ran)
        pub = ref[ref.release == release].set_index("dataset").value if release else pd.Series(dtype=float)
        row["published_imagenet"] = pub.get("imagenet", np.nan)
        row["published_shift_average"] = np.mean([pub[d] for d in ran]) if ran and all(d in pub.index for d in ran) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(avg35: pd.DataFrame, robust: pd.DataFrame) -> list[str]:
    lines = []
    if not avg35.empty:
        lines += ["## open_clip's 35 datasets: average", "",
                  "Each model's mean over the datasets it ran comparably (each in its benchmark's metric), beside open_clip's "
                  "published mean for the same release over the same datasets, and its published 35-dataset average.", "",
                  "| model | datasets | average | published, same datasets | delta | published 35-dataset average | not run |",
                  "|---|---|---|---|---|---|---|"]
        for r in avg35.itertuples():
            lines.append(f"| {r.model} | {r.datasets} of 35 | {r.average:.2f} | {fmt(r.published_same_datasets)} | "
                         f"{fmt(r.delta_same_datasets, signed=True)} | {fmt(r.published_average_35)} | {r.missing or '-'} |")
        lines.append("")
    if not robust.empty:
        shifts = robustness_suite()["average_over"]
        lines += ["## ImageNet and its distribution shifts", "",
                  f"Top-1 (%). `shift average` is the mean over {', '.join(shifts)} (those run), the CLIP paper's "
                  "effective-robustness axis; ImageNet-O is shown but not averaged.", "",
                  "| model | ImageNet | shift average | shifts run | published ImageNet | published shift average | "
                  + " | ".join(robustness_suite()["datasets"][1:]) + " |",
                  "|" + "---|" * (6 + len(robustness_suite()["datasets"]) - 1)]
        for r in robust.to_dict("records"):
            cells = [fmt(r[d]) for d in robustness_suite()["datasets"][1:]]
            lines.append(f"| {r['model']} | {fmt(r['imagenet'])} | {fmt(r['shift_average'])} | {r['shifts_run']} | "
                         f"{fmt(r['published_imagenet'])} | {fmt(r['published_shift_average'])} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def robustness_figure(robust: pd.DataFrame, path: Path) -> bool:
    """ImageNet top-1 against the shift average, ours and published (figures/report.py), where a model has both."""
    if robust.empty or robust.shift_average.isna().all():
        return False
    plot_robustness(robust, path, "Effective robustness")
    return True


def heatmap_grid(evals: pd.DataFrame) -> pd.DataFrame:
    """Top-1 (%) with one row per system, weights and prompts, as the report's tables have them: one model's runs
    with two prompt sets are two rows (a row per model showed one of them, unsaid). Repeats of a row: the best."""
    systems = evals.assign(system=[f"{m} ({p})" for m, p in zip(evals.model, evals.prompts_label)])
    return systems.groupby(["system", "dataset_label"]).top1.max().unstack("dataset_label") * 100


def heatmap_and_bars(table: pd.DataFrame, out: Path) -> list[Path]:
    """The report's zero-shot figures: the system x dataset heat map of top-1, and per dataset the systems' bars in
    the metric the published number uses (so the two marks are comparable), beside the published marks."""
    evals = table.dropna(subset=["top1"])
    grid = heatmap_grid(evals)
    if grid.empty:  # only linear-probe rows: nothing zero-shot to draw
        return []
    paths = [plot_heatmap(grid, out / "heatmap_top1.png", "Zero-shot top-1 (%), system (model and prompts) x dataset")]
    for dataset, group in evals.groupby("dataset_label"):
        metric = group.benchmark_metric.dropna().iloc[0] if group.benchmark_metric.notna().any() else "top1"
        metric = metric if metric in group and group[metric].notna().any() else "top1"
        group = group.sort_values(metric)
        labels = [f"{m} ({p})" for m, p in zip(group.model, group.prompts_label)]
        paths.append(plot_dataset_bars(labels, group[metric], group.published, out / f"bars_{slug(dataset)}.png",
                                       dataset, metric=metric))
    return paths
