"""The Frechet distance against closed forms and pytorch-fid's implementation."""

import numpy as np
import pytest

from ddpm_repro.evaluation.frechet import feature_statistics, frechet_distance


def test_identical_gaussians_are_at_distance_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    mu, sigma = feature_statistics(a)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_diagonal_covariances_match_the_closed_form():
    # Commuting (diagonal) covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_one_dimension_is_the_wasserstein_2_distance():
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]), np.array([[1.0]])) == (
        pytest.approx(4.0 + (2.0 - 1.0) ** 2)
    )


def test_agrees_with_pytorch_fid_on_real_features():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32))
    y = rng.normal(size=(200, 32)) @ rng.normal(size=(32, 32)) + 0.3
    mu1, s1 = feature_statistics(x)
    mu2, s2 = feature_statistics(y)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        calculate_frechet_distance(mu1, s1, mu2, s2), rel=1e-6
    )


def test_rank_deficient_covariances_stay_finite_and_non_negative():
    # Fewer samples than dimensions: singular covariances, where sqrtm-based code can fail.
    rng = np.random.default_rng(3)
    mu1, s1 = feature_statistics(rng.normal(size=(5, 40)))
    mu2, s2 = feature_statistics(rng.normal(size=(6, 40)))
    d = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(d) and d >= 0


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="shapes differ"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"features must be \[N >= 2, D\]"):
        feature_statistics(np.zeros((1, 3)))
