"""Property-based tests of the diffusion core and the config over values and shapes.
Derandomized and without deadlines, so a slow machine never makes them flake."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm_repro.config import ConfigError, config_from_dict, config_to_dict
from ddpm_repro.diffusion import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    get_named_beta_schedule,
    respaced,
    space_timesteps,
)

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)
VALID = [  # (loss, variance) pairs the core accepts
    (LossType.SIMPLE, ModelVarType.FIXED_LARGE),
    (LossType.SIMPLE, ModelVarType.FIXED_SMALL),
    (LossType.VLB, ModelVarType.FIXED_LARGE),
    (LossType.VLB, ModelVarType.LEARNED),
    (LossType.HYBRID, ModelVarType.LEARNED_RANGE),
    (LossType.AUX, ModelVarType.LEARNED_RANGE),
]


@PROPERTY
@given(
    schedule=st.sampled_from(["linear", "cosine"]),
    T=st.integers(30, 300),
    mean=st.sampled_from(list(ModelMeanType)),
    pair=st.sampled_from(VALID),
    n=st.integers(1, 4),
    c=st.sampled_from([1, 3]),
    hw=st.sampled_from([2, 4, 8]),
    seed=st.integers(0, 2**16),
)
def test_every_valid_setting_gives_a_finite_loss_per_example(schedule, T, mean, pair, n, c, hw, seed):
    loss, var = pair
    d = GaussianDiffusion(
        betas=get_named_beta_schedule(schedule, T), model_mean_type=mean, model_var_type=var, loss_type=loss
    )
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((n, c, hw, hw), generator=g) * 2 - 1
    t = torch.randint(0, T, (n,), generator=g)
    out_c = 2 * c if var.is_learned else c

    def model(x, t):
        return torch.tanh(x.repeat(1, out_c // c, 1, 1)) * 0.5

    terms = d.training_losses(model, x0, t, generator=g)
    assert terms["loss"].shape == (n,) and torch.isfinite(terms["loss"]).all()
    assert all(v.shape == (n,) for v in terms.values())


@PROPERTY
@given(schedule=st.sampled_from(["linear", "cosine"]), T=st.integers(30, 2000))
def test_alpha_bar_decreases_from_near_one_towards_zero(schedule, T):
    d = GaussianDiffusion(
        betas=get_named_beta_schedule(schedule, T),
        model_mean_type=ModelMeanType.EPSILON,
        model_var_type=ModelVarType.FIXED_LARGE,
        loss_type=LossType.SIMPLE,
    )
    a = d.alphas_cumprod
    assert np.all(np.diff(a) < 0) and a[0] > 0.99 and 0 <= a[-1] < 0.05


@PROPERTY
@given(T=st.integers(30, 1000), k=st.integers(2, 30))
def test_respacing_keeps_k_sorted_steps_and_the_alpha_bars(T, k):
    base = GaussianDiffusion(
        betas=get_named_beta_schedule("cosine", T),
        model_mean_type=ModelMeanType.EPSILON,
        model_var_type=ModelVarType.LEARNED_RANGE,
        loss_type=LossType.HYBRID,
    )
    kept = sorted(space_timesteps(T, str(k)))
    assert len(kept) == k and len(set(kept)) == k and 0 <= kept[0] and kept[-1] == T - 1
    small = respaced(base, str(k))
    np.testing.assert_allclose(small.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-9, atol=1e-15)


@PROPERTY
@given(
    lr=st.floats(1e-6, 1.0),
    steps=st.integers(1, 10**6),
    batch=st.integers(1, 4096),
    ema=st.floats(0.0, 0.99999),
    lam=st.floats(0.0, 10.0),
)
def test_valid_configs_round_trip_through_plain_dicts(lr, steps, batch, ema, lam):
    data = {
        "train": {"lr": lr, "steps": steps, "batch_size": batch, "ema_rate": ema},
        "losses": {"hybrid": {"hybrid_lambda": lam}},
    }
    cfg = config_from_dict(data, cell="cosine-hybrid")
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert cfg.diffusion.hybrid_lambda == lam and cfg.train.lr == lr


@PROPERTY
@given(bad=st.one_of(st.floats(max_value=-1e-9), st.just(0.0)))
def test_a_non_positive_lr_is_always_named(bad):
    try:
        config_from_dict({"train": {"lr": bad}})
    except ConfigError as exc:
        assert "train.lr must be positive" in str(exc)
    else:
        raise AssertionError(f"lr={bad} was accepted")
