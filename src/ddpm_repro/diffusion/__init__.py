"""The diffusion math of DDPM, Improved DDPM and D3PM's auxiliary loss: pure tensor code.

Imports torch and numpy only, so it runs on a bare GPU machine.
"""

from .gaussian_diffusion import AuxVariance, GaussianDiffusion, LossType, ModelMeanType, ModelVarType
from .likelihood import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .respace import respaced, space_timesteps
from .schedules import SCHEDULES, betas_for_alpha_bar, get_named_beta_schedule
from .timestep_sampler import (
    SAMPLERS,
    LossSecondMomentResampler,
    UniformSampler,
    create_named_schedule_sampler,
)

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "GaussianDiffusion",
    "LossSecondMomentResampler",
    "AuxVariance",
    "LossType",
    "ModelMeanType",
    "ModelVarType",
    "UniformSampler",
    "betas_for_alpha_bar",
    "create_named_schedule_sampler",
    "discretized_gaussian_log_likelihood",
    "get_named_beta_schedule",
    "mean_flat",
    "normal_kl",
    "respaced",
    "space_timesteps",
]
