"""The exact reverse process for Gaussian data: a model with a closed form, used to check
the variational bound end to end (tests and `ddpm-repro check-bound`).

If every pixel is x_0 ~ N(mu, s^2) independently, then x_0, x_1, ..., x_T are jointly
Gaussian and every reverse conditional q(x_{t-1} | x_t) is Gaussian with
    E[eps | x_t]       = sqrt(1 - ab_t) (x_t - sqrt(ab_t) mu) / v_t,  v_t = ab_t s^2 + 1 - ab_t
    Var(x_{t-1} | x_t) = beta~_t + coef1_t^2 s^2 (1 - ab_t) / v_t
(ab = alpha-bar; coef1 from DDPM eq. 7). An EPSILON / LEARNED_RANGE model that outputs
these is the true reverse process. For 8-bit data (x_0 rounded to 256 bins) its marginal
likelihood is exactly the probability of each pixel's bin, so its bound exceeds the
discrete NLL only by KL(q(x_1 | x_0) || p(x_1 | x_0)), the cost of noising rounded pixels:
`discretization_gap_bits` computes it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UserError
from .gaussian_diffusion import GaussianDiffusion, LossType, ModelMeanType, ModelVarType
from .likelihood import (
    NATS_TO_BITS,
    NUM_BINS,
    _log_normal_interval,
    discretized_gaussian_log_likelihood,
    mean_flat,
)
from .schedules import SCHEDULES, get_named_beta_schedule


class GaussianDataOracle:
    """model(x_t, t) -> [N, 2C, H, W]: the optimal eps and LEARNED_RANGE v for N(mu, s^2) data.

    Args:
        diffusion: an EPSILON / LEARNED_RANGE process (not respaced).
        mu, sigma: the data distribution of every pixel.
        eps_scale: multiplies the predicted eps; 1 is exact, anything else a wrong model.
    """

    def __init__(self, diffusion: GaussianDiffusion, mu: float, sigma: float, eps_scale: float = 1.0) -> None:
        if (diffusion.model_mean_type, diffusion.model_var_type) != (
            ModelMeanType.EPSILON,
            ModelVarType.LEARNED_RANGE,
        ) or diffusion.timestep_map is not None:
            raise ValueError("the oracle needs an EPSILON / LEARNED_RANGE process that is not respaced")
        self.diffusion, self.mu, self.sigma, self.eps_scale = diffusion, mu, sigma, eps_scale

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        d, s2 = self.diffusion, self.sigma**2
        ab = d._extract("alphas_cumprod", t, x_t)
        v_t = ab * s2 + 1.0 - ab
        eps = torch.sqrt(1.0 - ab) * (x_t - torch.sqrt(ab) * self.mu) / v_t
        coef1 = d._extract("posterior_mean_coef1", t, x_t)
        var_x0 = s2 * (1.0 - ab) / v_t
        variance = d._extract("posterior_variance", t, x_t) + coef1**2 * var_x0
        min_log = d._extract("posterior_log_variance_clipped", t, x_t)
        max_log = d._extract("log_betas", t, x_t)
        frac = (torch.log(variance) - min_log) / (max_log - min_log)
        return torch.cat([eps * self.eps_scale, (2.0 * frac - 1.0).expand_as(x_t)], dim=1)


def sample_8bit_gaussian(
    shape: tuple[int, ...], mu: float, sigma: float, generator: torch.Generator, dtype=torch.float64
) -> Tensor:
    """Draw N(mu, sigma^2) pixels rounded to the 8-bit grid in [-1, 1] (clipped at the ends)."""
    x = mu + sigma * torch.randn(shape, generator=generator, dtype=dtype)
    k = torch.round((x + 1.0) / 2.0 * (NUM_BINS - 1)).clamp(0, NUM_BINS - 1)
    return k / (NUM_BINS - 1) * 2.0 - 1.0


def discretization_gap_bits(diffusion: GaussianDiffusion, points: int = 20001) -> float:
    """KL(N(0, beta_1) || N(0, beta_1) * U[-h, h]) in bits per pixel, h = sqrt(alpha_1)/255.

    The expected excess of the exact model's bound over the 8-bit NLL when the data density
    is flat within each bin (true when sigma >> 2/255): q(x_1 | x_0) is a Gaussian at the
    rounded pixel, the model's p(x_1 | x_0) that Gaussian smeared over the bin. Computed by
    quadrature on +-12 standard deviations.
    """
    beta_1 = float(diffusion.betas[0])
    std = math.sqrt(beta_1)
    h = math.sqrt(1.0 - beta_1) / (NUM_BINS - 1)
    x = torch.linspace(-12 * std - h, 12 * std + h, points, dtype=torch.float64)
    log_q = -0.5 * (x / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))
    log_p = _log_normal_interval((x - h) / std, (x + h) / std) - math.log(2 * h)
    integrand = torch.exp(log_q) * (log_q - log_p)
    return float(torch.trapezoid(integrand, x)) * NATS_TO_BITS


@dataclass(frozen=True)
class BoundCheck:
    """One row of `check_bound`, in bits/dim (means over the images)."""

    schedule: str
    timesteps: int
    true_nll: float
    bound: float
    bound_se: float  # s.e. of (bound - true NLL) over the images
    excess: float  # bound - true NLL
    expected_gap: float  # discretization_gap_bits: what the excess should be
    seconds: float


def check_bound(
    mu: float, sigma: float, images: int, schedules: list[str], timesteps: list[int], seed: int = 0
) -> Iterator[BoundCheck]:
    """The complete bound of the exact reverse process (`GaussianDataOracle`) on `images` 8x8
    images of 8-bit pixels from N(mu, sigma^2), beside their true discrete NLL, for every
    schedule x T; yields one row per pair as it is computed. Every process is built first,
    so a bad schedule or T fails before any work."""
    for schedule in schedules:  # the user's choices: a bad one is named in one line
        if schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {schedule!r}; valid: {', '.join(sorted(SCHEDULES))}")
    if any(T < 1 for T in timesteps) or images < 2:
        raise UserError(f"need T >= 1 and >= 2 images, got T {list(timesteps)} and {images} images")
    processes = [
        (schedule, T, GaussianDiffusion(
            betas=get_named_beta_schedule(schedule, T),
            model_mean_type=ModelMeanType.EPSILON,
            model_var_type=ModelVarType.LEARNED_RANGE,
            loss_type=LossType.VLB,
        ))
        for schedule in schedules
        for T in timesteps
    ]  # fmt: skip
    x = sample_8bit_gaussian((images, 1, 8, 8), mu, sigma, torch.Generator().manual_seed(seed))
    log_sigma = torch.full_like(x, math.log(sigma))
    true_nll = (
        -mean_flat(discretized_gaussian_log_likelihood(x, torch.full_like(x, mu), log_sigma)) * NATS_TO_BITS
    )
    for schedule, T, d in processes:
        start = time.perf_counter()
        out = d.calc_bpd_loop(
            GaussianDataOracle(d, mu, sigma),
            x,
            clip_denoised=False,
            generator=torch.Generator().manual_seed(seed + 1),
            max_batch=8192,
        )
        diff = out["total_bpd"] - true_nll
        yield BoundCheck(
            schedule=schedule,
            timesteps=T,
            true_nll=float(true_nll.mean()),
            bound=float(out["total_bpd"].mean()),
            bound_se=float(diff.std() / images**0.5),
            excess=float(diff.mean()),
            expected_gap=discretization_gap_bits(d),
            seconds=time.perf_counter() - start,
        )
