"""End to end: the full variational bound of the exact reverse process for Gaussian data.

For 8-bit pixels drawn from a discretised N(mu, s^2), the true reverse process is known in
closed form (`GaussianDataOracle`: optimal eps, optimal variance through LEARNED_RANGE).
Its marginal likelihood is the probability of each pixel's bin, so `calc_bpd_loop` must
return the discrete NLL plus the discretisation gap KL(q(x_1|x_0) || p(x_1|x_0)), computed
by quadrature. The bound is a Monte Carlo estimate (one x_t per step), so the tolerance
is 4 standard errors of the per-image difference, measured in the test; we also require
that standard error to be small (<= 0.01 bits/dim), so a noisy bound cannot pass.
A model whose eps is 10% off must land clearly above. Together this guards the KL terms,
the decoder and their units at once; the prior term is ~1e-6 bits/dim here and is checked
against its closed form in test_likelihood.py, the LEARNED_RANGE end points in
test_gaussian_diffusion.py.
"""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ddpm_repro.diffusion import LossType, ModelVarType
from ddpm_repro.diffusion.oracle import (
    GaussianDataOracle,
    discretization_gap_bits,
    sample_8bit_gaussian,
)

MU, SIGMA, N_IMAGES = 0.1, 0.1, 384


def discrete_nll_bits(x: torch.Tensor) -> np.ndarray:
    """-log2 P(bin) per image of N(MU, SIGMA^2) rounded to 256 bins (edge bins open)."""
    v = x.numpy()
    lo = np.where(v < -1 + 1e-6, -np.inf, v - 1 / 255)
    hi = np.where(v > 1 - 1e-6, np.inf, v + 1 / 255)
    return -np.log2(norm.cdf(hi, MU, SIGMA) - norm.cdf(lo, MU, SIGMA)).reshape(len(v), -1).mean(1)


@pytest.mark.parametrize("T", [1000, 4000])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_bound_of_the_exact_model_sits_just_above_the_discrete_nll(make_diffusion, schedule, T):
    d = make_diffusion(schedule, T, var=ModelVarType.LEARNED_RANGE, loss=LossType.VLB)
    x = sample_8bit_gaussian((N_IMAGES, 1, 8, 8), MU, SIGMA, torch.Generator().manual_seed(0))
    true_nll = discrete_nll_bits(x)
    gap = discretization_gap_bits(d)

    def excess(eps_scale: float) -> tuple[float, float]:
        out = d.calc_bpd_loop(
            GaussianDataOracle(d, MU, SIGMA, eps_scale),
            x,
            clip_denoised=False,
            generator=torch.Generator().manual_seed(1),
            max_batch=8192,
        )
        diff = out["total_bpd"].numpy() - true_nll
        return float(diff.mean()), float(diff.std() / np.sqrt(N_IMAGES))

    exact, se = excess(1.0)
    assert se <= 0.01
    assert -4 * se <= exact, f"bound {exact:+.4f} bits below the NLL: not a bound"
    assert abs(exact - gap) <= 4 * se, f"bound - NLL = {exact:.4f}, expected gap {gap:.4f} +- {4 * se:.4f}"
    wrong, wrong_se = excess(1.1)
    assert wrong - gap > 4 * max(se, wrong_se), f"eps off by 10% moved the bound only {wrong:.4f}"


def test_check_bound_rows_match_the_exact_models_gap_and_fail_early_on_a_bad_schedule():
    # `ddpm-repro check-bound`'s experiment: the bound exceeds the true NLL by the expected gap
    from ddpm_repro.diffusion.oracle import check_bound
    from ddpm_repro.errors import UserError

    rows = list(check_bound(MU, SIGMA, images=64, schedules=["linear", "cosine"], timesteps=[50]))
    assert [(r.schedule, r.timesteps) for r in rows] == [("linear", 50), ("cosine", 50)]
    for r in rows:
        assert r.bound == pytest.approx(r.true_nll + r.excess)
        assert abs(r.excess - r.expected_gap) < 4 * r.bound_se + 1e-3, r
    with pytest.raises(UserError, match="unknown schedule 'cosin'"):
        next(check_bound(MU, SIGMA, images=4, schedules=["linear", "cosin"], timesteps=[50]))
    with pytest.raises(UserError, match="T=20 gives a last beta of 1"):
        next(check_bound(MU, SIGMA, images=4, schedules=["linear"], timesteps=[20]))


def test_the_nll_stage_names_the_strata_it_drew_from(make_diffusion, monkeypatch):
    from ddpm_repro.data.arrays import ImageArrays
    from ddpm_repro.diffusion import GaussianDiffusion
    from ddpm_repro.evaluation.nll import evaluate_nll

    d = make_diffusion("linear", 100, var=ModelVarType.LEARNED_RANGE, loss=LossType.VLB)
    used, strata_of = [], GaussianDiffusion.bound_strata

    def recording(self, strata, spacing="geometric"):
        used.append(spacing)
        return strata_of(self, strata, spacing)

    monkeypatch.setattr(GaussianDiffusion, "bound_strata", recording)
    x = sample_8bit_gaussian((4, 1, 8, 8), MU, SIGMA, torch.Generator().manual_seed(0))
    images = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    test = ImageArrays(images=images, labels=np.full(4, -1, np.int64))
    model = GaussianDataOracle(d, MU, SIGMA)
    out = evaluate_nll(model, d, test, 0, 64, strata=5, progress=False)
    assert out["nll_estimate"] == "stratified" and out["nll_strata_spacing"] == "geometric"
    assert used and set(used) == {"geometric"}
    full = evaluate_nll(model, d, test, 0, 512, strata=0, progress=False)
    assert full["nll_estimate"] == "full bound" and full["nll_strata_spacing"] is None
