"""The figures of a report and of a comparison: the system x dataset heat map, per dataset the bars in the
benchmark's metric beside the published marks, effective robustness, and per pair of systems the paired
differences. report/ chooses what to draw and where (aggregates.py, compare_render.py); these only draw.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from zeroshot.figures.base import pyplot, save_figure


def plot_heatmap(grid: pd.DataFrame, path: Path, title: str) -> Path:
    """Top-1 (%) with one row per system and one column per dataset, each cell written in it."""
    plt = pyplot()
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
    ax.set_title(title)
    return save_figure(fig, path)


def plot_dataset_bars(labels: list[str], values, published, path: Path, title: str, *, metric: str = "top1") -> Path:
    """One bar per system in `metric` (fractions), in the order given, with the published marks (%) where known."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.5))
    y = np.arange(len(labels))
    ax.barh(y, 100 * np.asarray(values, dtype=float), color="tab:blue", label=f"zeroshot {metric.replace('_', ' ')}")
    pub = np.asarray(published, dtype=float)
    if not np.all(np.isnan(pub)):
        ax.scatter(pub, y, color="tab:red", marker="D", zorder=3, label="published")
    ax.set_yticks(y, labels)
    ax.set_xlabel("accuracy (%)")
    ax.set_xlim(0, 100)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_robustness(robust: pd.DataFrame, path: Path, title: str) -> Path:
    """ImageNet top-1 against the shift average (report.aggregates.robustness), ours and published, as in the CLIP
    paper's figure."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot([0, 100], [0, 100], color="gray", ls=":", label="y = x (perfect robustness)")
    ax.scatter(robust.imagenet, robust.shift_average, color="tab:blue", label="zeroshot", zorder=3)
    for r in robust.itertuples():
        ax.annotate(str(r.model), (r.imagenet, r.shift_average), fontsize=7, xytext=(3, 3), textcoords="offset points")
    pub = robust.dropna(subset=["published_imagenet", "published_shift_average"])
    if not pub.empty:
        ax.scatter(pub.published_imagenet, pub.published_shift_average, color="tab:red", marker="D", label="published")
    ax.set_xlabel("ImageNet top-1 (%)")
    ax.set_ylabel("average top-1 over the shifts (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_differences(rows: list[dict], suite: list[dict], path: Path, title: str, *, level: float = 0.95,
                     mark: str = "*") -> Path:
    """One pair's A - B per dataset (`rows`, tested, in the order given) with its CI, the significant ones filled,
    and below them the mean over datasets (`suite`: none, or one row) with its CI."""
    plt = pyplot()
    labels = [r["dataset"] for r in rows] + ([f"mean of {suite[0]['n_datasets']}"] if suite else [])
    diff = [r["diff"] for r in rows] + [s["mean_diff"] for s in suite]
    low = [r["ci_low"] for r in rows] + [s["ci_low"] for s in suite]
    high = [r["ci_high"] for r in rows] + [s["ci_high"] for s in suite]
    sig = np.array([r["verdict"] != "tie" for r in rows] + [False] * len(suite))
    d, lo, hi = 100 * np.array(diff), 100 * np.array(low), 100 * np.array(high)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(labels) + 2.2))
    y = np.arange(len(labels))
    per = y < len(rows)
    ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt="none", ecolor="0.4", capsize=3)
    ax.scatter(d[per & ~sig], y[per & ~sig], facecolors="white", edgecolors="0.3", zorder=3, label="tie")
    ax.scatter(d[sig], y[sig], color="tab:red", zorder=3, label=f"significant ({mark}, McNemar + Holm)")
    if suite:  # the mean has no test of its own: its CI is the statement
        ax.scatter(d[~per], y[~per], marker="D", color="tab:blue", zorder=3, label="mean over datasets")
    ax.axvline(0, color="0.6", lw=1)
    ax.set_yticks(y, labels)
    ax.set_xlabel(f"A - B (points), {round(100 * level)}% CI")
    ax.set_title(title, fontsize=9)
    # below the axes and their label (about 0.6 in under the axes, whatever their height), where it covers nothing
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.6 / (0.4 * len(labels) + 1.0)), ncol=3, fontsize=8,
              frameon=False)
    return save_figure(fig, path, dpi=100)
