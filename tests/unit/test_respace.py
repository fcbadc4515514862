"""Respacing and DDIM against the base process."""

import pytest
import torch

from ddpm_repro.diffusion import LossType, ModelVarType, respaced, space_timesteps

F64 = torch.float64


@pytest.mark.parametrize(
    "spec,T,expected",
    [
        ("10", 100, [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]),
        (10, 100, [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]),
        ("ddim10", 100, list(range(0, 100, 10))),
        ("ddim3", 10, [0, 3, 6]),
        ("2,3", 10, [0, 4, 5, 7, 9]),
        ([7, 0, 3, 3], 10, [0, 3, 7]),
        ("100", 100, list(range(100))),
    ],
)
def test_space_timesteps(spec, T, expected):
    assert space_timesteps(T, spec) == expected


@pytest.mark.parametrize(
    "spec,message",
    [
        ("101", "section 0 has 100 steps, cannot keep 101"),
        ("ddim200", "exceed T=100"),
        ("ten", "bad respacing spec 'ten'"),
        ("5,0", "counts must be positive"),
        ([100], "subset of 0..99"),
    ],
)
def test_bad_spacing_is_named(spec, message):
    with pytest.raises(ValueError, match=message):
        space_timesteps(100, spec)


def test_respacing_that_keeps_every_step_is_the_base_process(make_diffusion):
    base = make_diffusion("cosine", 200, var=ModelVarType.LEARNED_RANGE, loss=LossType.HYBRID)
    same = respaced(base, "200")
    for key in ("betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped"):
        torch.testing.assert_close(
            torch.from_numpy(same._coefs[key]),
            torch.from_numpy(base._coefs[key]),
            rtol=1e-12,
            atol=1e-15,
        )
    x = torch.randn(4, 1, 3, 3, dtype=F64)
    t = torch.tensor([0, 5, 100, 199])
    model = lambda x, t: torch.cat([x * 0.3 + t.reshape(-1, 1, 1, 1) / 200, torch.tanh(x)], 1)  # noqa: E731
    a, b = base.p_mean_variance(model, x, t), same.p_mean_variance(model, x, t)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_respaced_process_keeps_alpha_bars_and_calls_the_model_with_original_t(make_diffusion):
    base = make_diffusion("linear", 1000)
    spaced = respaced(base, "ddim50")
    keep = space_timesteps(1000, "ddim50")
    torch.testing.assert_close(
        torch.from_numpy(spaced.alphas_cumprod), torch.from_numpy(base.alphas_cumprod[keep])
    )
    seen = []

    def model(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    spaced.p_sample_loop(model, (2, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    assert [int(t[0]) for t in seen] == keep[::-1]
    twice = respaced(spaced, "10")
    assert twice.timestep_map == tuple(keep[i] for i in space_timesteps(50, "10"))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_eta1_on_the_full_schedule_is_ancestral_with_fixed_small(make_diffusion, schedule):
    d = make_diffusion(schedule, 300, var=ModelVarType.FIXED_SMALL)
    x = torch.randn(5, 2, 3, 3, dtype=F64)
    t = torch.tensor([1, 2, 50, 150, 299])
    model = lambda x, t: torch.sin(x) + t.reshape(-1, 1, 1, 1) / 300  # noqa: E731
    ancestral = d.p_mean_variance(model, x, t, clip_denoised=False)
    ddim = d.ddim_mean_variance(model, x, t, eta=1.0, clip_denoised=False)
    torch.testing.assert_close(ddim["mean"], ancestral["mean"])
    torch.testing.assert_close(ddim["variance"], ancestral["variance"])


def test_ddim_eta0_is_deterministic_given_x_T(make_diffusion):
    d = respaced(make_diffusion("cosine", 100), "ddim10")
    model = lambda x, t: 0.5 * x  # noqa: E731
    x_T = torch.randn(3, 1, 4, 4)
    a = d.ddim_sample_loop(model, x_T.shape, noise=x_T, generator=torch.Generator().manual_seed(0))
    b = d.ddim_sample_loop(model, x_T.shape, noise=x_T, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = d.ddim_sample_loop(model, x_T.shape, noise=x_T, eta=1.0, generator=torch.Generator().manual_seed(9))
    assert not torch.allclose(a, c)
