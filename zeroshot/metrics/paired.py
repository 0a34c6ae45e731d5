"""Is A better than B? Paired comparison of two runs on the same images, in numpy (no scipy).

Two runs are paired by image identity, never by position: the image's path (or webdataset shard:key, or for
sources without paths its index in the fingerprinted dataset) plus the dataset fingerprint and split. Then,
per dataset:
- a per-image metric (top-1, top-5) gets the difference, a paired bootstrap CI (the same resampled images
  for both runs), McNemar's exact test on the discordant images, and the 2x2 counts;
- a metric that is not a mean over images (mean per-class recall, macro-F1, worst-group, mAP) gets only a
  paired bootstrap CI of the difference: McNemar tests a difference in the share of right images, which is
  not what these measure.
Across a suite, `suite_summary` gives wins/ties/losses after Holm over the datasets and a mean difference
whose CI resamples images within each dataset.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from zeroshot.errors import ReportError
from zeroshot.metrics.classification import (
    BENCHMARK_METRICS,
    group_accuracies,
    label_rank,
    mean_average_precision,
)
from zeroshot.metrics.stats import LEVEL, bootstrap_means, holm, percentile_ci, resample_indices  # noqa: F401 (LEVEL: its CIs' level, which report.compare records)

# Means over images, so McNemar applies; every other metric is a function of the whole set (a fact, defined once).
PER_IMAGE_METRICS = ("top1", "top5")  # a mean over images of a 0/1 outcome: McNemar applies
NOT_PER_IMAGE_METRICS = ("mean_per_class_recall", *BENCHMARK_METRICS)  # whole-set metrics: a bootstrap CI only


class PairingError(ReportError):
    """Two runs that do not hold the same images."""


@dataclass
class RunImages:
    """What a run directory holds about each image, in its own row order."""

    name: str
    run_dir: str
    fingerprint: str
    split: str
    keys: np.ndarray  # [N] image identity: path, shard:key, or "#index"
    labels: np.ndarray  # [N]
    logits: np.ndarray  # [N, C]
    metric: str = "top1"
    classnames: list[str] = field(default_factory=list)
    metadata: np.ndarray | None = None  # [N, F] group fields (WILDS)
    multilabel: np.ndarray | None = None  # [N, C] multi-hot (VOC 2007 multi-label)
    groups: dict = field(default_factory=dict)  # dataset.groups: field, exclude
    # argmax and correctness per metric, computed once: a bootstrap asks for them on every resample
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def prediction(self) -> np.ndarray:
        if "pred" not in self.cache:
            self.cache["pred"] = self.logits.argmax(1)
        return self.cache["pred"]

    def take(self, rows: np.ndarray) -> "RunImages":
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return RunImages(self.name, self.run_dir, self.fingerprint, self.split, self.keys[rows], self.labels[rows],
                         self.logits[rows], self.metric, self.classnames, pick(self.metadata), pick(self.multilabel),
                         self.groups)


def pair(a: RunImages, b: RunImages) -> tuple[RunImages, RunImages]:
    """Both runs restricted to the same images in the same order (A's), or PairingError saying how they differ."""
    problems = []
    if a.fingerprint != b.fingerprint:
        problems.append(f"dataset fingerprints differ ({a.fingerprint[:12]} vs {b.fingerprint[:12]})")
    if a.split != b.split:
        problems.append(f"splits differ ({a.split} vs {b.split})")
    keys_a, keys_b = set(a.keys.tolist()), set(b.keys.tolist())  # (np.setdiff1d on strings is quadratic)
    only_a, only_b = sorted(keys_a - keys_b), sorted(keys_b - keys_a)
    if len(only_a) or len(only_b):
        problems.append(f"{len(only_a)} images only in A (e.g. {only_a[0] if len(only_a) else '-'}), "
                        f"{len(only_b)} only in B (e.g. {only_b[0] if len(only_b) else '-'})")
    for run, keys in ((a, keys_a), (b, keys_b)):
        if len(keys) != len(run.keys):
            problems.append(f"{run.name} names some images twice")
    if a.logits.shape[1] != b.logits.shape[1]:
        problems.append(f"class counts differ ({a.logits.shape[1]} vs {b.logits.shape[1]})")
    if not problems:
        order_b = {k: i for i, k in enumerate(b.keys.tolist())}
        rows_b = np.array([order_b[k] for k in a.keys.tolist()], dtype=np.int64)
        b = b.take(rows_b)
        wrong = int(np.sum(a.labels != b.labels))
        if not wrong:
            return a, b
        problems.append(f"labels differ on {wrong} images (another class order or label file)")
    raise PairingError(f"Runs A={a.run_dir} and B={b.run_dir} do not hold the same images: {'; '.join(problems)}. "
                       "Compare runs of one dataset, split and image set (e.g. re-run both with the same dataset.root "
                       "and skip_bad_images setting)")


def correct(run: RunImages, metric: str) -> np.ndarray:
    """Per image: right or not under a per-image metric (top-1 is right on any label of a multi-label image)."""
    key = ("correct", metric)
    if key in run.cache:
        return run.cache[key]
    if metric == "top1":
        pred = run.prediction()
        if run.multilabel is not None:
            out = run.multilabel[np.arange(len(pred)), pred] > 0
        else:
            out = pred == run.labels
    elif metric == "top5":
        out = label_rank(run.logits.astype(np.float64), run.labels) < 5
    else:
        raise ValueError(f"{metric} is not a per-image metric ({', '.join(PER_IMAGE_METRICS)})")
    run.cache[key] = out
    return out


def set_metric(run: RunImages, metric: str, rows: np.ndarray) -> float:
    """A whole-set metric of the images `rows` (with repeats: a bootstrap resample)."""
    y = run.labels[rows]
    if metric == "mean_per_class_recall":
        right = correct(run, "top1")[rows]
        n_classes = run.logits.shape[1]
        support = np.bincount(y, minlength=n_classes)
        hits = np.bincount(y, weights=right.astype(float), minlength=n_classes)
        return float(np.mean(hits[support > 0] / support[support > 0]))
    if metric == "macro_f1":  # metrics.macro_f1, over a confusion matrix so that a resample costs one bincount
        n_classes = run.logits.shape[1]
        pred = run.prediction()[rows]
        cm = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
        tp, present = np.diag(cm), cm.sum(1) > 0
        denom = 2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp)
        f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
        return float(f1[present].mean())
    if metric in ("worst_group_top1", "worst_group_top5", "worst_region_top1"):
        if run.metadata is None:
            raise ReportError(f"{metric} of {run.run_dir} needs its group metadata, which its logits.npz lacks: "
                              "re-run the evaluation with this version of zeroshot")
        right = correct(run, "top5" if metric.endswith("top5") else "top1")[rows]
        groups = run.metadata[rows, int(run.groups.get("field", 0))]
        per_group = group_accuracies(right, groups, run.groups.get("exclude") or ())
        return min(per_group.values()) if per_group else float("nan")
    if metric == "mean_average_precision":
        if run.multilabel is None:
            raise ReportError(f"mAP of {run.run_dir} needs its multi-hot labels, which its logits.npz lacks: "
                              "re-run the evaluation with this version of zeroshot")
        return mean_average_precision(run.logits[rows], run.multilabel[rows])
    return float(correct(run, metric)[rows].mean())


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar: a binomial test of only_a successes in only_a + only_b trials at p = 1/2.

    The tail is summed in exact integers (the binomial coefficients over 2^n), so it is exact for any n; the
    null distribution is symmetric, so two-sided is twice the smaller tail, capped at 1."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    term, tail = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def dataset_seed(seed: int, fingerprint: str) -> list[int]:
    """One stream per dataset: independent across a suite, the same for every pair on one dataset."""
    return [int(seed), zlib.crc32(fingerprint.encode())]


def bootstrap_difference(a: RunImages, b: RunImages, metric: str, n_boot: int, seed) -> np.ndarray:
    """[n_boot] metric(A) - metric(B) on the same resampled images."""
    n = len(a.labels)
    if metric in PER_IMAGE_METRICS:
        d = correct(a, metric).astype(np.float64) - correct(b, metric).astype(np.float64)
        return bootstrap_means([d], n_boot, seed)[0]
    out = [set_metric(a, metric, rows) - set_metric(b, metric, rows)
           for idx in resample_indices(n, n_boot, seed) for rows in idx]
    return np.asarray(out)


def tested_metric(metric: str) -> str:
    """The metric McNemar tests: the dataset's own where it is per-image, else top-1."""
    return metric if metric in PER_IMAGE_METRICS else "top1"


def compare_pair(a: RunImages, b: RunImages, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Rows for one pair on one dataset: the tested per-image metric, then the dataset's own if it is not per-image.

    Each row keeps its bootstrap replicates under "boot" (for the suite's mean); writers drop them."""
    a, b = pair(a, b)
    n = len(a.labels)
    rows = []
    stream = dataset_seed(seed, a.fingerprint)
    tested = tested_metric(a.metric)
    for metric in dict.fromkeys([tested, a.metric]):
        all_rows = np.arange(n)
        va, vb = set_metric(a, metric, all_rows), set_metric(b, metric, all_rows)
        boot = bootstrap_difference(a, b, metric, n_boot, stream)
        low, high = percentile_ci(boot)
        row = {"metric": metric, "per_image": metric in PER_IMAGE_METRICS, "a": va, "b": vb, "diff": va - vb,
               "ci_low": low, "ci_high": high, "n_boot": n_boot, "seed": seed, "n_images": n, "boot": boot}
        if metric == tested:
            ra, rb = correct(a, metric), correct(b, metric)
            row.update(both_right=int(np.sum(ra & rb)), only_a=int(np.sum(ra & ~rb)), only_b=int(np.sum(~ra & rb)),
                       both_wrong=int(np.sum(~ra & ~rb)))
            row["mcnemar_p"] = mcnemar_exact(row["only_a"], row["only_b"])
        rows.append(row)
    return rows


def suite_summary(tested_rows: list[dict], alpha: float = 0.05) -> dict:
    """Across datasets, for one pair: Holm-adjusted McNemar p per dataset (written into each row as p_holm and
    verdict), wins/ties/losses of A, and the mean difference over datasets with a CI from the per-dataset
    bootstrap replicates (images resampled within each dataset, independently across datasets)."""
    adjusted = holm([r["mcnemar_p"] for r in tested_rows])
    for r, p in zip(tested_rows, adjusted):
        r["p_holm"] = p
        r["verdict"] = "tie" if p >= alpha else "win" if r["diff"] > 0 else "loss"
    boots = np.stack([r["boot"] for r in tested_rows]) if tested_rows else np.zeros((0, 0))
    mean_boot = boots.mean(axis=0) if len(tested_rows) else np.array([])
    low, high = percentile_ci(mean_boot) if len(mean_boot) else (math.nan, math.nan)
    verdicts = [r["verdict"] for r in tested_rows]
    return {"wins": verdicts.count("win"), "ties": verdicts.count("tie"), "losses": verdicts.count("loss"),
            "n_datasets": len(tested_rows), "mean_diff": float(np.mean([r["diff"] for r in tested_rows])) if tested_rows else math.nan,
            "ci_low": low, "ci_high": high, "alpha": alpha}


def what_changed(a: RunImages, b: RunImages, k: int = 5) -> dict:
    """The k classes whose recall differs most (A - B, as every figure and table of a comparison), and the k most-confused (true, predicted) pairs of
    each run that are not among the other's k: those that appear in B and those that vanish from A."""
    a, b = pair(a, b)
    n_classes = a.logits.shape[1]
    names = a.classnames if len(a.classnames) == n_classes else [str(i) for i in range(n_classes)]
    y = a.labels
    support = np.bincount(y, minlength=n_classes)
    hits = {r: np.bincount(y, weights=(run.logits.argmax(1) == y).astype(float), minlength=n_classes).astype(int)
            for r, run in (("a", a), ("b", b))}
    present = np.flatnonzero(support > 0)
    delta = (hits["a"][present] - hits["b"][present]) / support[present]
    order = present[np.lexsort((present, -np.abs(delta)))][:k]
    classes = [{"class": names[c], "support": int(support[c]), "right_a": int(hits["a"][c]), "right_b": int(hits["b"][c]),
                "recall_change": float((hits["a"][c] - hits["b"][c]) / support[c])} for c in order if hits["a"][c] != hits["b"][c]]

    def confused(run):
        cm = np.bincount(y * n_classes + run.logits.argmax(1), minlength=n_classes**2).reshape(n_classes, n_classes)
        np.fill_diagonal(cm, 0)
        flat = np.flatnonzero(cm)
        top = flat[np.lexsort((flat, -cm.ravel()[flat]))][:k]
        return cm, {divmod(int(i), n_classes) for i in top}

    (cm_a, top_a), (cm_b, top_b) = confused(a), confused(b)
    as_rows = lambda pairs: [{"true": names[t], "predicted": names[p], "count_a": int(cm_a[t, p]), "count_b": int(cm_b[t, p])}  # noqa: E731
                             for t, p in sorted(pairs, key=lambda tp: (-max(cm_a[tp], cm_b[tp]), tp))]
    return {"classes": classes, "appear": as_rows(top_b - top_a), "vanish": as_rows(top_a - top_b)}


def ranks(values: dict[str, float]) -> dict[str, float]:
    """1 = best; tied values share their average rank; a missing (NaN) value gets no rank."""
    have = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
    ordered = sorted(have.values(), reverse=True)
    return {k: float(np.mean([i + 1 for i, x in enumerate(ordered) if x == v])) for k, v in have.items()}
