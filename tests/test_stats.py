"""The shared statistics (zeroshot.metrics.stats) against brute force: the chunked bootstrap gives the numbers the
whole [n_boot, n] index array gives, whatever the block size; the seeded split is one permutation cut in two."""
import numpy as np
import pytest

from zeroshot.metrics import stats


def whole_array(n, n_boot, seed):
    """The resamples as one array, as the prompt experiments drew them before the bootstrap was chunked."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def brute_ci_and_p(correct, reference, idx):
    means = np.array([correct[row].mean() for row in idx])
    diff = correct.astype(float) - reference.astype(float)
    boot = np.array([diff[row].mean() for row in idx]) - diff.mean()
    p = (np.sum(np.abs(boot) >= abs(diff.mean()) - 1e-12) + 1) / (len(idx) + 1)
    return np.quantile(means, 0.025), np.quantile(means, 0.975), p


@pytest.mark.parametrize("chunk", [None, 1, 7 * 101, 1000 * 101])
def test_chunked_bootstrap_equals_the_whole_index_array(monkeypatch, chunk):
    if chunk:
        monkeypatch.setattr(stats, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(4)
    n, n_boot = 101, 300
    correct, reference = rng.random(n) < 0.6, rng.random(n) < 0.5
    idx = whole_array(n, n_boot, 3)
    assert len(list(stats.resample_indices(n, n_boot, 3))) == (1 if chunk in (None, 1000 * 101) else n_boot if chunk == 1 else 43)
    np.testing.assert_array_equal(np.concatenate(list(stats.resample_indices(n, n_boot, 3))), idx)
    low, high, p = brute_ci_and_p(correct, reference, idx)
    assert stats.bootstrap_ci(correct, n_boot, 3) == (low, high)  # exactly: the same resamples, the same sums
    assert stats.paired_bootstrap_pvalue(correct, reference, n_boot, 3) == p
    # several vectors in one pass give each one's numbers
    other = rng.random(n) < 0.7
    together = stats.paired_accuracy_stats([correct, other], reference, n_boot, 3)
    assert together[0] == (low, high, p)
    assert together[1] == (*stats.bootstrap_ci(other, n_boot, 3), stats.paired_bootstrap_pvalue(other, reference, n_boot, 3))


def test_percentile_ci_leaves_out_nan_and_bootstrap_means_shape():
    assert stats.percentile_ci(np.array([np.nan, 1.0, 1.0])) == (1.0, 1.0)
    assert all(np.isnan(stats.percentile_ci(np.array([np.nan]))))
    assert stats.bootstrap_means([], 5, 0).shape == (0, 5)
    assert stats.bootstrap_means([np.ones(4), np.zeros(4)], 6, 0).tolist() == [[1.0] * 6, [0.0] * 6]


def test_held_out_split_is_one_seeded_permutation_cut_in_two():
    perm = np.random.default_rng(7).permutation(25)
    first, rest = stats.held_out_split(25, stats.share(25, 0.5), 7)
    assert stats.share(25, 0.5) == 12  # round half to even, as ever
    np.testing.assert_array_equal(first, np.sort(perm[:12]))
    np.testing.assert_array_equal(rest, np.sort(perm[12:]))
    ordered = stats.held_out_split(25, 5, 7, sort=False)
    np.testing.assert_array_equal(ordered[0], perm[:5])
    np.testing.assert_array_equal(ordered[1], perm[5:])
    assert stats.held_out_split(25, 0, 7)[0].size == 0 and stats.held_out_split(25, 25, 7)[1].size == 0


def test_holm_of_nothing_is_nothing():  # the textbook case is in test_experiments.py
    assert stats.holm([]) == []
