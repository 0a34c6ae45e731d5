"""The statistics every experiment shares, written once, in numpy: the seeded held-out split, the bootstrap and
Holm's correction.

The bootstrap draws its resamples from one seeded stream in blocks of at most ~4M indices, so memory stays flat
(the whole [n_boot, n] index array is 400 MB at ImageNet's 50,000 images and 1,000 resamples). The blocks are
consecutive rows of the array `default_rng(seed).integers(0, n, size=(n_boot, n))` would give: numpy draws the
same numbers whatever the block size, so every published CI and p-value is the one that array gives
(tests/test_stats.py checks it). Several vectors resampled with the same indices (paired: every classifier of a
table against one reference) share one pass over the stream.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

LEVEL = 0.95  # every confidence interval's level
CHUNK_ELEMENTS = 1 << 22  # indices drawn at a time: 32 MB of int64


def held_out_split(n: int, n_first: int, seed, *, sort: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One seeded permutation of range(n) cut after `n_first` rows: (first, rest), disjoint, each sorted (or, with
    sort=False, in the permutation's order). The caller decides how many rows the first part gets."""
    perm = np.random.default_rng(seed).permutation(n)
    first, rest = perm[:n_first], perm[n_first:]
    return (np.sort(first), np.sort(rest)) if sort else (first, rest)


def share(n: int, fraction: float) -> int:
    """round(n * fraction): how many of n images a fraction takes."""
    return int(round(n * float(fraction)))


def resample_indices(n: int, n_boot: int, seed, chunk_elements: int | None = None) -> Iterator[np.ndarray]:
    """[rows, n] blocks of bootstrap indices from one seeded stream, at most ~chunk_elements (CHUNK_ELEMENTS
    unless given) at a time."""
    rng = np.random.default_rng(seed)
    step = max(1, (chunk_elements or CHUNK_ELEMENTS) // max(n, 1))
    for start in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - start), n))


def bootstrap_means(vectors: Sequence[np.ndarray], n_boot: int, seed) -> np.ndarray:
    """[K, n_boot]: the mean of each of K vectors (each [n]) over the same resamples, in one pass over them."""
    vectors = [np.asarray(v) for v in vectors]
    if not vectors:
        return np.zeros((0, n_boot))
    out: list[list[np.ndarray]] = [[] for _ in vectors]
    for idx in resample_indices(len(vectors[0]), n_boot, seed):
        for k, v in enumerate(vectors):
            out[k].append(v[idx].mean(axis=1))
    return np.stack([np.concatenate(o) for o in out])


def percentile_ci(boot: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN replicates left out; NaN if none is left)."""
    alpha = (1 - level) / 2
    boot = boot[~np.isnan(boot)]
    return (float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))) if len(boot) else (np.nan, np.nan)


def pvalue_of(diff_means: np.ndarray, observed: float) -> float:
    """Two-sided p-value of an observed mean difference from its bootstrap replicates: the replicates are centred
    on zero (the null) and compared with the observed difference; +1 smoothing keeps p from being exactly 0."""
    boot = diff_means - observed
    return float((np.sum(np.abs(boot) >= abs(observed) - 1e-12) + 1) / (len(boot) + 1))


def bootstrap_ci(correct: np.ndarray, n_boot: int, seed, level: float = LEVEL) -> tuple[float, float]:
    """Percentile confidence interval of the mean of a 0/1 correctness vector."""
    return percentile_ci(bootstrap_means([correct], n_boot, seed)[0], level)


def paired_bootstrap_pvalue(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int, seed) -> float:
    """Two-sided p-value that a and b (0/1 per image, same images) differ in accuracy, on the same resamples."""
    diff = correct_a.astype(np.float64) - correct_b.astype(np.float64)
    return pvalue_of(bootstrap_means([diff], n_boot, seed)[0], diff.mean())


def paired_accuracy_stats(corrects: Sequence[np.ndarray], reference: np.ndarray, n_boot: int, seed,
                          level: float = LEVEL) -> list[tuple[float, float, float]]:
    """(CI low, CI high, paired p-value against `reference`) of each 0/1 vector, from one pass over the resamples:
    the numbers bootstrap_ci and paired_bootstrap_pvalue give one vector at a time."""
    diffs = [c.astype(np.float64) - reference.astype(np.float64) for c in corrects]
    means = bootstrap_means([*corrects, *diffs], n_boot, seed)
    k = len(corrects)
    return [(*percentile_ci(means[i], level), pvalue_of(means[k + i], diffs[i].mean())) for i in range(k)]


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: controls the family-wise error over many hypotheses tested at once."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
