"""A run's figures: the confusion matrix and per-class accuracy (`eval`), the reliability diagram (`eval` with
calibration), image-caption selection per group (`compositionality`). Plain data in (numbers, lists, numpy arrays,
strings, paths): they are drawn in the helper process (figures/drawing.py), which never imports torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zeroshot.figures.base import pyplot, save_figure


def plot_confusion(cm: np.ndarray, classnames: list[str], path: Path, title: str) -> Path:
    plt = pyplot()
    n = len(classnames)
    labelled = n <= 100
    size = min(max(6, n * 0.22), 24) if labelled else 10
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if labelled:
        ticks = np.arange(n)
        short = [c if len(c) <= 24 else c[:22] + "…" for c in classnames]
        fontsize = 9 if n <= 20 else max(4, 9 - n // 20)
        ax.set_xticks(ticks, short, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks, short, fontsize=fontsize)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_per_class(acc: np.ndarray, classnames: list[str], path: Path, title: str) -> Path:
    plt = pyplot()
    order = np.argsort(np.nan_to_num(acc, nan=-1))
    n = len(acc)
    fig, ax = plt.subplots(figsize=(8, min(max(3, n * 0.22), 40) if n <= 100 else 6))
    if n <= 100:
        ax.barh(np.arange(n), acc[order] * 100, color="tab:blue")
        ax.set_yticks(np.arange(n), [classnames[i] for i in order], fontsize=8 if n <= 40 else 6)
        ax.set_xlabel("accuracy (%)")
        ax.axvline(np.nanmean(acc) * 100, color="tab:red", ls="--", label="mean per-class recall")
        ax.legend(loc="lower right", fontsize=8)
    else:  # too many classes to name: show the sorted curve
        ax.plot(np.arange(n), acc[order] * 100)
        ax.set_xlabel("classes, sorted by accuracy")
        ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_caption_selection(names: list[str], series: dict[str, list[float]], path: Path, title: str) -> Path:
    """Image-caption selection accuracies (%) per subset or group: one bar per name and series (text, image, group)."""
    plt = pyplot()
    n, k = len(names), max(1, len(series))
    fig, ax = plt.subplots(figsize=(8, min(max(2.5, n * k * 0.18 + 1), 30)))
    height = 0.8 / k
    for j, (label, values) in enumerate(series.items()):
        ax.barh(np.arange(n) + j * height, np.asarray(values, dtype=float) * 100, height=height, label=label)
    ax.set_yticks(np.arange(n) + 0.4 - height / 2, names, fontsize=8 if n <= 40 else 5)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    if k > 1:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_reliability(curves: list[tuple[str, dict, float]], path: Path, title: str) -> Path:
    """Accuracy against confidence per bin, one curve per `metrics.calibration.reliability_curve` (label, bins,
    ECE), with the diagonal and each curve's ECE; below, the images per bin."""
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfect calibration")
    n_bins = len(curves[0][1]["count"]) if curves else 0
    width = 1 / max(n_bins, 1)  # equal-width bins on [0, 1]
    for i, (label, b, error) in enumerate(curves):
        used = b["count"] > 0
        centres = (b["edges"][:-1] + width / 2)[used]
        offset = (i - (len(curves) - 1) / 2) * width / max(len(curves), 1)
        ax.bar(centres + offset, b["accuracy"][used], width=width / max(len(curves), 1), alpha=0.7,
               label=f"{label}: ECE {100 * error:.2f}%")
        ax.plot(b["confidence"][used], b["accuracy"][used], marker="o", ms=3, lw=1)
        hist.bar(centres + offset, b["count"][used], width=width / max(len(curves), 1), alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy in bin")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel(f"top-label confidence ({n_bins} equal-width bins)")
    hist.set_ylabel("images")
    return save_figure(fig, path, dpi=100)
