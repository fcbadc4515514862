"""Beta schedules against their published closed forms."""

import math

import numpy as np
import pytest

from ddpm_repro.diffusion import SCHEDULES, get_named_beta_schedule


def test_linear_T1000_is_ddpm_betas():
    # DDPM sec. 4: beta_1 = 1e-4 ... beta_T = 0.02, linear, T = 1000.
    np.testing.assert_array_equal(get_named_beta_schedule("linear", 1000), np.linspace(1e-4, 0.02, 1000))


def test_linear_scales_with_T():
    betas = get_named_beta_schedule("linear", 4000)
    assert betas[0] == pytest.approx(2.5e-5) and betas[-1] == pytest.approx(0.005)


@pytest.mark.parametrize("T", [1, 10, 20])
def test_linear_rejects_T_where_last_beta_reaches_one(T):
    with pytest.raises(ValueError, match=rf"T={T}.*last beta"):
        get_named_beta_schedule("linear", T)


def test_linear_accepts_T_21():
    assert get_named_beta_schedule("linear", 21)[-1] < 1


@pytest.mark.parametrize("T", [50, 1000, 4000])
def test_cosine_alpha_bar_is_eq17_where_not_clipped(T):
    s = 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = get_named_beta_schedule("cosine", T)
    alpha_bar = np.cumprod(1 - betas)
    expected = np.array([f(t) / f(0) for t in range(1, T + 1)])
    unclipped = np.cumprod(betas < 0.999).astype(bool)  # every beta up to t unclipped
    assert unclipped.sum() >= T - 1
    np.testing.assert_allclose(alpha_bar[unclipped], expected[unclipped], rtol=1e-9, atol=1e-15)
    assert betas.max() <= 0.999


def test_sigmoid_and_sqrt_follow_their_alpha_bar():
    T = 500
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    ab_sigmoid = lambda t: (sig(3) - sig(6 * t - 3)) / (sig(3) - sig(-3))  # noqa: E731
    ab_sqrt = lambda t: 1 - math.sqrt(t + 1e-4)  # noqa: E731
    for name, ab in (("sigmoid", ab_sigmoid), ("sqrt", ab_sqrt)):
        alpha_bar = np.cumprod(1 - get_named_beta_schedule(name, T))[:-1]  # last step clipped
        expected = np.array([ab(t / T) / ab(0) for t in range(1, T)])
        np.testing.assert_allclose(alpha_bar, expected, rtol=1e-7, err_msg=name)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_is_a_valid_process(name):
    betas = get_named_beta_schedule(name, 1000)
    assert betas.dtype == np.float64 and betas.shape == (1000,)
    assert np.all(betas > 0) and np.all(betas <= 0.999)
    assert np.cumprod(1 - betas)[-1] < 1e-2  # x_T is close to pure noise


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown beta schedule 'cosin'.*cosine, linear, sigmoid, sqrt"):
        get_named_beta_schedule("cosin", 100)


@pytest.mark.parametrize("T", [0, -5, 2.5, True])
def test_bad_T_is_rejected(T):
    with pytest.raises(ValueError, match="num_timesteps"):
        get_named_beta_schedule("cosine", T)
