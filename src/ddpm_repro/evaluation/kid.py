"""Kernel distance (KID, Binkowski et al. 2018, sec. 3 and app. D): the unbiased estimate of
the squared maximum mean discrepancy between two feature sets with the cubic polynomial
kernel k(x, y) = (x . y / d + 1)^3, d the feature dimension.

    MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{a != b} k(y_a, y_b)
              - 2/(mn) sum_{i, a} k(x_i, y_a)

Unlike the Frechet distance, this estimate is unbiased at any sample size, so cells scored
with different numbers of samples are comparable. The estimate uses all M samples; its
standard error is the grouped jackknife over disjoint subsets of them: with the samples in
g groups, KID_(k) is the estimate without group k, and
se^2 = (g - 1)/g sum_k (KID_(k) - mean_k KID_(k))^2. The reference set is fixed (as the
training statistics are for the FD), so the s.e. is that of the samples' draw.
"""

from __future__ import annotations

import math

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for features x [M, D] and y [N, D]; returns [M, N]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _off_diagonal_mean(k: np.ndarray) -> float:
    n = len(k)
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def _mmd2(kxx: np.ndarray, kxy_rows: np.ndarray, reference_term: float) -> float:
    """The unbiased MMD^2 from the samples' kernel matrix [m, m], each sample's mean kernel
    value against the reference [m], and the reference's off-diagonal mean."""
    return _off_diagonal_mean(kxx) + reference_term - 2.0 * float(kxy_rows.mean())


def kernel_distance(
    features: np.ndarray, reference: np.ndarray, subsets: int = 10, seed: int = 0
) -> tuple[float, float]:
    """(KID, its standard error) of `features` [M, D] against `reference` [N, D].

    The KID is the unbiased MMD^2 of all M samples; the standard error is the grouped
    jackknife over `subsets` disjoint groups of near-equal size, formed by a permutation
    seeded with `seed` (with the same seed and M, two cells' groups hold the same sample
    indices).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(reference, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be [M, D] and [N, D] with one D, got {x.shape} and {y.shape}")
    if subsets < 2 or len(x) - math.ceil(len(x) / subsets) < 2 or len(y) < 2:
        raise ValueError(f"need >= 2 samples left out of each of {subsets} subsets and >= 2 reference "
                         f"features; got {len(x)} samples and {len(y)} reference features")  # fmt: skip
    reference_term = _off_diagonal_mean(polynomial_kernel(y, y))
    kxx = polynomial_kernel(x, x)
    kxy_rows = polynomial_kernel(x, y).mean(axis=1)
    kid = _mmd2(kxx, kxy_rows, reference_term)
    groups = np.array_split(np.random.default_rng(seed).permutation(len(x)), subsets)
    left_out = []
    for group in groups:
        keep = np.setdiff1d(np.arange(len(x)), group)
        left_out.append(_mmd2(kxx[np.ix_(keep, keep)], kxy_rows[keep], reference_term))
    values = np.array(left_out)
    se = math.sqrt((subsets - 1) / subsets * float(((values - values.mean()) ** 2).sum()))
    return kid, se
