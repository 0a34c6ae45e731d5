"""The report's figures: the model x dataset heatmap and, per dataset, bars in the benchmark's metric beside the
published marks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from zeroshot.plots import pyplot, save_figure
from zeroshot.record import slug


def heatmap_grid(evals: pd.DataFrame) -> pd.DataFrame:
    """Top-1 (%) with one row per system, weights and prompts, as the report's tables have them: one model's runs
    with two prompt sets are two rows (a row per model showed one of them, unsaid). Repeats of a row: the best."""
    systems = evals.assign(system=[f"{m} ({p})" for m, p in zip(evals.model, evals.prompts_label)])
    return systems.groupby(["system", "dataset_label"]).top1.max().unstack("dataset_label") * 100


def figures(table: pd.DataFrame, out: Path) -> list[Path]:
    plt = pyplot()

    paths = []
    evals = table.dropna(subset=["top1"])
    grid = heatmap_grid(evals)
    if grid.empty:  # only linear-probe rows: nothing zero-shot to draw
        return paths
    fig, ax = plt.subplots(figsize=(1.1 * grid.shape[1] + 3, 0.6 * grid.shape[0] + 2))
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid.iat[i, j]
            if not np.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v < 60 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, label="top-1 (%)")
    ax.set_title("Zero-shot top-1 (%), system (model and prompts) x dataset")
    paths.append(save_figure(fig, out / "heatmap_top1.png"))
    for dataset, group in evals.groupby("dataset_label"):
        # bars in the metric the published number uses, so the two marks are comparable
        metric = group.benchmark_metric.dropna().iloc[0] if group.benchmark_metric.notna().any() else "top1"
        metric = metric if metric in group and group[metric].notna().any() else "top1"
        group = group.sort_values(metric)
        labels = [f"{m} ({p})" for m, p in zip(group.model, group.prompts_label)]
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(group) + 1.5))
        y = np.arange(len(group))
        ax.barh(y, 100 * group[metric], color="tab:blue", label=f"zeroshot {metric.replace('_', ' ')}")
        pub = group.published.to_numpy(dtype=float)
        if not np.all(np.isnan(pub)):
            ax.scatter(pub, y, color="tab:red", marker="D", zorder=3, label="published")
        ax.set_yticks(y, labels)
        ax.set_xlabel("accuracy (%)")
        ax.set_xlim(0, 100)
        ax.set_title(dataset)
        ax.legend(loc="lower right", fontsize=8)
        paths.append(save_figure(fig, out / f"bars_{slug(dataset)}.png"))
    return paths
