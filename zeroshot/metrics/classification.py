"""Classification metrics in numpy: exact, and without scikit-learn's import time. top-1/top-5, mean per-class
recall, the datasets' own metrics (macro-F1, worst group/region, mAP). Tests check every metric against a
brute-force loop; the bootstrap and Holm's adjustment are in stats.py.
"""
from __future__ import annotations

import numpy as np
import torch

from zeroshot.errors import DatasetError


# The metrics every classification run records, and the datasets' own metrics (DataComp's task list), by name
CLASSIFICATION_METRICS = ("top1", "top5", "mean_per_class_recall")
BENCHMARK_METRICS = ("macro_f1", "worst_group_top1", "worst_group_top5", "worst_region_top1", "mean_average_precision")


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


def macro_f1(pred: np.ndarray, y: np.ndarray) -> float:
    """F1 averaged over the classes present in the labels (WILDS' F1-macro, iWildCam's main metric)."""
    scores = []
    for k in np.unique(y):
        tp = np.sum((pred == k) & (y == k))
        fp, fn = np.sum((pred == k) & (y != k)), np.sum((pred != k) & (y == k))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def group_accuracies(correct: np.ndarray, groups: np.ndarray, exclude=()) -> dict[int, float]:
    """Accuracy of each group that has images, leaving out the excluded group ids (e.g. FMoW's "Other" region)."""
    return {int(g): float(correct[groups == g].mean()) for g in np.unique(groups) if int(g) not in set(exclude)}


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve as the mean precision at each positive, ranked by score."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(bool)
    if not hits.any():
        return float("nan")
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


def mean_average_precision(logits: np.ndarray, multilabel: np.ndarray) -> float:
    """mAP over the classes with at least one positive image (multi-label VOC 2007)."""
    aps = [average_precision(logits[:, k], multilabel[:, k]) for k in range(logits.shape[1]) if multilabel[:, k].any()]
    return float(np.mean(aps)) if aps else float("nan")


def benchmark_metrics(spec, logits: torch.Tensor, labels: torch.Tensor, targets: dict) -> dict:
    """The dataset's own metric (configs/dataset/*.yaml `metric`, DataComp's task list) where it needs more than
    the labels: macro-F1, worst-group top-1/top-5 over a metadata field, multi-label mAP.

    `targets` holds the per-image "metadata" [N, F] or "multilabel" [N, C] rows, in the order of `labels`."""
    metric = spec.get("metric", "top1")
    scores, y = logits.float().numpy(), labels.numpy()
    pred = scores.argmax(1)
    out: dict = {}
    if metric == "macro_f1":
        out["macro_f1"] = macro_f1(pred, y)
    elif metric in ("worst_group_top1", "worst_group_top5", "worst_region_top1"):
        if "metadata" not in targets:
            raise DatasetError(f"metric {metric} needs per-image group metadata (.npy beside .cls in the webdataset); "
                             "this dataset has none")
        groups_cfg = spec.get("groups") or {}
        groups = targets["metadata"][:, int(groups_cfg.get("field", 0))]
        k = 5 if metric.endswith("top5") else 1
        correct = label_rank(scores.astype(np.float64), y) < k
        per_group = group_accuracies(correct, groups, groups_cfg.get("exclude") or ())
        out[metric] = min(per_group.values()) if per_group else float("nan")
        out["group_accuracy"] = {str(g): a for g, a in per_group.items()}
        out["group_field"] = groups_cfg.get("name", f"metadata[{groups_cfg.get('field', 0)}]")
    elif metric == "mean_average_precision":
        if "multilabel" not in targets:
            raise DatasetError("metric mean_average_precision needs multi-hot labels (.npy) in the webdataset; this dataset has none")
        out["mean_average_precision"] = mean_average_precision(scores, targets["multilabel"])
    if "multilabel" in targets:  # several labels per image: top-1 is right when the top class is any of them
        out["top1"] = float((targets["multilabel"][np.arange(len(pred)), pred] > 0).mean())
    return out
