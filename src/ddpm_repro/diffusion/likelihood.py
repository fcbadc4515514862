"""Likelihood terms of the variational bound, in nats per element.

Callers average over dimensions and divide by log 2 to get bits/dim (`mean_flat`,
`NATS_TO_BITS`). All functions broadcast their arguments elementwise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NATS_TO_BITS = 1.0 / math.log(2.0)
NUM_BINS = 256  # 8-bit data: pixel values k/255 * 2 - 1, k = 0..255 (DDPM sec. 3.3).
# The bin-probability floor of the training losses (L_0 and the AUX term); the reported
# bound (`GaussianDiffusion.calc_bpd_loop`) is exact. README, "Modifications".
TRAIN_MIN_BIN_PROB = 1e-12


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch: [N, ...] -> [N]."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats: the L_t and
    L_T terms of DDPM eq. 5. Arguments broadcast; the result has their broadcast shape."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _log_normal_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(Phi(b) - Phi(a)) for a < b, without cancellation in either tail.

    Intervals on the positive side are reflected (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)),
    so the difference is always taken where the CDF is small and `log_ndtr` is exact.
    """
    flip = a > 0
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    return log_hi + _log1mexp(torch.clamp(log_lo - log_hi, max=0.0))


def discretized_gaussian_log_likelihood(
    x: Tensor, means: Tensor, log_scales: Tensor, min_prob: float = 0.0
) -> Tensor:
    """log p(x) for 8-bit data under a Gaussian discretised into 256 bins (DDPM eq. 13).

    Bin k covers [x - 1/255, x + 1/255]; the first and last bins extend to -inf and +inf,
    so the 256 probabilities sum to one. Uses the exact normal CDF in log space.

    Args:
        x: data in [-1, 1] on the 8-bit grid, any shape.
        means, log_scales: the Gaussian's mean and log standard deviation, same shape.
        min_prob: floor on each bin's probability (0: exact). Training uses
            `TRAIN_MIN_BIN_PROB`, as improved-diffusion's decoder does: a pixel more than
            ~7.4 standard deviations off costs at most -log(1e-12) = 27.6 nats and gives no
            gradient, instead of a cost and gradient that grow without bound.
    Returns:
        log-probabilities in nats, same shape as x.
    """
    if x.shape != means.shape or x.shape != log_scales.shape:
        raise ValueError(
            f"shapes differ: x {tuple(x.shape)}, means {tuple(means.shape)}, "
            f"log_scales {tuple(log_scales.shape)}"
        )
    # float64 inside: float32 log_ndtr has wrong gradients beyond ~40 standard deviations,
    # which a poor x_0 prediction reaches (the AUX term at large t).
    out_dtype = torch.promote_types(x.dtype, means.dtype)
    x, means, log_scales = x.double(), means.double(), log_scales.double()
    half_bin = 1.0 / (NUM_BINS - 1)
    inv_std = torch.exp(-log_scales)
    upper = (x - means + half_bin) * inv_std
    lower = (x - means - half_bin) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)  # first bin: P(X <= x + 1/255)
    log_sf_lower = torch.special.log_ndtr(-lower)  # last bin: P(X >= x - 1/255)
    log_mid = _log_normal_interval(lower, upper)
    log_p = torch.where(
        x < -1.0 + half_bin, log_cdf_upper, torch.where(x > 1.0 - half_bin, log_sf_lower, log_mid)
    )
    if min_prob > 0:
        log_p = log_p.clamp(min=math.log(min_prob))
    return log_p.to(out_dtype)
