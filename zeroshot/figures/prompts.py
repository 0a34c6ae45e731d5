"""The figures of `zeroshot prompts`: templates alone against the ensemble, the greedy selection curve, the
per-class change a description set makes, and label-free prompt weights. numpy and matplotlib only, with plain
data in: they are drawn in the helper process (figures/drawing.py), which never imports torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zeroshot.figures.base import pyplot, save_figure, short


def plot_templates(names: list[str], top1: list[float], ci: tuple[list[float], list[float]], ensemble: list[float],
                   path: Path, title: str) -> Path:
    """Each template alone (top-1 with its bootstrap CI as (lows, highs), in the order given) against the
    ensemble's [top-1, CI low, CI high]."""
    plt = pyplot()
    n = len(names)
    top1, low, high = (100 * np.asarray(v, dtype=float) for v in (top1, *ci))
    fig, ax = plt.subplots(figsize=(9, max(3, 0.28 * n + 1)))
    y = np.arange(n)
    ax.barh(y, top1, xerr=[top1 - low, high - top1], color="tab:blue", ecolor="gray", capsize=2)
    ax.set_yticks(y, [short(t, 50) for t in names], fontsize=7 if n > 30 else 9)
    ax.invert_yaxis()
    mean, mean_low, mean_high = ensemble
    ax.axvline(100 * mean, color="tab:red", ls="--", label=f"ensemble {100 * mean:.1f}%")
    ax.axvspan(100 * mean_low, 100 * mean_high, color="tab:red", alpha=0.1)
    ax.set_xlabel("top-1 accuracy (%), 95% bootstrap CI")
    ax.set_title(f"Templates alone | {title}")
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_selection(steps: list[int], select_top1: list[float], heldout_top1: list[float], full_heldout_top1: float,
                   path: Path, title: str) -> Path:
    """Greedy forward selection: top-1 on the selection half and on the held-out half after each step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [100 * v for v in select_top1], "o-", label="selection half")
    ax.plot(steps, [100 * v for v in heldout_top1], "s-", label="held-out half")
    ax.axhline(100 * full_heldout_top1, color="tab:red", ls="--", label="full ensemble (held-out images)")
    ax.set_xlabel("templates selected")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Greedy template selection | {title}")
    ax.legend()
    return save_figure(fig, path)


def plot_description_deltas(classes: list[str], deltas: list[float], path: Path, title: str) -> Path:
    """Per-class accuracy change of a description set against the template ensemble, in the order given."""
    plt = pyplot()
    deltas = 100 * np.asarray(deltas, dtype=float)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(8, max(3, 0.22 * n + 1)))
    y = np.arange(n)
    ax.barh(y, deltas, color=np.where(deltas >= 0, "tab:green", "tab:red"))
    ax.set_yticks(y, [short(c, 40) for c in classes], fontsize=7 if n > 30 else 9)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("per-class accuracy change vs the template ensemble (points)")
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_prompt_weights(templates: list[str], panels: list[tuple[str, list[list[float]]]], path: Path, title: str, *,
                        classes: list[str] = ()) -> Path:
    """Label-free prompt weights, one panel each: a bar per template (one column: ZPE) or a templates x classes
    heat map (CARPRT's class-aware weights; the classes named below it where there are 40 or fewer)."""
    plt = pyplot()
    n = len(templates)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), max(3, 0.28 * n + 1.5)), squeeze=False)
    for ax, (label, weights) in zip(axes[0], panels):
        w = np.asarray(weights, dtype=float)  # [T, 1] or [T, C]
        y = np.arange(n)
        if w.shape[1] == 1:
            ax.barh(y, w[:, 0], color="tab:blue")
            ax.axvline(1 / n, color="gray", ls="--", label="equal weight")
            ax.invert_yaxis()
            ax.set_xlabel("weight")
            ax.legend(loc="lower right")
        else:
            image = ax.imshow(w, aspect="auto", cmap="viridis", interpolation="nearest")
            fig.colorbar(image, ax=ax, label="weight (each class's column sums to 1)")
            if 0 < len(classes) == w.shape[1] <= 40:
                ax.set_xticks(np.arange(len(classes)), [short(c, 20) for c in classes], rotation=90, fontsize=7)
            else:
                ax.set_xlabel(f"class (0..{w.shape[1] - 1})")
        ax.set_yticks(y, [short(t, 40) for t in templates], fontsize=7 if n > 30 else 9)
        ax.set_title(short(label, 70), fontsize=9)
    fig.suptitle(f"Label-free prompt weights | {title}", fontsize=10)
    return save_figure(fig, path)
