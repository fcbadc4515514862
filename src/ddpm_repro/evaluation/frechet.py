"""The Frechet distance between two Gaussians fitted to feature sets (Heusel et al. 2017,
the FID's formula), with a numerically stable trace of the matrix square root, and its
bootstrap spread over the samples.

d^2 = ||mu_1 - mu_2||^2 + Tr(S_1) + Tr(S_2) - 2 Tr((S_1 S_2)^(1/2)).
Tr((S_1 S_2)^(1/2)) = Tr((A S_2 A)^(1/2)) with A = S_1^(1/2): A S_2 A is symmetric positive
semi-definite, so its square root comes from `eigh` with no complex round-off, unlike
scipy's `sqrtm` of the non-symmetric S_1 S_2.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, float64) of features [N, D], N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix; round-off negatives become 0."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    root1 = _psd_sqrt(sigma1)
    middle = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    tr_covmean = np.sqrt(np.clip(middle, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def bootstrap_indices(n: int, rounds: int, seed: int = 0) -> np.ndarray:
    """[rounds, n] row indices drawn with replacement; the same (n, rounds, seed) give the
    same draws, so sets of features of the same samples (the same starting noise) are
    resampled together: a paired bootstrap."""
    if rounds < 2:
        raise ValueError(f"bootstrap rounds must be >= 2, got {rounds}")
    return np.random.default_rng(seed).integers(0, n, (rounds, n))


def frechet_draws(features: np.ndarray, mu: np.ndarray, sigma: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """[rounds]: the Frechet distance of each bootstrap draw `features[indices[r]]` to N(mu, sigma).

    The same value as `frechet_distance` of each draw's statistics, computed without a D x D
    eigendecomposition per round: with A = sigma^(1/2) (once) and Y = features A, the draw's
    Tr((A S A)^(1/2)) is the sum of the singular values of its centred Y / sqrt(N - 1), from
    the eigenvalues of the smaller of its two Gram matrices (N x N when N < D: 2048-d
    Inception features of a few hundred samples).
    """
    x = np.asarray(features, dtype=np.float64)
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    y = x @ _psd_sqrt(sigma)
    n = indices.shape[1]
    if n < 2:
        raise ValueError(f"a bootstrap draw needs >= 2 rows, got {n}")
    out = np.empty(len(indices))
    for r, rows in enumerate(indices):
        xr, yr = x[rows], y[rows]
        mean = xr.mean(axis=0)
        xc, yc = xr - mean, yr - yr.mean(axis=0)
        gram = yc @ yc.T if n <= yc.shape[1] else yc.T @ yc
        tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(gram / (n - 1)), 0, None)).sum()
        diff = mean - mu
        out[r] = diff @ diff + (xc * xc).sum() / (n - 1) + np.trace(sigma) - 2.0 * tr_covmean
    return out


def frechet_bootstrap(
    features: np.ndarray, mu: np.ndarray, sigma: np.ndarray, rounds: int = 200, seed: int = 0
) -> dict[str, float]:
    """The Frechet distance of `features` [N, D] to N(mu, sigma), with its bootstrap spread.

    Each round redraws N rows of `features` with replacement (`bootstrap_indices`) and
    recomputes the distance to the fixed reference statistics. Returns fd (on all rows),
    fd_se (the rounds' standard deviation) and fd_low, fd_high = fd -/+ 1.96 fd_se (a normal
    95% interval). Not the rounds' percentiles: a draw with replacement repeats rows, which
    shrinks the set's spread and raises its distance, so the draws sit above fd (on the
    default run, most of them do) while their spread still measures fd's.
    """
    fd = frechet_distance(*feature_statistics(features), mu, sigma)
    draws = frechet_draws(features, mu, sigma, bootstrap_indices(len(features), rounds, seed))
    se = float(draws.std(ddof=1))
    return {"fd": fd, "fd_se": se, "fd_low": fd - 1.96 * se, "fd_high": fd + 1.96 * se}
