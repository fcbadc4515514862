"""Gaussian KL, the discretised decoder likelihood and the prior term in closed form."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from ddpm_repro.diffusion import discretized_gaussian_log_likelihood, normal_kl

GRID = torch.arange(256, dtype=torch.float64) / 255 * 2 - 1


def test_kl_of_a_distribution_with_itself_is_zero():
    mean = torch.randn(50, dtype=torch.float64)
    logvar = torch.randn(50, dtype=torch.float64)
    torch.testing.assert_close(normal_kl(mean, logvar, mean, logvar), torch.zeros(50, dtype=torch.float64))


@settings(max_examples=50, deadline=None, derandomize=True)
@given(m1=st.floats(-5, 5), m2=st.floats(-5, 5), lv1=st.floats(-8, 3), lv2=st.floats(-8, 3))
def test_kl_matches_torch_distributions(m1, m2, lv1, lv2):
    p = torch.distributions.Normal(torch.tensor(m1, dtype=torch.float64), math.exp(lv1 / 2))
    q = torch.distributions.Normal(torch.tensor(m2, dtype=torch.float64), math.exp(lv2 / 2))
    expected = torch.distributions.kl_divergence(p, q)
    got = normal_kl(*(torch.tensor(v, dtype=torch.float64) for v in (m1, lv1, m2, lv2)))
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mean", [-1.3, -1.0, -0.37, 0.0, 0.5, 0.999, 2.0])
@pytest.mark.parametrize("log_scale", [-9.0, -6.0, -3.0, -1.0, 0.0, 1.0])
def test_discretized_likelihood_sums_to_one_over_256_bins(mean, log_scale):
    means = torch.full((256,), mean, dtype=torch.float64)
    log_scales = torch.full((256,), log_scale, dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(GRID, means, log_scales)
    assert torch.isfinite(logp).all()
    assert torch.exp(logp).sum().item() == pytest.approx(1.0, abs=1e-9)


def test_discretized_likelihood_equals_normal_cdf_differences():
    mean, scale = 0.1, 0.2
    logp = discretized_gaussian_log_likelihood(
        GRID, torch.full_like(GRID, mean), torch.full_like(GRID, math.log(scale))
    )
    edges = np.concatenate([[-np.inf], (GRID[:-1].numpy() + 1 / 255), [np.inf]])
    expected = np.diff(norm.cdf(edges, mean, scale))
    np.testing.assert_allclose(torch.exp(logp).numpy(), expected, rtol=1e-9, atol=1e-300)


def test_discretized_likelihood_is_finite_far_in_the_tails():
    # 40 standard deviations away the probability underflows float64's CDF; log space does not.
    x = torch.tensor([0.0, 0.9, -0.5], dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(x, x + 0.4, torch.full_like(x, math.log(0.01)))
    assert torch.isfinite(logp).all() and (logp < -700).all()
    x32 = torch.tensor([0.5, -0.5])
    logp32 = discretized_gaussian_log_likelihood(x32, x32 - 0.3, torch.full_like(x32, math.log(0.02)))
    assert torch.isfinite(logp32).all()


def test_discretized_likelihood_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        discretized_gaussian_log_likelihood(GRID, GRID[:5], GRID)


def test_prior_term_equals_its_closed_form(make_diffusion):
    from ddpm_repro.diffusion import ModelVarType

    d = make_diffusion("linear", 200, var=ModelVarType.FIXED_SMALL)
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64) * 2 - 1
    ab = d.alphas_cumprod[-1]
    # KL(N(sqrt(ab) x, 1 - ab) || N(0, 1)) = 0.5 (-1 - log(1 - ab) + (1 - ab) + ab x^2), in bits
    closed = 0.5 * (-1 - math.log(1 - ab) + (1 - ab) + ab * x.numpy() ** 2) / math.log(2)
    np.testing.assert_allclose(d.prior_bpd(x).numpy(), closed.reshape(3, -1).mean(1), rtol=1e-10)


def test_gradients_stay_finite_and_right_far_in_the_tails():
    # float32 log_ndtr returns wrong gradients beyond ~40 sigma; the function computes in
    # float64, so d(-log p)/d(mean) = -(x - mean)/sigma^2 holds even 3e4 sigma away.
    x = torch.tensor([0.0, 0.5])
    means = torch.tensor([300.0, -100.0], requires_grad=True)
    log_scales = torch.full((2,), math.log(0.01))
    logp = discretized_gaussian_log_likelihood(x, means, log_scales)
    (-logp.sum()).backward()
    assert logp.dtype == torch.float32 and torch.isfinite(means.grad).all()
    expected = -(x - means.detach()) / 0.01**2
    torch.testing.assert_close(means.grad, expected, rtol=1e-3, atol=0)


def test_min_prob_floors_each_bin_and_cuts_only_the_floored_gradients():
    x = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    means = torch.tensor([0.0, 0.9, 0.5], dtype=torch.float64, requires_grad=True)
    log_scales = torch.full((3,), math.log(0.01), dtype=torch.float64)
    exact = discretized_gaussian_log_likelihood(x, means, log_scales)
    floored = discretized_gaussian_log_likelihood(x, means, log_scales, min_prob=1e-12)
    assert exact[1] < math.log(1e-12)  # 90 standard deviations off
    assert floored[1].item() == pytest.approx(math.log(1e-12))
    torch.testing.assert_close(floored[[0, 2]], exact[[0, 2]], rtol=0, atol=0)  # near pixels: exact
    (grad,) = torch.autograd.grad(floored.sum(), means)
    assert grad[1] == 0 and abs(grad[0]) < 1e-9  # floored: none; at the mode: zero by symmetry
    (grad_exact,) = torch.autograd.grad(exact.sum(), means)
    assert grad_exact[1] < 0  # the exact one pulls the mean back
