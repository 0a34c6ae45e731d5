"""Classification metrics and bootstrap uncertainty, in numpy: exact, and without scikit-learn's import time
(about 2 s, most of an interactive command's start-up). Tests check every metric against a brute-force loop.
"""
from __future__ import annotations

import numpy as np
import torch


def topk_predictions(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    return logits.topk(min(k, logits.shape[1]), dim=1).indices  # [N, k]


def label_rank(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each label's 0-based rank among its row's scores, highest first; ties go to the lower class index."""
    own = scores[np.arange(len(y)), y][:, None]  # [N, 1]
    lower = np.arange(scores.shape[1])[None, :] < y[:, None]  # [N, C]
    return ((scores > own) | ((scores == own) & lower)).sum(axis=1)


def topk_accuracy(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, k: int) -> float:
    scores, y = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    return float((label_rank(scores, y) < k).mean()) if len(y) else float("nan")


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top1, top5, mean per-class recall (over classes present), per-class accuracy and the confusion matrix."""
    logits, labels = logits.float(), labels.long()
    n_classes = logits.shape[1]
    y, pred = labels.numpy(), logits.argmax(1).numpy()
    cm = confusion(y, pred, n_classes)
    support = cm.sum(axis=1)
    per_class = np.divide(np.diag(cm), support, out=np.full(n_classes, np.nan), where=support > 0)
    return {
        "top1": float((pred == y).mean()),
        "top5": topk_accuracy(logits.numpy(), y, 5),
        "mean_per_class_recall": float(np.nanmean(per_class)),
        "per_class_accuracy": per_class,
        "support": support,
        "confusion_matrix": cm,
    }


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] resampling indices; shared between sets so that comparisons are paired."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(correct: np.ndarray, idx: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile confidence interval of the mean of a 0/1 correctness vector."""
    means = correct[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_bootstrap_pvalue(correct_a: np.ndarray, correct_b: np.ndarray, idx: np.ndarray) -> float:
    """Two-sided p-value that a and b (0/1 per image, same images) differ in accuracy.

    The bootstrap distribution of the difference is centred on zero (the null) and compared with the
    observed difference; +1 smoothing keeps p from being exactly 0.
    """
    diff = correct_a.astype(np.float64) - correct_b.astype(np.float64)
    observed = diff.mean()
    boot = diff[idx].mean(axis=1) - observed
    return float((np.sum(np.abs(boot) >= abs(observed) - 1e-12) + 1) / (len(boot) + 1))
