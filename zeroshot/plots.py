"""Figures of a run: the confusion matrix and per-class accuracy, on matplotlib's file-only backend (imported when drawn).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (runs have no display), imported when first needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close a figure (pyplot keeps every open figure in memory until closed)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot_confusion(cm: np.ndarray, classnames: list[str], path: Path, title: str) -> None:
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
    save_figure(fig, path)


def plot_per_class(acc: np.ndarray, classnames: list[str], path: Path, title: str) -> None:
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
    save_figure(fig, path)


def plot_selection(names: list[str], series: dict[str, list[float]], path: Path, title: str) -> None:
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
    save_figure(fig, path)
