"""Whether a model's probabilities mean anything: ECE, NLL and Brier score, the bins of a reliability diagram, and one
fitted temperature. numpy only; `zeroshot.pipeline` (calibrate, calibration_features) wires this into `eval`.

Probabilities are the model's own (see classifier.probability_kind): softmax of logit_scale x cosine for CLIP,
and for SigLIP its per-class sigmoid (with logit_bias), renormalized over the classes so that the scores of
one image sum to 1. The renormalized distribution is what every number here is computed on; the record names
it (`probability`: "softmax" or "sigmoid_renormalized").
"""
from __future__ import annotations

import math

import numpy as np

from zeroshot.errors import ConfigError
from zeroshot.metrics import stats

N_BINS = 15  # Guo et al. 2017, "On Calibration of Modern Neural Networks"
PROBABILITY_NAMES = {"softmax": "softmax", "sigmoid": "sigmoid_renormalized"}


def probabilities(logits: np.ndarray, kind: str, temperature: float = 1.0) -> np.ndarray:
    """[N, C] class probabilities from logits (logit_scale x cosine, + logit_bias for SigLIP), each row summing to 1.

    A temperature divides the whole logit, bias included: one scalar, the same map either way."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if kind == "softmax":
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    if kind == "sigmoid":
        # sigmoid(z) / sum_c sigmoid(z_c), computed as exp(log_sigmoid - logsumexp(log_sigmoid)) for large |z|
        log_s = -np.logaddexp(0.0, -z)
        log_s = log_s - log_s.max(axis=1, keepdims=True)
        e = np.exp(log_s)
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"probability kind {kind!r} is not one of {', '.join(PROBABILITY_NAMES)}")


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Top-label confidence in equal-width bins (lo, hi]: per bin the count, mean confidence and accuracy."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    # bin b holds (b/n, (b+1)/n]; confidence is at least 1/C > 0, so nothing falls below the first bin
    which = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    right = np.bincount(which, weights=correct.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"edges": np.linspace(0, 1, n_bins + 1), "count": count,
                "confidence": np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan),
                "accuracy": np.where(count > 0, right / np.maximum(count, 1), np.nan)}


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over bins of |bin|/N x |accuracy - mean confidence|, top label."""
    return ece_of_bins(reliability_bins(probs, labels, n_bins))


def ece_of_bins(b: dict) -> float:
    """ECE from `reliability_bins`' output."""
    used = b["count"] > 0
    return float(np.sum(b["count"][used] / b["count"].sum() * np.abs(b["accuracy"][used] - b["confidence"][used])))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (natural log); a zero probability is clipped at 1e-300."""
    p = probs[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.maximum(p, 1e-300))))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier's multi-class score: mean over images of sum over classes of (p_c - [c = label])^2, in [0, 2]."""
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(labels)), np.asarray(labels)] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, kind: str, temperature: float = 1.0) -> dict:
    probs = probabilities(logits, kind, temperature)
    return {"ece": ece(probs, labels), "nll": nll(probs, labels), "brier": brier(probs, labels)}


def fit_temperature(logits: np.ndarray, labels: np.ndarray, kind: str) -> float:
    """The one temperature T minimizing NLL of probabilities(logits / T) on these (held-out) images.

    For softmax the NLL is convex in 1/T, so it is unimodal in log T; for the renormalized sigmoid it need not
    be, so a grid over T in [e^-7, e^7] finds the best bracket first and a golden-section search refines it."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("fit_temperature needs at least one held-out image")

    def loss(log_t: float) -> float:
        return nll(probabilities(logits, kind, math.exp(log_t)), labels)

    grid = np.linspace(-7, 7, 57)
    values = [loss(g) for g in grid]
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fc, fd = loss(c), loss(d)
    while hi - lo > 1e-6:
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - ratio * (hi - lo)
            fc = loss(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + ratio * (hi - lo)
            fd = loss(d)
    best = (lo + hi) / 2
    return float(math.exp(best if loss(best) <= values[i] else grid[i]))


def held_out_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint (fit, scored) row indices: `fraction` of n to fit a temperature on, the rest to score."""
    if not 0 < fraction < 1:
        raise ConfigError(f"calibration.fraction={fraction} must be between 0 and 1 (exclusive), e.g. 0.2")
    return stats.held_out_split(n, min(n - 1, max(1, stats.share(n, fraction))), seed)  # one image each at least


def reliability_curve(label: str, probs: np.ndarray, labels: np.ndarray) -> tuple[str, dict, float]:
    """What a reliability diagram (figures.run.plot_reliability) draws of one set of probabilities: its label, its
    bins and its ECE (a few numbers, where the probabilities are N x C: the figure is drawn in another process)."""
    bins = reliability_bins(probs, labels)
    return label, bins, ece_of_bins(bins)

