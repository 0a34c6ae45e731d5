"""Classification metrics (scikit-learn where it has them) and bootstrap uncertainty."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score, top_k_accuracy_score


def topk_predictions(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    return logits.topk(min(k, logits.shape[1]), dim=1).indices  # [N, k]


def topk_accuracy(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, k: int) -> float:
    scores, y = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    n_classes = scores.shape[1]
    if k >= n_classes:
        return 1.0
    if n_classes == 2:  # sklearn reads a 2-column score as binary; k < 2 here means top-1
        return float(accuracy_score(y, scores.argmax(1)))
    return float(top_k_accuracy_score(y, scores, k=k, labels=np.arange(n_classes)))


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """top1, top5, mean per-class recall (over classes present), per-class accuracy and the confusion matrix."""
    logits, labels = logits.float(), labels.long()
    n_classes = logits.shape[1]
    y, pred = labels.numpy(), logits.argmax(1).numpy()
    present = np.unique(y)
    recall = recall_score(y, pred, labels=np.arange(n_classes), average=None, zero_division=0.0)
    per_class = np.where(np.isin(np.arange(n_classes), present), recall, np.nan)
    return {
        "top1": float(accuracy_score(y, pred)),
        "top5": topk_accuracy(logits.numpy(), y, 5),
        "mean_per_class_recall": float(np.nanmean(per_class)),
        "per_class_accuracy": per_class,
        "support": np.bincount(y, minlength=n_classes),
        "confusion_matrix": confusion_matrix(y, pred, labels=np.arange(n_classes)),
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
