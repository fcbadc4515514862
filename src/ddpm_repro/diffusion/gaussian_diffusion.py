"""Gaussian diffusion: the forward process q, the learned reverse process p, their losses
and the variational bound, named after the papers' distributions.

Notation (DDPM, Ho et al. 2020; Improved DDPM, Nichol & Dhariwal 2021): timesteps are
indexed t = 0..T-1 in code, which is t = 1..T in the papers. alpha_t = 1 - beta_t,
alpha_bar_t = prod_{s<=t} alpha_s. Tensors are [N, C, H, W] images in [-1, 1] and
t is an int64 tensor [N]. Every coefficient is precomputed in float64 and gathered per
example by `_extract`; nothing here draws from the global RNG: noise and generators
are arguments.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .likelihood import (
    NATS_TO_BITS,
    TRAIN_MIN_BIN_PROB,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)

Model = Callable[..., Tensor]


class ModelMeanType(enum.Enum):
    """What the network predicts for the mean of p(x_{t-1} | x_t)."""

    EPSILON = "epsilon"  # the noise eps (DDPM eq. 11)
    START_X = "start_x"  # x_0 directly
    VELOCITY = "velocity"  # v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022)
    PREVIOUS_X = "previous_x"  # the posterior mean of x_{t-1} itself (DDPM Table 2, "mu~")


class ModelVarType(enum.Enum):
    """How the variance of p(x_{t-1} | x_t) is chosen (DDPM sec. 3.2; Improved DDPM sec. 3.1)."""

    FIXED_SMALL = "fixed_small"  # beta~_t, the posterior variance (DDPM sec. 3.2)
    FIXED_LARGE = "fixed_large"  # beta_t (DDPM sec. 3.2)
    LEARNED = "learned"  # the extra C output channels are the log-variance
    LEARNED_RANGE = "learned_range"  # the extra channels interpolate log beta~_t..log beta_t (eq. 15)

    @property
    def is_learned(self) -> bool:
        """LEARNED or LEARNED_RANGE: the model outputs 2C channels, the last C for the variance."""
        return self in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE)


class LossType(enum.Enum):
    """Training objective; see `GaussianDiffusion.training_losses`."""

    SIMPLE = "simple"  # DDPM eq. 14
    VLB = "vlb"  # T * L_t (Improved DDPM L_vlb)
    HYBRID = "hybrid"  # L_simple + lambda T L_t, stop-gradient on the mean (Improved DDPM sec. 3.1)
    AUX = "aux"  # T (L_t + lambda A_t): D3PM eq. 5 applied to Gaussian diffusion (extension)

    @property
    def is_extension(self) -> bool:
        """Whether the objective is this project's rather than the papers': AUX applies D3PM's
        auxiliary loss, stated for discrete diffusion, to Gaussian diffusion. The report's
        labels and the MLflow tag say so from here."""
        return self is LossType.AUX

    @property
    def needs_learned_variance(self) -> bool:
        """HYBRID's L_vlb term and AUX exist to train the variance; VLB with a fixed variance
        is the true bound with fixed Sigma (DDPM Table 2), so only it may go either way."""
        return self in (LossType.HYBRID, LossType.AUX)


class AuxVariance(enum.Enum):
    """The x_0-distribution p~(x_0 | x_t) = N(x0_mean, v_t) scored by the AUX loss's A_t.

    MODEL (D3PM's own): the x_0-distribution that the model's reverse step implies. Pushed
    through q(x_{t-1} | x_t, x_0) = N(c1 x_0 + c2 x_t, beta~_t) (DDPM eq. 7),
    N(x_0; x0_hat, v) gives N(x_{t-1}; c1 x0_hat + c2 x_t, beta~_t + c1^2 v), which is
    p_theta(x_{t-1} | x_t) = N(mu_theta, Sigma_theta) exactly when
        v_t = (Sigma_theta(x_t, t) - beta~_t) / c1_t^2,
    with the unclipped x_0 prediction as its mean. Gradients reach the mean and the variance
    output. At t = 0, c1 = 1 and beta~ = 0, so v_0 is the decoder's variance and A_0 = L_0.
    See `GaussianDiffusion.implied_xstart_variance` for the floor that keeps v_t > 0.
    POSTERIOR: N(clip(x0_hat), 1 - alpha_bar_t) for t > 0. Since (beta_t - beta~_t) / c1^2 =
    1 - alpha_bar_t, this is MODEL's distribution for the fixed Sigma = beta_t (the top of
    LEARNED_RANGE), whatever variance the model learned; the clip gives no gradient where
    |x0_hat| > 1. With a fixed variance, lambda T A_t is an eps-MSE weighted by 1 / alpha_bar_t.
    DECODER: the decoder's variance (the model's variance output read at t = 0, through a
    stop-gradient) at every t; the x_0 error at large t is then weighted by ~1 / beta_1.
    All three give A_0 = L_0 (D3PM's condition at the first step).
    """

    MODEL = "model"
    POSTERIOR = "posterior"
    DECODER = "decoder"


def _progress(iterable: Iterable[int], enabled: bool, desc: str, total: int) -> Iterable[int]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm  # only when asked for: the core imports with torch and numpy alone

    return tqdm(iterable, desc=desc, total=total, unit="step")


class GaussianDiffusion:
    """A Gaussian diffusion process over T steps with a chosen parameterisation and loss.

    Args:
        betas: float64 array [T] (see `get_named_beta_schedule`), each in (0, 1].
        model_mean_type: what the model's first C channels predict.
        model_var_type: how the variance is fixed or learned; a learned variance makes
            the model output 2C channels.
        loss_type: the training objective. HYBRID and AUX train the variance and require
            LEARNED or LEARNED_RANGE; SIMPLE leaves it untrained and refuses them; VLB takes
            either (with a fixed variance it is DDPM Table 2's "true bound, fixed Sigma").
        hybrid_lambda: lambda of L_hybrid (Improved DDPM sec. 3.1: 0.001).
        aux_lambda: lambda of the auxiliary x_0 loss (D3PM sec. 3.4: 0.001).
        aux_variance: the variance of p~(x_0 | x_t) in A_t (see `AuxVariance`).
        timestep_map: for a respaced process (`respace.py`), the original timestep of
            each kept step; the model is called with original timesteps.
    """

    def __init__(
        self,
        *,
        betas: np.ndarray | Sequence[float],
        model_mean_type: ModelMeanType,
        model_var_type: ModelVarType,
        loss_type: LossType,
        hybrid_lambda: float = 1e-3,
        aux_lambda: float = 1e-3,
        aux_variance: AuxVariance = AuxVariance.POSTERIOR,
        timestep_map: Sequence[int] | None = None,
    ) -> None:
        for name, value, kind in (
            ("model_mean_type", model_mean_type, ModelMeanType),
            ("model_var_type", model_var_type, ModelVarType),
            ("loss_type", loss_type, LossType),
            ("aux_variance", aux_variance, AuxVariance),
        ):
            if not isinstance(value, kind):
                valid = ", ".join(m.name for m in kind)
                raise TypeError(f"{name} must be a {kind.__name__} ({valid}), got {value!r}")
        if loss_type.needs_learned_variance and not model_var_type.is_learned:
            raise ValueError(
                f"objective {loss_type.name} trains the variance and needs model_var_type LEARNED or "
                f"LEARNED_RANGE, got {model_var_type.name}"
            )
        if loss_type is LossType.SIMPLE and model_var_type.is_learned:
            raise ValueError(
                f"loss SIMPLE gives no gradient to a {model_var_type.name} variance; use "
                "HYBRID (SIMPLE + lambda L_vlb) to learn it, or a FIXED variance"
            )
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) < 2:
            raise ValueError(f"betas must be a 1-D array of at least 2 steps, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas <= 1)):
            raise ValueError("every beta must lie in (0, 1]")
        if timestep_map is not None and len(timestep_map) != len(betas):
            raise ValueError(f"timestep_map has {len(timestep_map)} entries for {len(betas)} betas")

        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.hybrid_lambda = float(hybrid_lambda)
        self.aux_lambda = float(aux_lambda)
        self.aux_variance = aux_variance
        self.betas = betas
        self.num_timesteps = len(betas)
        self.timestep_map = None if timestep_map is None else tuple(int(s) for s in timestep_map)

        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        self.alphas_cumprod = alphas_cumprod
        self.alphas_cumprod_prev = alphas_cumprod_prev
        # beta~_t, DDPM eq. 7. It is 0 at t = 0, so its log is clipped to beta~ of the
        # next step there (the Improved DDPM convention); FIXED_SMALL and the lower end of
        # LEARNED_RANGE use this clipped value.
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        posterior_variance_clipped = np.append(posterior_variance[1], posterior_variance[1:])
        self._coefs: dict[str, np.ndarray] = {
            "betas": betas,
            "log_betas": np.log(betas),
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1.0),
            "posterior_variance": posterior_variance,
            "posterior_variance_clipped": posterior_variance_clipped,
            "posterior_log_variance_clipped": np.log(posterior_variance_clipped),
            # DDPM eq. 7: mu~_t = coef1 x_0 + coef2 x_t
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
            # FIXED_LARGE: beta_t, with beta~_1 at t = 0 (Improved DDPM's code: a better decoder NLL)
            "large_variance": np.append(posterior_variance[1], betas[1:]),
        }
        self._coefs["large_log_variance"] = np.log(self._coefs["large_variance"])
        # AuxVariance.MODEL: v_t = (Sigma - beta~_t) / c1^2 = a_t expm1(log Sigma - log beta~c_t) + b_t
        # with beta~c the clipped beta~ (equal to beta~ for t >= 1), free of the cancellation
        # of Sigma - beta~ in float32 where beta_t ~ beta~_t (large t).
        c1_sq = self._coefs["posterior_mean_coef1"] ** 2
        self._coefs["aux_excess_scale"] = posterior_variance_clipped / c1_sq
        self._coefs["aux_excess_offset"] = (posterior_variance_clipped - posterior_variance) / c1_sq
        self._coefs["log_variance_range"] = np.log(betas) - np.log(posterior_variance_clipped)
        self._device_cache: dict[torch.device, dict[str, Tensor]] = {}

    # ------------------------------------------------------------------ helpers
    def _table(self, name: str, device: torch.device) -> Tensor:
        tables = self._device_cache.get(device)
        if tables is None:
            tables = {k: torch.from_numpy(v).to(device) for k, v in self._coefs.items()}
            if self.timestep_map is not None:
                tables["timestep_map"] = torch.tensor(self.timestep_map, device=device)
            self._device_cache[device] = tables
        return tables[name]

    def _extract(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """Gather coefficient `name` at timesteps t [N], shaped [N, 1, ..., 1] to broadcast
        against `like` [N, ...], in like's dtype."""
        values = self._table(name, t.device)[t].to(like.dtype)
        return values.reshape(t.shape + (1,) * (like.ndim - t.ndim))

    def _model_timesteps(self, t: Tensor) -> Tensor:
        """The timesteps the model sees: original ones for a respaced process."""
        return t if self.timestep_map is None else self._table("timestep_map", t.device)[t]

    def _call_model(self, model: Model, x_t: Tensor, t: Tensor, model_kwargs: dict | None) -> Tensor:
        out = model(x_t, self._model_timesteps(t), **(model_kwargs or {}))
        channels = x_t.shape[1] * (2 if self.model_var_type.is_learned else 1)
        if out.shape[0] != x_t.shape[0] or out.shape[1] != channels or out.shape[2:] != x_t.shape[2:]:
            raise ValueError(
                f"model output has shape {tuple(out.shape)}; expected {channels} channels "
                f"({self.model_var_type.name} variance) for input {tuple(x_t.shape)}"
            )
        return out.to(x_t.dtype)  # losses in the input's precision, whatever autocast did

    @staticmethod
    def _noise_like(x: Tensor, noise: Tensor | None, generator: torch.Generator | None) -> Tensor:
        if noise is not None:
            if noise.shape != x.shape:
                raise ValueError(f"noise shape {tuple(noise.shape)} != x shape {tuple(x.shape)}")
            return noise
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    # ------------------------------------------------------------ forward process q
    def q_mean_variance(self, x_start: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (DDPM eq. 4).

        Returns (mean [N, C, H, W], variance [N, 1, 1, 1], log_variance [N, 1, 1, 1]).
        """
        mean = self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
        variance = 1.0 - self._extract("alphas_cumprod", t, x_start)
        log_variance = self._extract("log_one_minus_alphas_cumprod", t, x_start)
        return mean, variance, log_variance

    def q_sample(
        self,
        x_start: Tensor,
        t: Tensor,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4).

        x_start and noise [N, C, H, W], t int64 [N] -> x_t [N, C, H, W].
        """
        noise = self._noise_like(x_start, noise, generator)
        return (
            self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
            + self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) * noise
        )

    def q_posterior_mean_variance(
        self, x_start: Tensor, x_t: Tensor, t: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I) (DDPM eq. 6-7).

        Returns (mean [N, C, H, W], variance [N, 1, 1, 1], log_variance [N, 1, 1, 1]);
        the log-variance is clipped at t = 0 where beta~ is 0.
        """
        mean = (
            self._extract("posterior_mean_coef1", t, x_t) * x_start
            + self._extract("posterior_mean_coef2", t, x_t) * x_t
        )
        variance = self._extract("posterior_variance", t, x_t)
        log_variance = self._extract("posterior_log_variance_clipped", t, x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------ parameterisations
    def predict_xstart_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) (inverse of DDPM eq. 4)."""
        return (
            self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t
            - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t) * eps
        )

    def predict_eps_from_xstart(self, x_t: Tensor, t: Tensor, x_start: Tensor) -> Tensor:
        """eps = (x_t / sqrt(alpha_bar) - x_0) / sqrt(1/alpha_bar - 1), DDPM eq. 4 solved for eps;
        x_t, x_start [N, C, H, W], t [N]."""
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x_start) / self._extract(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    def predict_xstart_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v (Salimans & Ho 2022, sec. 4)."""
        return (
            self._extract("sqrt_alphas_cumprod", t, x_t) * x_t
            - self._extract("sqrt_one_minus_alphas_cumprod", t, x_t) * v
        )

    def velocity(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0, the VELOCITY target (Salimans & Ho
        2022, sec. 4); x_start, noise [N, C, H, W], t [N] -> v [N, C, H, W]."""
        return (
            self._extract("sqrt_alphas_cumprod", t, x_start) * noise
            - self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) * x_start
        )

    def predict_xstart_from_xprev(self, x_t: Tensor, t: Tensor, xprev: Tensor) -> Tensor:
        """Invert mu~_t = coef1 x_0 + coef2 x_t for x_0 (DDPM eq. 7)."""
        coef1 = self._extract("posterior_mean_coef1", t, x_t)
        coef2 = self._extract("posterior_mean_coef2", t, x_t)
        return (xprev - coef2 * x_t) / coef1

    # ------------------------------------------------------- reverse process p
    def _model_log_variance(self, var_values: Tensor | None, t: Tensor, x_t: Tensor) -> Tensor:
        """log Sigma_theta(x_t, t): [N, 1, 1, 1] when fixed, [N, C, H, W] when learned."""
        vt = self.model_var_type
        if vt is ModelVarType.FIXED_SMALL:
            return self._extract("posterior_log_variance_clipped", t, x_t)
        if vt is ModelVarType.FIXED_LARGE:
            return self._extract("large_log_variance", t, x_t)
        assert var_values is not None
        if vt is ModelVarType.LEARNED:
            return var_values
        # LEARNED_RANGE, Improved DDPM eq. 15: v is not clamped, frac = (v + 1) / 2.
        frac = (var_values + 1.0) / 2.0
        min_log = self._extract("posterior_log_variance_clipped", t, x_t)
        max_log = self._extract("log_betas", t, x_t)
        return frac * max_log + (1.0 - frac) * min_log

    def implied_xstart_variance(self, var_values: Tensor, t: Tensor, x_t: Tensor) -> Tensor:
        """v_t [N, C, H, W], the x_0-variance that the model's learned Sigma_theta implies
        (`AuxVariance.MODEL`): N(x_0; x0_hat, v_t) pushed through q(x_{t-1} | x_t, x_0) is
        N(c1 x0_hat + c2 x_t, beta~_t + c1^2 v_t) = p_theta(x_{t-1} | x_t), so
        v_t = (Sigma_theta - beta~_t) / c1_t^2 (DDPM eq. 7; Improved DDPM eq. 15 for Sigma).

        Computed as (beta~_t / c1^2) expm1(log Sigma - log beta~_t): at large t, beta_t and
        beta~_t agree to ~1e-6 relative, and Sigma - beta~_t in float32 would lose most digits.
        LEARNED_RANGE with v < 0 in eq. 15 puts Sigma below beta~_t and v_t below 0; for
        t >= 1 v_t is floored at beta~_1, the decoder's smallest in-range variance (x_t holds
        no more information on x_0 than x_1 does). The floor is straight-through: the value is
        max(v_t, beta~_1), the gradient that of v_t, so the variance output is never cut off
        from A_t. At t = 0 there is no floor: v_0 = Sigma_theta(x_1, 1) > 0, the decoder's.

        var_values: the model's variance channels [N, C, H, W]; t: int64 [N].
        """
        if self.model_var_type is ModelVarType.LEARNED_RANGE:
            excess = (var_values + 1.0) / 2.0 * self._extract("log_variance_range", t, x_t)
        elif self.model_var_type is ModelVarType.LEARNED:
            excess = var_values - self._extract("posterior_log_variance_clipped", t, x_t)
        else:
            raise ValueError(f"a {self.model_var_type.name} variance implies no x_0-variance to learn")
        v = self._extract("aux_excess_scale", t, x_t) * torch.expm1(excess)
        v = v + self._extract("aux_excess_offset", t, x_t)
        floor = (t > 0).to(v.dtype) * float(self._coefs["posterior_variance_clipped"][0])
        floor = floor.reshape(t.shape + (1,) * (v.ndim - 1))
        return v + (torch.maximum(v, floor) - v).detach()

    def _aux_xstart_distribution(
        self, p_out: dict[str, Tensor], var_values: Tensor, t: Tensor, x_t: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(mean, log-variance) of p~(x_0 | x_t) in A_t, for `aux_variance` (see `AuxVariance`);
        p_out from the unclipped x_0 prediction."""
        x0_mean = p_out["pred_xstart"]
        if self.aux_variance is AuxVariance.MODEL:
            return x0_mean, torch.log(self.implied_xstart_variance(var_values, t, x_t))
        log_variance = self._model_log_variance(var_values.detach(), torch.zeros_like(t), x_t)
        if self.aux_variance is AuxVariance.POSTERIOR:
            # t = 0 keeps the decoder (A_0 = L_0); later t: N(clip(x0_hat), 1 - alpha_bar_t).
            later = t.view(-1, 1, 1, 1) > 0
            prior_log_variance = self._extract("log_one_minus_alphas_cumprod", t, x_t)
            log_variance = torch.where(later, prior_log_variance, log_variance)
            x0_mean = torch.where(later, x0_mean.clamp(-1, 1), x0_mean)
        return x0_mean, log_variance

    def _split_output(self, model_output: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.model_var_type.is_learned:
            mean_out, var_values = torch.chunk(model_output, 2, dim=1)
            return mean_out, var_values
        return model_output, None

    def p_mean_variance_from_output(
        self,
        model_output: Tensor,
        x_t: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
    ) -> dict[str, Tensor]:
        """p(x_{t-1} | x_t) from a model output [N, C or 2C, H, W] already computed; the same
        dict as `p_mean_variance`."""
        mean_out, var_values = self._split_output(model_output)
        log_variance = self._model_log_variance(var_values, t, x_t)

        def process(x0: Tensor) -> Tensor:
            return x0.clamp(-1.0, 1.0) if clip_denoised else x0

        mt = self.model_mean_type
        if mt is ModelMeanType.PREVIOUS_X:
            pred_xstart = process(self.predict_xstart_from_xprev(x_t, t, mean_out))
            mean = mean_out
        else:
            if mt is ModelMeanType.EPSILON:
                pred_xstart = self.predict_xstart_from_eps(x_t, t, mean_out)
            elif mt is ModelMeanType.START_X:
                pred_xstart = mean_out
            else:
                pred_xstart = self.predict_xstart_from_v(x_t, t, mean_out)
            pred_xstart = process(pred_xstart)
            mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
        }

    def p_mean_variance(
        self,
        model: Model,
        x_t: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """p_theta(x_{t-1} | x_t) = N(mean, variance) (DDPM eq. 1; Improved DDPM eq. 15).

        Args:
            model: called as model(x_t, t, **model_kwargs) -> [N, C or 2C, H, W].
            x_t: [N, C, H, W]; t: int64 [N].
            clip_denoised: clamp the predicted x_0 to [-1, 1] before forming the mean.
        Returns:
            dict with mean [N, C, H, W], variance and log_variance ([N, 1, 1, 1] when fixed,
            [N, C, H, W] when learned), pred_xstart [N, C, H, W].
        """
        out = self._call_model(model, x_t, t, model_kwargs)
        return self.p_mean_variance_from_output(out, x_t, t, clip_denoised)

    # ------------------------------------------------------------ the bound
    def _vb_terms_bpd(
        self, p_out: dict[str, Tensor], x_start: Tensor, x_t: Tensor, t: Tensor, min_prob: float = 0.0
    ) -> Tensor:
        """L_t in bits/dim, [N]: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 (DDPM
        eq. 5), and the decoder NLL L_0 = -log p(x_0 | x_1) over 256 bins at t = 0, each bin's
        probability floored at min_prob (training) or exact (0, the reported bound)."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        kl = normal_kl(true_mean, true_log_variance, p_out["mean"], p_out["log_variance"])
        terms = mean_flat(kl) * NATS_TO_BITS
        first = (t == 0).nonzero(as_tuple=True)[0]  # the decoder is costly: only where t = 0
        if len(first):
            log_scales = 0.5 * p_out["log_variance"].expand_as(x_start)[first]
            decoder_nll = -discretized_gaussian_log_likelihood(
                x_start[first], means=p_out["mean"][first], log_scales=log_scales, min_prob=min_prob
            )
            terms = terms.index_put((first,), mean_flat(decoder_nll) * NATS_TO_BITS)
        return terms

    def prior_bpd(self, x_start: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim, [N]. No parameters; not trained."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, device=x_start.device)
        mean, _, log_variance = self.q_mean_variance(x_start, t)
        zeros = torch.zeros_like(mean)
        return mean_flat(normal_kl(mean, log_variance.expand_as(mean), zeros, zeros)) * NATS_TO_BITS

    def training_losses(
        self,
        model: Model,
        x_start: Tensor,
        t: Tensor,
        model_kwargs: dict[str, Any] | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Per-example training loss at timesteps t, with its terms.

        Args:
            x_start: data [N, C, H, W] in [-1, 1]; t: int64 [N]; noise: eps [N, C, H, W].
        Returns:
            dict of [N] tensors: "loss"; "mse" (the parameterisation's target error, DDPM
            eq. 14, always reported); "vb" (L_t in bits/dim) when the loss uses it; "aux"
            (A_t in bits/dim) for AUX. With importance-sampled t the caller multiplies
            "loss" by 1 / (T p_t) to keep it unbiased.

        SIMPLE: mse. VLB: T L_t. HYBRID: mse + lambda T L_t where L_t sees the mean through
        a stop-gradient (Improved DDPM sec. 3.1). AUX: T (L_t + lambda A_t) with
        A_t = -log p~(x_0 | x_t), the discretised Gaussian NLL of x_0 under the
        x_0-distribution `aux_variance` names (MODEL: the one whose push through
        q(x_{t-1} | x_t, x_0) is the model's own reverse step), so that A_0 = L_0 (D3PM
        eq. 5; applying it to Gaussian diffusion is this project's extension). Training floors
        each 8-bit bin's probability in L_0 and A_t at `TRAIN_MIN_BIN_PROB` (the reported bound,
        `calc_bpd_loop`, is exact).
        """
        noise = self._noise_like(x_start, noise, generator)
        x_t = self.q_sample(x_start, t, noise=noise)
        model_output = self._call_model(model, x_t, t, model_kwargs)
        mean_out, var_values = self._split_output(model_output)

        target = {
            ModelMeanType.EPSILON: lambda: noise,
            ModelMeanType.START_X: lambda: x_start,
            ModelMeanType.VELOCITY: lambda: self.velocity(x_start, t, noise),
            ModelMeanType.PREVIOUS_X: lambda: self.q_posterior_mean_variance(x_start, x_t, t)[0],
        }[self.model_mean_type]()
        terms = {"mse": mean_flat((target - mean_out) ** 2)}
        T = self.num_timesteps

        if self.loss_type is LossType.SIMPLE:
            terms["loss"] = terms["mse"]
            return terms

        if self.loss_type is LossType.HYBRID:
            # The stop-gradient keeps L_vlb from moving the mean; it trains Sigma only.
            vb_output = torch.cat([mean_out.detach(), var_values], dim=1)
        else:
            vb_output = model_output
        p_out = self.p_mean_variance_from_output(vb_output, x_t, t, clip_denoised=False)
        terms["vb"] = self._vb_terms_bpd(p_out, x_start, x_t, t, min_prob=TRAIN_MIN_BIN_PROB)

        if self.loss_type is LossType.VLB:
            terms["loss"] = T * terms["vb"]
        elif self.loss_type is LossType.HYBRID:
            terms["loss"] = terms["mse"] + self.hybrid_lambda * T * terms["vb"]
        else:  # AUX
            assert var_values is not None  # AUX needs a learned variance (checked in __init__)
            x0_mean, log_variance = self._aux_xstart_distribution(p_out, var_values, t, x_t)
            terms["aux"] = (
                -mean_flat(
                    discretized_gaussian_log_likelihood(
                        x_start,
                        means=x0_mean,
                        log_scales=0.5 * log_variance.expand_as(x_start),
                        min_prob=TRAIN_MIN_BIN_PROB,
                    )
                )
                * NATS_TO_BITS
            )
            terms["loss"] = T * (terms["vb"] + self.aux_lambda * terms["aux"])
        return terms

    @torch.no_grad()
    def calc_bpd_loop(
        self,
        model: Model,
        x_start: Tensor,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
        max_batch: int | None = None,
        progress: bool = False,
    ) -> dict[str, Tensor]:
        """The full variational bound in bits/dim: L_T + sum_t L_t (DDPM eq. 5), all T terms.

        Each L_t uses one draw of x_t ~ q(x_t | x_0). Several timesteps are stacked in one
        model call, so that a small image batch still fills `max_batch` examples.

        Args:
            x_start: 8-bit data [N, C, H, W] in [-1, 1]; model_kwargs tensors have batch N.
            max_batch: examples per model call (default N, one timestep per call).
        Returns:
            dict: total_bpd [N], prior_bpd [N], vb [N, T] (L_t per t, bits/dim),
            xstart_mse [N, T] and mse [N, T] (eps error) per t.
        """
        n, T = x_start.shape[0], self.num_timesteps
        per_call = max(1, (max_batch or n) // n)
        vb = torch.zeros(n, T, device=x_start.device, dtype=x_start.dtype)
        xstart_mse = torch.zeros_like(vb)
        mse = torch.zeros_like(vb)
        kwargs = model_kwargs or {}
        starts = range(T - 1, -1, -per_call)
        for hi in _progress(starts, progress, "bpd", len(starts)):
            ts = torch.arange(hi, max(hi - per_call, -1), -1, device=x_start.device)
            k = len(ts)
            x0 = x_start.repeat(k, *([1] * (x_start.ndim - 1)))
            t = ts.repeat_interleave(n)
            rep_kwargs = {
                key: v.repeat(k, *([1] * (v.ndim - 1))) if torch.is_tensor(v) and v.shape[:1] == (n,) else v
                for key, v in kwargs.items()
            }
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            x_t = self.q_sample(x0, t, noise=noise)
            p_out = self.p_mean_variance(model, x_t, t, clip_denoised, rep_kwargs)
            terms = self._vb_terms_bpd(p_out, x0, x_t, t)
            eps = self.predict_eps_from_xstart(x_t, t, p_out["pred_xstart"])
            vb[:, ts] = terms.reshape(k, n).T
            xstart_mse[:, ts] = mean_flat((p_out["pred_xstart"] - x0) ** 2).reshape(k, n).T
            mse[:, ts] = mean_flat((eps - noise) ** 2).reshape(k, n).T
        prior = self.prior_bpd(x_start)
        return {
            "total_bpd": vb.sum(dim=1) + prior,
            "prior_bpd": prior,
            "vb": vb,
            "xstart_mse": xstart_mse,
            "mse": mse,
        }

    def bound_strata(self, strata: int, spacing: str = "geometric") -> Tensor:
        """Edges [K + 1] that split the timesteps 1..T-1 into K contiguous strata: stratum k
        is edges[k] <= t < edges[k + 1], each at least one timestep wide.

        "uniform": near-equal sizes. "geometric": edges near T^(k/K), so the first strata
        hold one timestep each and the width grows with t; the terms at small t are the
        large, fast-changing ones, and the wide strata at large t hold small, smooth terms.
        K = T - 1 gives one timestep each either way."""
        T = self.num_timesteps
        if not 0 < strata <= T - 1:
            raise ValueError(f"strata must be in 1..T-1 = {T - 1}, got {strata}")
        if spacing == "uniform":
            return torch.linspace(1, T, strata + 1, dtype=torch.float64).round().long()
        if spacing != "geometric":
            raise ValueError(f"unknown strata spacing {spacing!r}; valid: geometric, uniform")
        edges = [1]
        for k in range(1, strata + 1):
            target = round(T ** (k / strata))
            edges.append(min(max(edges[-1] + 1, target), T - (strata - k)))
        return torch.tensor(edges, dtype=torch.long)

    def estimate_bpd(
        self,
        model: Model,
        x_start: Tensor,
        strata: int,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
        max_batch: int | None = None,
        spacing: str = "geometric",
    ) -> dict[str, Tensor]:
        """An unbiased estimate of the bound L_T + L_0 + sum_{t=1}^{T-1} L_t (DDPM eq. 5), in
        bits/dim, from K + 1 model calls per image instead of T.

        L_T (the prior) and L_0 (the decoder) are exact. The T - 1 KL terms are split into K
        strata (`bound_strata`); each image draws one timestep per stratum, uniformly, and
        its term counts |stratum| times (the inverse of its probability). The sum is then an
        unbiased, stratified estimate of sum_t L_t for that image; its timestep noise is part
        of the spread between images, so the usual standard error over images includes it.
        With K = T - 1 every stratum holds one timestep and the result is the full bound, as
        `calc_bpd_loop` computes it.

        Args:
            x_start: 8-bit data [N, C, H, W] in [-1, 1]; model_kwargs tensors have batch N.
            strata: K in 1..T-1.
            max_batch: examples (image x timestep pairs) per model call (default N).
        Returns:
            dict: total_bpd [N], prior_bpd [N], decoder_bpd [N] (L_0), kl_bpd [N] (the
            estimate of sum_{t>=1} L_t), timesteps [N, K] (the drawn t).
        """
        n, device = x_start.shape[0], x_start.device
        edges = self.bound_strata(strata, spacing).to(device)
        sizes = edges[1:] - edges[:-1]  # [K]
        u = torch.rand(n, strata, generator=generator, device=device, dtype=torch.float64)
        drawn = edges[:-1] + (u * sizes).long()  # [N, K], each in its stratum
        t_all = torch.cat([torch.zeros(n, 1, dtype=torch.long, device=device), drawn], dim=1)
        image = torch.arange(n, device=device).repeat_interleave(strata + 1)  # [N (K + 1)]
        t_flat = t_all.reshape(-1)
        kwargs = model_kwargs or {}
        terms = torch.empty(len(t_flat), device=device, dtype=x_start.dtype)
        step = max_batch or n
        for lo in range(0, len(t_flat), step):
            idx = image[lo : lo + step]
            t = t_flat[lo : lo + step]
            x0 = x_start[idx]
            part_kwargs = {
                key: v[idx] if torch.is_tensor(v) and v.shape[:1] == (n,) else v for key, v in kwargs.items()
            }
            noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
            x_t = self.q_sample(x0, t, noise=noise)
            p_out = self.p_mean_variance(model, x_t, t, clip_denoised, part_kwargs)
            terms[lo : lo + step] = self._vb_terms_bpd(p_out, x0, x_t, t)
        terms = terms.reshape(n, strata + 1)
        decoder = terms[:, 0]
        kl = (terms[:, 1:] * sizes.to(terms.dtype)).sum(dim=1)
        prior = self.prior_bpd(x_start)
        return {
            "total_bpd": prior + decoder + kl,
            "prior_bpd": prior,
            "decoder_bpd": decoder,
            "kl_bpd": kl,
            "timesteps": drawn,
        }

    # ------------------------------------------------------------ sampling
    def p_sample(
        self,
        model: Model,
        x_t: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """One ancestral step x_{t-1} ~ p(x_{t-1} | x_t) (DDPM Algorithm 2); no noise at t = 0.

        Returns dict: sample [N, C, H, W], pred_xstart [N, C, H, W].
        """
        out = self.p_mean_variance(model, x_t, t, clip_denoised, model_kwargs)
        noise = self._noise_like(x_t, noise, generator)
        nonzero = (t != 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def ddim_mean_variance(
        self,
        model: Model,
        x_t: Tensor,
        t: Tensor,
        eta: float = 0.0,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """The DDIM step's Gaussian (Song et al. 2021, eq. 12 and 16).

        x_{t-1} = sqrt(alpha_bar_{t-1}) x0_hat + sqrt(1 - alpha_bar_{t-1} - sigma^2) eps_hat
                  + sigma z, with sigma = eta sqrt((1 - alpha_bar_{t-1}) / (1 - alpha_bar_t))
                  sqrt(1 - alpha_bar_t / alpha_bar_{t-1}).
        eta = 0 is deterministic DDIM; eta = 1 is ancestral sampling with beta~_t.

        Returns dict: mean, variance ([N, 1, 1, 1]), pred_xstart.
        """
        out = self.p_mean_variance(model, x_t, t, clip_denoised, model_kwargs)
        eps = self.predict_eps_from_xstart(x_t, t, out["pred_xstart"])
        ab = self._extract("alphas_cumprod", t, x_t)
        ab_prev = self._extract("alphas_cumprod_prev", t, x_t)
        variance = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        mean = out["pred_xstart"] * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - variance) * eps
        return {"mean": mean, "variance": variance, "pred_xstart": out["pred_xstart"]}

    def ddim_sample(
        self,
        model: Model,
        x_t: Tensor,
        t: Tensor,
        eta: float = 0.0,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """One DDIM step (see `ddim_mean_variance`). Returns dict: sample [N, C, H, W],
        pred_xstart [N, C, H, W]."""
        out = self.ddim_mean_variance(model, x_t, t, eta, clip_denoised, model_kwargs)
        if eta == 0:
            return {"sample": out["mean"], "pred_xstart": out["pred_xstart"]}
        noise = self._noise_like(x_t, noise, generator)
        sample = out["mean"] + torch.sqrt(out["variance"]) * noise  # variance is 0 at t = 0
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def _sample_loop(
        self,
        step: Callable[..., dict[str, Tensor]],
        shape: Sequence[int],
        noise: Tensor | None,
        device: torch.device | str | None,
        generator: torch.Generator | None,
        progress: bool,
        desc: str,
    ) -> Tensor:
        if noise is not None:
            x = noise
        else:
            if device is None:
                device = generator.device if generator is not None else "cpu"
            x = torch.randn(tuple(shape), generator=generator, device=device)
        steps = range(self.num_timesteps - 1, -1, -1)
        for i in _progress(steps, progress, desc, self.num_timesteps):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            x = step(x, t)["sample"]
        return x

    @torch.no_grad()
    def p_sample_loop(
        self,
        model: Model,
        shape: Sequence[int],
        noise: Tensor | None = None,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Ancestral sampling over every step of this process (DDPM Algorithm 2).

        Args:
            shape: [N, C, H, W]; noise: optional x_T of that shape.
            generator: source of x_T and of every step's noise, for reproducible samples.
        Returns:
            x_0 [N, C, H, W] in [-1, 1] (when clip_denoised).
        """

        def step(x: Tensor, t: Tensor) -> dict[str, Tensor]:
            return self.p_sample(model, x, t, clip_denoised, model_kwargs, generator=generator)

        return self._sample_loop(step, shape, noise, device, generator, progress, "sample")

    @torch.no_grad()
    def ddim_sample_loop(
        self,
        model: Model,
        shape: Sequence[int],
        noise: Tensor | None = None,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        eta: float = 0.0,
    ) -> Tensor:
        """DDIM sampling over every step of this process (Song et al. 2021); use a respaced
        process ("ddim50") for fewer steps. Arguments as `p_sample_loop`."""

        def step(x: Tensor, t: Tensor) -> dict[str, Tensor]:
            return self.ddim_sample(model, x, t, eta, clip_denoised, model_kwargs, generator=generator)

        return self._sample_loop(step, shape, noise, device, generator, progress, "ddim")

    def __repr__(self) -> str:
        spaced = "" if self.timestep_map is None else ", respaced"
        return (
            f"GaussianDiffusion(T={self.num_timesteps}{spaced}, mean={self.model_mean_type.name}, "
            f"var={self.model_var_type.name}, loss={self.loss_type.name})"
        )
