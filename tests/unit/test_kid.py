"""KID against its closed form and a direct double loop; the FD's bootstrap spread."""

import itertools
import math

import numpy as np
import pytest

from ddpm_repro.evaluation.frechet import bootstrap_indices, frechet_bootstrap, frechet_draws
from ddpm_repro.evaluation.kid import kernel_distance, polynomial_kernel


def _mmd2_by_loops(x, y):
    """The unbiased MMD^2 of Binkowski et al. (2018), written out pair by pair."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[a], y[b]) for a, b in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[a]) for i in range(m) for a in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_mmd_with_a_grouped_jackknife_error():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(0.3, 1.2, size=(9, 3))
    kid, se = kernel_distance(x, y, subsets=3, seed=5)
    assert kid == pytest.approx(_mmd2_by_loops(x, y), rel=1e-12)
    groups = np.array_split(np.random.default_rng(5).permutation(12), 3)
    left_out = [_mmd2_by_loops(np.delete(x, g, axis=0), y) for g in groups]
    expected_se = math.sqrt(2 / 3 * sum((v - np.mean(left_out)) ** 2 for v in left_out))
    assert se == pytest.approx(expected_se, rel=1e-10)
    assert polynomial_kernel(x, y).shape == (12, 9)


def test_kid_matches_the_closed_form_in_one_dimension():
    # d = 1: k(x, y) = (xy + 1)^3 = x^3 y^3 + 3 x^2 y^2 + 3 x y + 1, so
    # MMD^2(P, Q) = (m3P - m3Q)^2 + 3 (m2P - m2Q)^2 + 3 (m1P - m1Q)^2 with raw moments m_k.
    # P = N(0.5, 1): m1 0.5, m2 1.25, m3 0.125 + 1.5; Q = N(0, 1): 0, 1, 0.
    exact = 1.625**2 + 3 * 0.25**2 + 3 * 0.5**2
    rng = np.random.default_rng(1)
    kid, se = kernel_distance(rng.normal(0.5, 1, (4000, 1)), rng.normal(0, 1, (4000, 1)), subsets=20)
    assert abs(kid - exact) < 3 * se
    assert se < 0.1 * exact
    same, same_se = kernel_distance(rng.normal(size=(4000, 1)), rng.normal(size=(4000, 1)), subsets=20)
    assert abs(same) < 3 * same_se  # unbiased: zero in expectation for one distribution


def test_kid_refuses_too_few_samples_per_subset():
    with pytest.raises(ValueError, match="need >= 2 samples left out of each of 2 subsets"):
        kernel_distance(np.zeros((3, 2)), np.zeros((10, 2)), subsets=2)  # without 2 of 3: 1 left
    with pytest.raises(ValueError, match="one D"):
        kernel_distance(np.zeros((8, 2)), np.zeros((10, 3)), subsets=2)


def test_frechet_bootstrap_spread_shrinks_with_more_samples_and_covers_the_truth():
    # The interval is fd -/+ 1.96 bootstrap s.e.
    rng = np.random.default_rng(2)
    mu, sigma = np.zeros(2), np.eye(2)
    small = frechet_bootstrap(rng.normal(0.5, 1, (100, 2)), mu, sigma, rounds=300)
    large = frechet_bootstrap(rng.normal(0.5, 1, (1600, 2)), mu, sigma, rounds=300)
    assert small["fd_low"] == pytest.approx(small["fd"] - 1.96 * small["fd_se"])
    assert small["fd_high"] == pytest.approx(small["fd"] + 1.96 * small["fd_se"])
    assert 2.5 < small["fd_se"] / large["fd_se"] < 6.5  # ~ sqrt(16) = 4
    assert large["fd_low"] < 0.5 < large["fd_high"]  # the true distance: ||0.5 1||^2 = 0.5


def test_bootstrap_draws_are_paired_by_the_seed():
    a, b = bootstrap_indices(50, 7, seed=3), bootstrap_indices(50, 7, seed=3)
    assert a.shape == (7, 50) and (a == b).all() and (a != bootstrap_indices(50, 7, seed=4)).any()
    x = np.random.default_rng(0).normal(size=(50, 2))
    # A set paired with itself: every round's ratio is exactly 1.
    ratio = frechet_draws(x, np.zeros(2), np.eye(2), a) / frechet_draws(x, np.zeros(2), np.eye(2), b)
    assert np.allclose(ratio, 1.0)
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        bootstrap_indices(5, 1)


@pytest.mark.parametrize("n,d", [(30, 5), (6, 40)])  # more rows than features, and fewer
def test_frechet_draws_equal_the_distance_of_each_draws_statistics(n, d):
    from ddpm_repro.evaluation.frechet import feature_statistics, frechet_distance

    rng = np.random.default_rng(4)
    x = rng.normal(0.3, 1.5, (n, d))
    ref = rng.normal(size=(3 * d, d))
    mu, sigma = ref.mean(0), np.cov(ref, rowvar=False)
    indices = bootstrap_indices(n, 5, seed=1)
    expected = [frechet_distance(*feature_statistics(x[rows]), mu, sigma) for rows in indices]
    # rtol: sqrt of the round-off eigenvalues of a rank-deficient covariance (n < d) differs by ~1e-6
    np.testing.assert_allclose(frechet_draws(x, mu, sigma, indices), expected, rtol=1e-7)
