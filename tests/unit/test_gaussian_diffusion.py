"""GaussianDiffusion: q, p and the losses against DDPM / Improved DDPM closed forms."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from ddpm_repro.diffusion import (
    AuxVariance,
    LossType,
    ModelMeanType,
    ModelVarType,
    discretized_gaussian_log_likelihood,
)

F64 = torch.float64


def batch(n=6, c=2, h=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, c, h, h, generator=g, dtype=F64) * 2 - 1
    noise = torch.randn(n, c, h, h, generator=g, dtype=F64)
    return x0, noise


def timesteps(T, n=6):
    return torch.tensor([0, 1, 2, T // 2, T - 2, T - 1][:n])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_eps_x0_v_round_trips(make_diffusion, schedule):
    d = make_diffusion(schedule, 1000)
    x0, noise = batch()
    t = timesteps(1000)
    x_t = d.q_sample(x0, t, noise=noise)
    torch.testing.assert_close(d.predict_xstart_from_eps(x_t, t, noise), x0, rtol=0, atol=1e-8)
    torch.testing.assert_close(d.predict_eps_from_xstart(x_t, t, x0), noise, rtol=0, atol=1e-8)
    torch.testing.assert_close(d.predict_xstart_from_v(x_t, t, d.velocity(x0, t, noise)), x0)
    posterior_mean, _, _ = d.q_posterior_mean_variance(x0, x_t, t)
    torch.testing.assert_close(d.predict_xstart_from_xprev(x_t, t, posterior_mean), x0)


def test_q_sample_uses_q_mean_variance(make_diffusion):
    d = make_diffusion("cosine", 50)
    x0, noise = batch()
    t = timesteps(50)
    mean, var, log_var = d.q_mean_variance(x0, t)
    torch.testing.assert_close(d.q_sample(x0, t, noise=noise), mean + var.sqrt() * noise)
    torch.testing.assert_close(log_var, var.log())


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_is_ddpm_eq_6_7(make_diffusion, schedule):
    # Derived independently: q(x_{t-1}|x_t,x_0) is proportional to q(x_t|x_{t-1}) q(x_{t-1}|x_0),
    # a product of Gaussians with precisions alpha_t / beta_t and 1 / (1 - ab_{t-1}).
    T = 200
    d = make_diffusion(schedule, T)
    x0, noise = batch()
    t = timesteps(T)[1:]
    x0, noise = x0[1:], noise[1:]
    x_t = d.q_sample(x0, t, noise=noise)
    beta = torch.from_numpy(d.betas)[t].reshape(-1, 1, 1, 1)
    ab_prev = torch.from_numpy(d.alphas_cumprod_prev)[t].reshape(-1, 1, 1, 1)
    alpha = 1 - beta
    variance = 1 / (alpha / beta + 1 / (1 - ab_prev))
    mean = variance * (alpha.sqrt() * x_t / beta + ab_prev.sqrt() * x0 / (1 - ab_prev))
    got_mean, got_var, got_log_var = d.q_posterior_mean_variance(x0, x_t, t)
    torch.testing.assert_close(got_mean, mean)
    torch.testing.assert_close(got_var, variance)
    torch.testing.assert_close(got_log_var, variance.log())


def test_fixed_and_learned_variance_conventions(make_diffusion):
    T = 100
    t = torch.arange(T)
    x = torch.zeros(T, 1, 1, 1, dtype=F64)
    small = make_diffusion("linear", T, var=ModelVarType.FIXED_SMALL)
    large = make_diffusion("linear", T, var=ModelVarType.FIXED_LARGE)
    beta = torch.from_numpy(small.betas)
    beta_tilde = (
        beta
        * (1 - torch.from_numpy(small.alphas_cumprod_prev))
        / (1 - torch.from_numpy(small.alphas_cumprod))
    )
    # At t = 0 beta~ is 0; both fixed variances use beta~ of step 1 there.
    expected_small = torch.cat([beta_tilde[1:2], beta_tilde[1:]])
    expected_large = torch.cat([beta_tilde[1:2], beta[1:]])
    for d, expected in ((small, expected_small), (large, expected_large)):
        out = d.p_mean_variance(lambda x_t, t: torch.zeros_like(x_t), x, t)
        torch.testing.assert_close(out["variance"].flatten(), expected)
        torch.testing.assert_close(out["log_variance"].flatten(), expected.log())
    learned_range = make_diffusion("linear", T, var=ModelVarType.LEARNED_RANGE, loss=LossType.HYBRID)
    for v, expected in ((1.0, expected_large.clone()), (-1.0, expected_small)):
        expected[0] = beta[0] if v == 1.0 else expected[0]  # the upper end is beta_t itself
        out = learned_range.p_mean_variance(
            lambda x_t, t, v=v: torch.cat([torch.zeros_like(x_t), torch.full_like(x_t, v)], 1), x, t
        )
        torch.testing.assert_close(out["variance"].flatten(), expected)
    learned = make_diffusion("linear", T, var=ModelVarType.LEARNED, loss=LossType.VLB)
    out = learned.p_mean_variance(lambda x_t, t: torch.cat([x_t, torch.full_like(x_t, -3.0)], 1), x, t)
    torch.testing.assert_close(out["log_variance"], torch.full_like(x, -3.0))


@pytest.mark.parametrize("mean_type", list(ModelMeanType))
def test_a_model_that_knows_x0_gives_the_posterior_mean(make_diffusion, mean_type):
    d = make_diffusion("cosine", 100, mean=mean_type)
    x0, noise = batch()
    t = timesteps(100)
    x_t = d.q_sample(x0, t, noise=noise)
    target = {
        ModelMeanType.EPSILON: noise,
        ModelMeanType.START_X: x0,
        ModelMeanType.VELOCITY: d.velocity(x0, t, noise),
        ModelMeanType.PREVIOUS_X: d.q_posterior_mean_variance(x0, x_t, t)[0],
    }[mean_type]
    out = d.p_mean_variance(lambda *_: target, x_t, t, clip_denoised=False)
    torch.testing.assert_close(out["pred_xstart"], x0)
    torch.testing.assert_close(out["mean"], d.q_posterior_mean_variance(x0, x_t, t)[0])


def test_clip_denoised_clamps_the_x0_prediction(make_diffusion):
    d = make_diffusion("linear", 100, mean=ModelMeanType.START_X)
    x_t = torch.zeros(2, 1, 2, 2, dtype=F64)
    t = torch.tensor([5, 50])
    wild = lambda x, t: torch.full_like(x, 3.0)  # noqa: E731
    clipped = d.p_mean_variance(wild, x_t, t, clip_denoised=True)
    assert clipped["pred_xstart"].max() == 1.0
    assert d.p_mean_variance(wild, x_t, t, clip_denoised=False)["pred_xstart"].max() == 3.0
    torch.testing.assert_close(clipped["mean"], d.q_posterior_mean_variance(torch.ones_like(x_t), x_t, t)[0])


def test_losses_that_train_the_variance_refuse_a_fixed_one(make_diffusion):
    for loss in (LossType.HYBRID, LossType.AUX):
        with pytest.raises(ValueError, match=f"objective {loss.name} trains the variance.*FIXED_LARGE"):
            make_diffusion(var=ModelVarType.FIXED_LARGE, loss=loss)
    with pytest.raises(ValueError, match="SIMPLE gives no gradient"):
        make_diffusion(var=ModelVarType.LEARNED_RANGE, loss=LossType.SIMPLE)
    with pytest.raises(TypeError, match="loss_type must be a LossType"):
        make_diffusion(loss="hybrid")


def test_wrong_model_output_shape_is_named(make_diffusion):
    d = make_diffusion(var=ModelVarType.LEARNED_RANGE, loss=LossType.HYBRID)
    x0, _ = batch()
    with pytest.raises(ValueError, match=r"expected 4 channels \(LEARNED_RANGE variance\)"):
        d.training_losses(lambda x, t: x, x0, timesteps(100))


class TinyNet(nn.Module):
    """A 1x1-conv model with a time input, enough to carry gradients through every loss."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1).double()
        self.t_scale = nn.Parameter(torch.zeros(out_channels, dtype=F64))

    def forward(self, x, t):
        return self.conv(x) + self.t_scale.reshape(1, -1, 1, 1) * (t.reshape(-1, 1, 1, 1) / 100.0)


LOSS_CELLS = [
    (LossType.SIMPLE, ModelVarType.FIXED_LARGE),
    (LossType.SIMPLE, ModelVarType.FIXED_SMALL),
    (LossType.VLB, ModelVarType.LEARNED_RANGE),
    (LossType.VLB, ModelVarType.LEARNED),
    (LossType.VLB, ModelVarType.FIXED_LARGE),  # DDPM Table 2: the true bound with fixed Sigma
    (LossType.HYBRID, ModelVarType.LEARNED_RANGE),
    (LossType.AUX, ModelVarType.LEARNED_RANGE),
]


@pytest.mark.parametrize("loss,var", LOSS_CELLS, ids=lambda v: v.name)
@pytest.mark.parametrize("mean", list(ModelMeanType), ids=lambda m: m.name)
def test_every_loss_runs_forward_and_backward(make_diffusion, loss, var, mean):
    d = make_diffusion("cosine", 100, mean=mean, var=var, loss=loss)
    net = TinyNet(2, 4 if var.is_learned else 2)
    x0, noise = batch()
    terms = d.training_losses(net, x0, timesteps(100), noise=noise)
    assert terms["loss"].shape == (6,)
    assert all(torch.isfinite(v).all() for v in terms.values())
    terms["loss"].mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_loss_definitions_in_terms_of_vb(make_diffusion):
    T = 100
    x0, noise = batch()
    t = timesteps(T)
    net = TinyNet(2, 4)
    out = {}
    for loss in (LossType.VLB, LossType.HYBRID, LossType.AUX):
        d = make_diffusion(
            "cosine",
            T,
            var=ModelVarType.LEARNED_RANGE,
            loss=loss,
            hybrid_lambda=0.01,
            aux_lambda=0.1,
        )
        out[loss] = d.training_losses(net, x0, t, noise=noise)
    vlb, hybrid, aux = out[LossType.VLB], out[LossType.HYBRID], out[LossType.AUX]
    torch.testing.assert_close(vlb["loss"], T * vlb["vb"])
    torch.testing.assert_close(hybrid["vb"], vlb["vb"])  # the stop-gradient does not change values
    torch.testing.assert_close(hybrid["loss"], hybrid["mse"] + 0.01 * T * hybrid["vb"])
    torch.testing.assert_close(aux["loss"], T * (aux["vb"] + 0.1 * aux["aux"]))


def test_hybrid_vlb_term_gives_no_gradient_to_the_mean_output(make_diffusion):
    d = make_diffusion("linear", 100, var=ModelVarType.LEARNED_RANGE, loss=LossType.HYBRID)
    x0, noise = batch()
    t = timesteps(100)[1:]
    output = torch.randn(5, 4, 4, 4, dtype=F64, requires_grad=True)
    terms = d.training_losses(lambda x, t: output, x0[1:], t, noise=noise[1:])
    (grad,) = torch.autograd.grad(terms["vb"].sum(), output)
    assert grad[:, :2].abs().max() == 0  # the mean channels
    assert grad[:, 2:].abs().max() > 0  # the variance channels
    (grad_mse,) = torch.autograd.grad(terms["mse"].sum(), output)
    assert grad_mse[:, :2].abs().max() > 0


@pytest.mark.parametrize("aux_variance", list(AuxVariance), ids=lambda a: a.name)
def test_aux_at_t1_equals_the_decoder_term(make_diffusion, aux_variance):
    d = make_diffusion(
        "cosine", 100, var=ModelVarType.LEARNED_RANGE, loss=LossType.AUX, aux_variance=aux_variance
    )
    x0, noise = batch()
    t = torch.zeros(6, dtype=torch.long)
    net = TinyNet(2, 4)
    terms = d.training_losses(net, x0, t, noise=noise)
    # At t = 1 (index 0) L_0 = -log p(x_0 | x_1), whose mean is the x_0 prediction, and A_t
    # uses the decoder's variance: D3PM's observation that the two coincide there.
    torch.testing.assert_close(terms["aux"], terms["vb"])
    t = torch.full((6,), 40)
    terms = d.training_losses(net, x0, t, noise=noise)
    assert not torch.allclose(terms["aux"], terms["vb"])


def test_bpd_loop_batches_timesteps_without_changing_the_result(make_diffusion):
    d = make_diffusion("linear", 30, var=ModelVarType.LEARNED_RANGE, loss=LossType.VLB)
    net = TinyNet(2, 4)
    x0 = torch.round((batch(n=3)[0] + 1) * 127.5) / 127.5 - 1
    labels = torch.tensor([0, 1, 2])

    def model(x, t, y):
        assert y.shape[0] == x.shape[0]
        return net(x, t) + y.reshape(-1, 1, 1, 1) * 0.01

    results = []
    for max_batch in (None, 12, 1000):
        with torch.no_grad():
            res = d.calc_bpd_loop(
                model,
                x0,
                model_kwargs={"y": labels},
                max_batch=max_batch,
                generator=torch.Generator().manual_seed(0),
            )
        results.append(res)
    for res in results:
        assert res["vb"].shape == (3, 30) and res["mse"].shape == (3, 30)
        torch.testing.assert_close(res["total_bpd"], res["vb"].sum(1) + res["prior_bpd"])
        assert torch.isfinite(res["total_bpd"]).all()
    # Different batching draws noise in a different order, so compare the noise-free parts.
    torch.testing.assert_close(results[0]["prior_bpd"], results[2]["prior_bpd"])
    torch.testing.assert_close(results[1]["vb"].mean(), results[2]["vb"].mean(), rtol=0.2, atol=0)


def test_sample_loops_are_reproducible_and_shaped(make_diffusion):
    d = make_diffusion("linear", 30)
    net64, net = TinyNet(2, 2), TinyNet(2, 2).float()
    shape = (3, 2, 4, 4)
    with torch.no_grad():
        a = d.p_sample_loop(
            net64,
            shape,
            noise=torch.randn(shape, dtype=F64),
            generator=torch.Generator().manual_seed(1),
        )
        b = d.p_sample_loop(net, shape, generator=torch.Generator().manual_seed(2))
        c = d.p_sample_loop(net, shape, generator=torch.Generator().manual_seed(2))
        e = d.ddim_sample_loop(net, shape, generator=torch.Generator().manual_seed(2))
        f = d.ddim_sample_loop(net, shape, generator=torch.Generator().manual_seed(2))
    assert a.shape == shape and a.dtype == F64
    torch.testing.assert_close(b, c, rtol=0, atol=0)
    torch.testing.assert_close(e, f, rtol=0, atol=0)
    assert b.abs().max() <= 1 + 1e-6 and not torch.equal(b, e)
    assert np.isfinite(e.numpy()).all()


def test_aux_posterior_variance_is_the_x0_posterior_under_a_unit_gaussian_prior(make_diffusion):
    # POSTERIOR: A_t = -log N_disc(x_0; clip(x0_hat), 1 - alpha_bar_t) for t > 0. With the model's
    # x_0 prediction far outside the data range, clipping bounds it: every pixel's error is
    # at most 2, so A_t <= (2^2 / (2 (1 - alpha_bar_t)) + log sqrt(2 pi (1 - alpha_bar_t)) - log(2/255)) nats.
    T = 100
    x0, noise = batch()
    t = torch.full((6,), 60)
    wild = lambda x, t: torch.cat([torch.full_like(x, -50.0), torch.zeros_like(x)], dim=1)  # noqa: E731
    post = make_diffusion(
        "linear", T, var=ModelVarType.LEARNED_RANGE, loss=LossType.AUX, aux_variance=AuxVariance.POSTERIOR
    )
    decoder = make_diffusion(
        "linear", T, var=ModelVarType.LEARNED_RANGE, loss=LossType.AUX, aux_variance=AuxVariance.DECODER
    )
    a_post = post.training_losses(wild, x0, t, noise=noise)["aux"]
    a_dec = decoder.training_losses(wild, x0, t, noise=noise)["aux"]
    v = 1 - post.alphas_cumprod[60]
    bound_nats = 4 / (2 * v) + 0.5 * math.log(2 * math.pi * v) - math.log(2 / 255)
    assert (a_post <= bound_nats / math.log(2) + 1e-9).all()
    # the decoder's variance (~beta_1) has no such bound: each pixel hits training's floor
    floor_bits = -math.log(1e-12) / math.log(2)
    assert (a_dec > 0.9 * floor_bits).all() and (a_dec > 4 * a_post).all()
    # and the value is the discretised Gaussian NLL at that variance, computed directly:
    x_t = post.q_sample(x0, t, noise=noise)
    x0_hat = post.p_mean_variance(wild, x_t, t, clip_denoised=True)["pred_xstart"]
    direct = -discretized_gaussian_log_likelihood(
        x0, means=x0_hat, log_scales=torch.full_like(x0, 0.5 * math.log(v))
    )
    torch.testing.assert_close(a_post, direct.mean(dim=(1, 2, 3)) / math.log(2))


def test_vlb_with_a_fixed_variance_is_the_true_bound_of_that_variance(make_diffusion):
    # DDPM Table 2's "true bound, fixed isotropic Sigma": T L_t with Sigma_t = beta_t.
    d = make_diffusion("linear", 100, var=ModelVarType.FIXED_LARGE, loss=LossType.VLB)
    x0, noise = batch()
    t = timesteps(100)
    net = TinyNet(2, 2)
    terms = d.training_losses(net, x0, t, noise=noise)
    x_t = d.q_sample(x0, t, noise=noise)
    p_out = d.p_mean_variance(net, x_t, t, clip_denoised=False)
    later = t > 0  # at t = 0 FIXED_LARGE uses beta~_1, as DDPM's code does
    log_var = p_out["log_variance"][later, 0, 0, 0]
    torch.testing.assert_close(log_var, torch.log(torch.as_tensor(d.betas[t[later]])))
    torch.testing.assert_close(terms["loss"], 100 * terms["vb"])


def aux_model_diffusion(make_diffusion, schedule="linear", T=1000, var=ModelVarType.LEARNED_RANGE):
    return make_diffusion(schedule, T, var=var, loss=LossType.AUX, aux_variance=AuxVariance.MODEL)


@pytest.mark.parametrize("var", [ModelVarType.LEARNED_RANGE, ModelVarType.LEARNED], ids=lambda v: v.name)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_aux_model_x0_distribution_pushed_through_q_is_the_reverse_step(make_diffusion, schedule, var):
    # Closed form: integral q(x_{t-1} | x_t, x_0) N(x_0; x0_hat, v_t) dx_0
    #   = N(c1 x0_hat + c2 x_t, beta~_t + c1^2 v_t), which must be p_theta(x_{t-1} | x_t).
    d = aux_model_diffusion(make_diffusion, schedule, var=var)
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([1, 2, 10, 300, 700, 998, 999])
    n = len(t)
    x_t = torch.randn(n, 2, 4, 4, generator=g, dtype=F64)
    out = torch.randn(n, 4, 4, 4, generator=g, dtype=F64) * 0.5
    # the upper 40% of (log beta~_t, log beta_t], where v_t is above its floor at every t
    frac = 0.6 + 0.4 * torch.rand(n, 2, 4, 4, generator=g, dtype=F64)
    if var is ModelVarType.LEARNED:
        lo = torch.from_numpy(d._coefs["posterior_log_variance_clipped"])[t].reshape(-1, 1, 1, 1)
        hi = torch.from_numpy(d._coefs["log_betas"])[t].reshape(-1, 1, 1, 1)
        out[:, 2:] = lo + (hi - lo) * frac
    else:
        out[:, 2:] = 2 * frac - 1
    p_out = d.p_mean_variance_from_output(out, x_t, t, clip_denoised=False)
    v = d.implied_xstart_variance(out[:, 2:], t, x_t)
    c1 = torch.from_numpy(d._coefs["posterior_mean_coef1"])[t].reshape(-1, 1, 1, 1)
    mean, beta_tilde, _ = d.q_posterior_mean_variance(p_out["pred_xstart"], x_t, t)
    torch.testing.assert_close(mean, p_out["mean"])
    assert (v > float(d._coefs["posterior_variance_clipped"][0])).all()
    torch.testing.assert_close(beta_tilde + c1**2 * v, p_out["variance"], rtol=1e-9, atol=0)


def test_aux_model_identity_by_monte_carlo(make_diffusion):
    # Draw x_0 ~ N(x0_hat, v_t), then x_{t-1} ~ q(x_{t-1} | x_t, x_0): the draws' mean and
    # variance must match p_theta(x_{t-1} | x_t) within their Monte Carlo error.
    d = aux_model_diffusion(make_diffusion, "cosine", T=200)
    g = torch.Generator().manual_seed(4)
    t = torch.tensor([1, 60, 150, 199])
    x_t = torch.randn(4, 1, 1, 1, generator=g, dtype=F64)
    out = torch.tensor([0.2, -0.5, 0.9, 0.0], dtype=F64).reshape(4, 1, 1, 1)
    out = torch.cat([torch.randn(4, 1, 1, 1, generator=g, dtype=F64), out], dim=1)
    p_out = d.p_mean_variance_from_output(out, x_t, t, clip_denoised=False)
    v = d.implied_xstart_variance(out[:, 1:], t, x_t)
    draws = 200_000
    x0 = p_out["pred_xstart"] + v.sqrt() * torch.randn(4, draws, 1, 1, generator=g, dtype=F64)
    q_mean, q_var, _ = d.q_posterior_mean_variance(x0, x_t.expand_as(x0), t)
    x_prev = q_mean + q_var.sqrt() * torch.randn(x0.shape, generator=g, dtype=F64)
    se_mean = (p_out["variance"].flatten() / draws).sqrt()
    assert ((x_prev.mean(dim=1).flatten() - p_out["mean"].flatten()).abs() < 5 * se_mean).all()
    # the sample variance's s.e. for a Gaussian is variance * sqrt(2 / draws)
    var = p_out["variance"].flatten()
    assert ((x_prev.var(dim=1).flatten() - var).abs() < 5 * var * math.sqrt(2 / draws)).all()


def test_aux_model_variance_is_floored_straight_through_and_exact_at_t0(make_diffusion):
    d = aux_model_diffusion(make_diffusion, "linear", T=100)
    floor = float(d._coefs["posterior_variance_clipped"][0])
    t = torch.tensor([0, 0, 5, 5, 99])
    x_t = torch.zeros(5, 1, 1, 1, dtype=F64)
    var_values = torch.tensor([-3.0, 0.5, -3.0, 0.5, -1.0], dtype=F64).reshape(5, 1, 1, 1).requires_grad_()
    v = d.implied_xstart_variance(var_values, t, x_t)
    sigma = torch.exp(d._model_log_variance(var_values, t, x_t))
    torch.testing.assert_close(v[:2], sigma[:2], rtol=1e-12, atol=0)  # t = 0: the decoder's, no floor
    assert v[0].item() < floor  # even below the floor
    assert v[2].item() == pytest.approx(floor, rel=1e-12) and v[4].item() == pytest.approx(floor, rel=1e-12)
    assert v[3].item() > floor
    (grad,) = torch.autograd.grad(v.sum(), var_values)
    assert (grad.abs() > 0).all()  # floored values still pass their gradient through


@pytest.mark.parametrize("aux_variance", list(AuxVariance), ids=lambda a: a.name)
def test_aux_gradients_reach_the_variance_output_only_in_the_model_form(make_diffusion, aux_variance):
    d = make_diffusion(
        "cosine",
        100,
        mean=ModelMeanType.START_X,
        var=ModelVarType.LEARNED_RANGE,
        loss=LossType.AUX,
        aux_variance=aux_variance,
    )
    x0, noise = batch()
    t = timesteps(100)
    g = torch.Generator().manual_seed(6)
    # an x_0 prediction near the data, so that no pixel reaches training's floor
    near = torch.cat(
        [
            x0 * 0.99 + 0.003 * torch.randn(x0.shape, generator=g, dtype=F64),
            0.3 * torch.randn(x0.shape, generator=g, dtype=F64),
        ],
        dim=1,
    ).requires_grad_()
    terms = d.training_losses(lambda x, t: near, x0, t, noise=noise)
    (grad,) = torch.autograd.grad(terms["aux"].sum(), near)
    assert grad[:, :2].abs().amax(dim=(1, 2, 3)).gt(0).all()  # the mean channels, at every t
    var_grad = grad[:, 2:].abs().amax(dim=(1, 2, 3))
    if aux_variance is AuxVariance.MODEL:
        assert var_grad.gt(0).all()  # at every t, t = 0 included
    else:  # a stop-gradient (DECODER) or a fixed variance (POSTERIOR): none after t = 0
        assert var_grad[1:].eq(0).all()
    if aux_variance is AuxVariance.POSTERIOR:  # clip(x0_hat) cuts the mean off where |x0_hat| > 1
        out = (
            near.detach() + torch.cat([torch.full_like(x0, 2.0), torch.zeros_like(x0)], 1)
        ).requires_grad_()
        (grad,) = torch.autograd.grad(
            d.training_losses(lambda x, t: out, x0, t, noise=noise)["aux"].sum(), out
        )
        assert grad[1:, :2].abs().max() == 0


@pytest.mark.parametrize("mean", [ModelMeanType.EPSILON, ModelMeanType.START_X], ids=lambda m: m.name)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_aux_model_loss_and_gradients_are_finite_at_every_t(make_diffusion, schedule, mean):
    # for random networks, a fresh one and a wild one
    T = 1000
    d = make_diffusion(
        schedule,
        T,
        mean=mean,
        var=ModelVarType.LEARNED_RANGE,
        loss=LossType.AUX,
        aux_variance=AuxVariance.MODEL,
    )
    t = torch.arange(T)
    g = torch.Generator().manual_seed(5)
    x0 = torch.round((torch.rand(T, 1, 2, 2, generator=g) * 2 - 1) * 127.5) / 127.5
    for scale in (1.0, 30.0):  # a fresh network, and a wild one (variance channels far outside [-1, 1])
        net = TinyNet(1, 2).float()
        with torch.no_grad():
            for param in net.parameters():
                param.mul_(scale)
        terms = d.training_losses(net, x0, t, generator=g)
        assert torch.isfinite(terms["aux"]).all() and torch.isfinite(terms["loss"]).all()
        grads = torch.autograd.grad(terms["loss"].mean(), list(net.parameters()))
        assert all(torch.isfinite(gr).all() for gr in grads)


def test_training_floors_the_decoder_bins_and_the_reported_bound_is_exact(make_diffusion):
    # A decoder whose mean is far off: training's L_0 is capped at -log(1e-12) nats per pixel
    # (improved-diffusion's floor), while calc_bpd_loop's L_0 is the exact discretised NLL.
    T = 10
    d = make_diffusion(
        "cosine", T, mean=ModelMeanType.START_X, var=ModelVarType.LEARNED_RANGE, loss=LossType.VLB
    )
    x0 = torch.full((2, 1, 2, 2), -1.0, dtype=F64)
    far = lambda x, t: torch.cat([torch.full_like(x, 1.0), torch.zeros_like(x)], dim=1)  # noqa: E731
    t0 = torch.zeros(2, dtype=torch.long)
    train_l0 = d.training_losses(far, x0, t0)["vb"]
    torch.testing.assert_close(
        train_l0, torch.full((2,), -math.log(1e-12) / math.log(2), dtype=F64), rtol=1e-12, atol=0
    )
    bound_l0 = d.calc_bpd_loop(far, x0, clip_denoised=False)["vb"][:, 0]
    assert (bound_l0 > 3 * train_l0).all()  # ~13 standard deviations off: ~124 bits exact


def _constant_x0_model(x, t):
    """START_X with a constant prediction: every term of the bound is a function of t alone
    (the posterior means differ by coef1_t (x_0 - 0.3), whatever x_t is), so the stratified
    estimate's only noise is the draw of t."""
    return torch.full_like(x, 0.3)


@pytest.mark.parametrize("schedule,spacing", [("linear", "uniform"), ("cosine", "geometric")])
def test_estimate_bpd_with_one_timestep_per_stratum_is_the_full_bound(make_diffusion, schedule, spacing):
    d = make_diffusion(schedule, 40, mean=ModelMeanType.START_X, var=ModelVarType.FIXED_SMALL)
    x0 = torch.round((batch(n=3)[0] + 1) * 127.5) / 127.5 - 1
    full = d.calc_bpd_loop(_constant_x0_model, x0)
    est = d.estimate_bpd(_constant_x0_model, x0, strata=39, max_batch=25, spacing=spacing)
    assert (est["timesteps"] == torch.arange(1, 40)).all()
    torch.testing.assert_close(est["total_bpd"], full["total_bpd"])
    torch.testing.assert_close(est["decoder_bpd"], full["vb"][:, 0])
    torch.testing.assert_close(est["kl_bpd"], full["vb"][:, 1:].sum(1))


@pytest.mark.parametrize(
    "strata,spacing", [(1, "uniform"), (4, "uniform"), (7, "uniform"), (4, "geometric"), (7, "geometric")]
)
def test_estimate_bpd_is_unbiased_and_draws_inside_each_stratum(make_diffusion, strata, spacing):
    T = 30
    d = make_diffusion("cosine", T, mean=ModelMeanType.START_X, var=ModelVarType.FIXED_SMALL)
    x0 = torch.round((batch(n=1)[0] + 1) * 127.5) / 127.5 - 1
    full = d.calc_bpd_loop(_constant_x0_model, x0)["total_bpd"][0]
    many = x0.expand(4000, *x0.shape[1:])
    est = d.estimate_bpd(
        _constant_x0_model, many, strata, generator=torch.Generator().manual_seed(0), spacing=spacing
    )
    edges = d.bound_strata(strata, spacing)
    assert edges[0] == 1 and edges[-1] == T and (edges.diff() >= 1).all()
    drawn = est["timesteps"]
    assert ((drawn >= edges[:-1]) & (drawn < edges[1:])).all()
    assert len(drawn.unique()) == T - 1  # every timestep is reachable
    total = est["total_bpd"]
    se = total.std() / math.sqrt(len(total))
    assert abs(total.mean() - full) < 4 * se
    # A different quantity shows the test can fail: dropping the weights biases the sum.
    unweighted = est["prior_bpd"] + est["decoder_bpd"] + est["kl_bpd"] * strata / (T - 1)
    assert abs(unweighted.mean() - full) > 4 * se


def test_estimate_bpd_draws_depend_on_the_generator_alone(make_diffusion):
    d = make_diffusion("linear", 50)
    net = TinyNet(2, 2)
    x0 = torch.round((batch(n=4)[0] + 1) * 127.5) / 127.5 - 1
    runs = [
        d.estimate_bpd(net, x0, 10, generator=torch.Generator().manual_seed(s), max_batch=mb)
        for s, mb in ((3, None), (3, None), (4, None))
    ]
    torch.testing.assert_close(runs[0]["total_bpd"], runs[1]["total_bpd"], rtol=0, atol=0)
    assert not torch.equal(runs[0]["timesteps"], runs[2]["timesteps"])
    with pytest.raises(ValueError, match="strata must be in 1..T-1 = 49"):
        d.estimate_bpd(net, x0, 50)
    with pytest.raises(ValueError, match="unknown strata spacing 'log'"):
        d.estimate_bpd(net, x0, 5, spacing="log")


@pytest.mark.parametrize("strata", [1, 2, 10, 100, 500, 998, 999])
def test_geometric_strata_are_k_contiguous_strata_narrowest_first(make_diffusion, strata):
    d = make_diffusion("linear", 1000)
    edges = d.bound_strata(strata, "geometric")
    widths = edges.diff()
    assert len(edges) == strata + 1 and edges[0] == 1 and edges[-1] == 1000 and (widths >= 1).all()
    assert (widths[1:] >= widths[:-1] - 1).all()  # never narrower further on, up to rounding
    if strata == 100:  # t = 1..14 each exact, the last stratum ~66 wide (1000^(1/100) = 1.07)
        assert (widths[:14] == 1).all() and 60 < widths[-1] < 70
