"""Noise schedules: beta_1..beta_T as float64 numpy arrays of shape [T].

Each schedule is a short pure function that cites its source. Schedules defined through
a continuous alpha-bar(t), t in [0, 1], are discretised by `betas_for_alpha_bar`
(Improved DDPM eq. 17's construction), which clips beta at `max_beta` so the last step
stays a proper Gaussian.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..errors import UserError

MAX_BETA = 0.999  # Improved DDPM sec. 3.2: clip beta_t to at most 0.999 near t = T.


def betas_for_alpha_bar(
    num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = MAX_BETA
) -> np.ndarray:
    """Betas of a discretised alpha-bar: beta_t = 1 - alpha_bar(t/T) / alpha_bar((t-1)/T).

    Args:
        num_timesteps: T.
        alpha_bar: a decreasing function on [0, 1] with alpha_bar(0) > 0.
        max_beta: upper clip for each beta (Improved DDPM sec. 3.2).
    Returns:
        float64 array [T].
    """
    betas = [
        min(1.0 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
        for i in range(num_timesteps)
    ]
    return np.asarray(betas, dtype=np.float64)


def linear_betas(num_timesteps: int) -> np.ndarray:
    """DDPM (Ho et al. 2020, sec. 4): betas linear from 1e-4 to 0.02 for T = 1000.

    For other T the end points are scaled by 1000/T (Improved DDPM sec. 3.2), so the
    process keeps roughly the same total noise. The last beta, 0.02 * 1000/T, must stay
    below 1, which holds only for T > 20.
    """
    scale = 1000.0 / num_timesteps
    beta_start, beta_end = scale * 1e-4, scale * 0.02
    if beta_end >= 1.0:
        raise UserError(
            f"linear schedule: T={num_timesteps} gives a last beta of {beta_end:g} >= 1 "
            "(betas 1e-4..0.02 scaled by 1000/T); use T > 20 or another schedule"
        )
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def cosine_alpha_bar(t: float, s: float = 0.008) -> float:
    """Improved DDPM eq. 17 before normalisation: f(t) = cos^2(((t + s)/(1 + s)) * pi/2)."""
    return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008) -> np.ndarray:
    """Improved DDPM (Nichol & Dhariwal 2021) eq. 17: alpha_bar(t) = f(t)/f(0), s = 0.008."""
    return betas_for_alpha_bar(num_timesteps, lambda t: cosine_alpha_bar(t, s) / cosine_alpha_bar(0, s))


def sigmoid_betas(num_timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> np.ndarray:
    """Sigmoid schedule of Jabri, Fleet & Chen 2022 (RIN, "Scalable Adaptive Computation for
    Iterative Generation", Algorithm 1 / Appendix): alpha_bar(t) is a rescaled
    1 - sigmoid((t (end - start) + start) / tau), equal to 1 at t = 0 and 0 at t = 1.
    """

    def sig(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    v_start, v_end = sig(start / tau), sig(end / tau)

    def alpha_bar(t: float) -> float:
        return (v_end - sig((t * (end - start) + start) / tau)) / (v_end - v_start)

    return betas_for_alpha_bar(num_timesteps, alpha_bar)


def sqrt_betas(num_timesteps: int, s: float = 1e-4) -> np.ndarray:
    """Square-root schedule of Diffusion-LM (Li et al. 2022, sec. 4.1 / Appendix A):
    alpha_bar(t) = 1 - sqrt(t + s), s = 1e-4, which adds noise quickly at small t.
    """
    return betas_for_alpha_bar(num_timesteps, lambda t: 1.0 - math.sqrt(t + s))


SCHEDULES: dict[str, Callable[[int], np.ndarray]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
    "sqrt": sqrt_betas,
}


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """Betas [T] (float64) of a named schedule: one of `SCHEDULES`.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or a T that
            the schedule cannot represent.
    """
    if name not in SCHEDULES:
        raise UserError(f"unknown beta schedule {name!r}; valid schedules: {', '.join(sorted(SCHEDULES))}")
    if not isinstance(num_timesteps, int) or isinstance(num_timesteps, bool) or num_timesteps < 1:
        raise UserError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
    return SCHEDULES[name](num_timesteps)
