"""The papers' claims checked on fixture rows: each verdict follows its statistic.

`grid_rows()` is the fixture grid shared with test_report.py: 8 cells with NLL ± s.e., FD
and KID with their standard errors, FID, and Improved-DDPM-Fig.-8 step curves, chosen so
that every claim holds."""

import copy
import math

import pytest

from ddpm_repro.reporting.claims import (
    CONTRADICTED,
    HOLDS,
    NOT_COMPUTED,
    NOT_RESOLVED,
    check_claims,
    respaced_steps,
    verdict_of,
)

SCHEDULES = ("linear", "cosine")
LOSSES = ("simple", "hybrid", "vlb", "aux")
COSINE, HYBRID, VLB, STEPS, AUX = range(5)  # the claims, in check_claims' order

# Made-up numbers shaped like the papers' findings: cosine < linear and hybrid < simple
# in NLL by >= 5 s.e., vlb the best NLL and the worst FD, aux better FD than vlb.
NLL = {"linear": dict(simple=4.70, hybrid=4.45, vlb=3.95, aux=4.00)}
NLL["cosine"] = {k: v - 0.15 for k, v in NLL["linear"].items()}
FD = {
    "linear": dict(simple=12.0, hybrid=11.0, vlb=20.0, aux=15.0),
    "cosine": dict(simple=10.0, hybrid=9.5, vlb=25.0, aux=18.0),
}
FD_SE = 0.3
# FD(n)/FD(T) on the ancestral curve (T = 1000: Fig. 8's ratios are n = 13 and 25): hybrid
# barely moves, the others degrade.
RATIO = {10: 3.5, 13: 3.0, 25: 2.0, 100: 1.5, 1000: 1.0}
HYBRID_RATIO = {10: 1.6, 13: 1.5, 25: 1.08, 100: 1.05, 1000: 1.0}
RATIO_SE = 0.05
# What each entry trains, as reporting/cells.py reads it from the default params.
SETTINGS = {
    "simple": dict(
        objective="simple", mean_type="epsilon", var_type="fixed_large", timestep_sampler="uniform"
    ),
    "hybrid": dict(
        objective="hybrid", mean_type="epsilon", var_type="learned_range", timestep_sampler="uniform"
    ),
    "vlb": dict(
        objective="vlb", mean_type="epsilon", var_type="learned_range", timestep_sampler="loss-second-moment"
    ),
    "aux": dict(
        objective="aux", mean_type="epsilon", var_type="learned_range", timestep_sampler="loss-second-moment"
    ),
}


def step_curve(fd: float, ratios: dict[int, float], ratio_se: float = RATIO_SE) -> list[dict]:
    ancestral = [
        {
            "method": "ancestral", "steps": n, "samples": 100, "fd_classifier": fd * r,
            "fd_classifier_se": FD_SE, "fd_ratio": r, "fd_ratio_se": ratio_se,
        }
        for n, r in ratios.items()
    ]  # fmt: skip
    ddim = [
        {"method": "ddim", "steps": n, "samples": 100, "fd_classifier": fd * 1.2, "fd_classifier_se": FD_SE}
        for n in (10, 50, 100)
    ]
    return ancestral + ddim


def grid_rows() -> list[dict]:
    """A fresh full grid in grid order (linear first), every field of the contract filled."""
    rows = []
    for s in SCHEDULES:
        for loss in LOSSES:
            fd = FD[s][loss]
            rows.append(
                {
                    "cell": f"{s}-{loss}",
                    "schedule": s,
                    "loss": loss,
                    **SETTINGS[loss],
                    "steps": 1000,
                    "final_loss": 0.1 if loss in ("simple", "hybrid") else 4.0,
                    "nll_bpd": NLL[s][loss],
                    "nll_bpd_se": 0.02,
                    "nll_images": 64,
                    "fd_classifier": fd,
                    "fd_classifier_se": FD_SE,
                    "fd_classifier_low": fd - 2 * FD_SE,
                    "fd_classifier_high": fd + 2 * FD_SE,
                    "kid_classifier": fd / 1000,
                    "kid_classifier_se": FD_SE / 1000,
                    "is_classifier": 7.5,
                    "fd_samples": 100,
                    "fid_inception": fd * 2,
                    "fid_inception_se": 2 * FD_SE,
                    "step_curve": step_curve(fd, HYBRID_RATIO if loss == "hybrid" else RATIO),
                    "loss_curve": {"step": [50.0, 100.0, 150.0], "loss": [1.0, 0.5, 0.4]},
                }
            )
    return rows


def row(rows: list[dict], cell: str) -> dict:
    return next(r for r in rows if r["cell"] == cell)


def verdicts(rows: list[dict]) -> list[str]:
    return [c.verdict for c in check_claims(rows)]


@pytest.mark.parametrize(
    "z,verdict",
    [(2.0, HOLDS), (7.3, HOLDS), (1.99, NOT_RESOLVED), (0.0, NOT_RESOLVED), (-1.5, NOT_RESOLVED)]
    + [(-2.0, CONTRADICTED), (-math.inf, CONTRADICTED)],
)
def test_the_three_verdicts_follow_two_standard_errors(z, verdict):
    assert verdict_of(z) == verdict


@pytest.mark.parametrize(
    "gap_in_se,verdict", [(3.0, HOLDS), (1.0, NOT_RESOLVED), (-1.0, NOT_RESOLVED), (-3.0, CONTRADICTED)]
)
def test_known_means_and_standard_errors_give_each_verdict(gap_in_se, verdict):
    # Cells with known NLL means and standard errors (unpaired), FD and KID the same way.
    rows = grid_rows()
    simple, hybrid = row(rows, "linear-simple"), row(rows, "linear-hybrid")
    hybrid["nll_bpd"] = simple["nll_bpd"] - gap_in_se * math.hypot(0.02, 0.02)
    assert verdicts(rows)[HYBRID] == verdict
    aux, vlb = row(rows, "linear-aux"), row(rows, "linear-vlb")
    for key in ("fd_classifier", "kid_classifier", "fid_inception"):
        aux[key] = vlb[key] - gap_in_se * math.hypot(aux[f"{key}_se"], vlb[f"{key}_se"])
    claim = check_claims(rows)[AUX]
    assert claim.verdict == verdict and f"z = {gap_in_se:+.2f}" in claim.evidence


def test_steps_at_the_papers_ratios():
    assert respaced_steps(4000) == (50, 100) and respaced_steps(1000) == (13, 25)
    assert respaced_steps(50) == (1, 1)


def test_every_claim_holds_on_the_fixture_grid():
    claims = check_claims(grid_rows())
    assert [c.verdict for c in claims] == [HOLDS] * 5
    assert (
        "NLL cosine 4.550 vs linear 4.700 (margin +0.150 bits/dim, z = +5.30 unpaired)"
        in claims[COSINE].evidence
    )
    assert (
        "cosine: FD(n)/FD(T) n=13: simple 3.00 ± 0.05 vs hybrid 1.50 ± 0.05 (z = +21.21)"
        in claims[STEPS].evidence
    )
    assert "Respaced to 13 and 25 of T = 1000" in claims[STEPS].claim
    assert "KID×10³ aux 15.00 ± 0.30 vs vlb 20.00 ± 0.30 (z = +11.79)" in claims[AUX].evidence


@pytest.mark.parametrize("loss", ["simple", "hybrid"])
def test_linear_clearly_better_than_cosine_contradicts_the_schedule_claim(loss):
    rows = grid_rows()
    row(rows, f"linear-{loss}")["nll_bpd"] = row(rows, f"cosine-{loss}")["nll_bpd"] - 0.1
    assert verdicts(rows)[COSINE] == CONTRADICTED


def test_a_difference_under_two_standard_errors_is_not_resolved():
    rows = grid_rows()
    row(rows, "cosine-hybrid")["nll_bpd"] = row(rows, "cosine-simple")["nll_bpd"] - 0.03  # ~1.1 s.e.
    claim = check_claims(rows)[HYBRID]
    assert claim.verdict == NOT_RESOLVED and "z = +1.06 unpaired" in claim.evidence


@pytest.mark.parametrize(
    "cell,key,value,verdict",
    [
        ("cosine-hybrid", "nll_bpd", 3.5, CONTRADICTED),  # hybrid's NLL clearly below vlb's
        ("cosine-simple", "fd_classifier", 30.0, CONTRADICTED),  # simple's FD clearly above vlb's
        ("cosine-simple", "fid_inception", 100.0, CONTRADICTED),  # FID disagrees with FD
        ("cosine-simple", "kid_classifier", 0.0248, NOT_RESOLVED),  # KID within noise of vlb's
        ("linear-simple", "fd_classifier", 30.0, HOLDS),  # linear is not the papers' setting
    ],
)
def test_vlb_claim_is_checked_on_cosine_only(cell, key, value, verdict):
    rows = grid_rows()
    row(rows, cell)[key] = value
    claim = check_claims(rows)[VLB]
    assert claim.verdict == verdict and claim.evidence.startswith("cosine: ")


def test_simple_keeping_quality_as_well_as_hybrid_leaves_the_steps_claim_unresolved():
    rows = grid_rows()
    row(rows, "cosine-simple")["step_curve"] = step_curve(10.0, HYBRID_RATIO)
    verdict = verdicts(rows)
    assert verdict[STEPS] == NOT_RESOLVED and verdict[:STEPS] == [HOLDS] * 3
    row(rows, "cosine-hybrid")["step_curve"] = step_curve(10.0, RATIO)
    row(rows, "linear-simple")["step_curve"] = step_curve(10.0, HYBRID_RATIO)
    row(rows, "linear-hybrid")["step_curve"] = step_curve(10.0, RATIO)
    assert verdicts(rows)[STEPS] == CONTRADICTED  # hybrid clearly loses more


@pytest.mark.parametrize("missing_steps", [13, 25])
def test_steps_claim_needs_the_papers_ratios_on_the_curve(missing_steps):
    rows = grid_rows()
    r = row(rows, "linear-hybrid")
    assert verdicts(rows)[STEPS] == HOLDS
    r["step_curve"] = [
        p for p in r["step_curve"] if not (p["method"] == "ancestral" and p["steps"] == missing_steps)
    ]
    assert verdicts(rows)[STEPS] == NOT_COMPUTED


def test_steps_claim_is_checked_on_the_schedules_that_drew_the_curve():
    # evaluate.curve_schedules: [cosine]: the linear cells have no curve, and are not a part
    rows = grid_rows()
    for loss in LOSSES:
        row(rows, f"linear-{loss}")["step_curve"] = []
    claim = check_claims(rows)[STEPS]
    assert claim.verdict == HOLDS and claim.evidence.startswith("cosine: ") and "linear" not in claim.evidence
    for loss in LOSSES:  # no curve anywhere: not computed, and it says so for both schedules
        row(rows, f"cosine-{loss}")["step_curve"] = []
    claim = check_claims(rows)[STEPS]
    assert claim.verdict == NOT_COMPUTED and "linear" in claim.evidence and "cosine" in claim.evidence


def test_aux_clearly_worse_than_vlb_contradicts_the_aux_claim():
    rows = grid_rows()
    row(rows, "cosine-aux")["fd_classifier"] = 40.0
    claim = check_claims(rows)[AUX]
    assert (
        claim.verdict == CONTRADICTED
        and "FD aux 40.00 ± 0.30 vs vlb 25.00 ± 0.30 (z = -35.36)" in claim.evidence
    )


def test_a_quality_figure_without_its_standard_error_is_not_computed():
    rows = grid_rows()
    del row(rows, "linear-aux")["fd_classifier_se"]
    claim = check_claims(rows)[AUX]
    assert claim.verdict == NOT_COMPUTED and "s.e. is missing" in claim.evidence


def test_missing_inputs_give_not_computed_never_a_verdict():
    kept = ("cell", "schedule", "loss", *SETTINGS["simple"])
    rows = [{k: r[k] for k in kept} for r in grid_rows()]
    claims = check_claims(rows)
    assert [c.verdict for c in claims] == [NOT_COMPUTED] * 5
    assert all("not computed" in c.evidence for c in claims)


def test_a_contradiction_outweighs_a_missing_part_and_a_missing_part_an_unresolved_one():
    rows = grid_rows()
    row(rows, "cosine-hybrid")["nll_bpd"] = row(rows, "cosine-simple")["nll_bpd"] - 0.03  # not resolved
    assert verdicts(rows)[HYBRID] == NOT_RESOLVED
    del row(rows, "linear-hybrid")["nll_bpd"]
    assert verdicts(rows)[HYBRID] == NOT_COMPUTED
    row(rows, "cosine-simple")["nll_bpd"] = 3.0
    assert verdicts(rows)[HYBRID] == CONTRADICTED


def test_check_claims_does_not_change_its_input():
    rows = grid_rows()
    before = copy.deepcopy(rows)
    check_claims(rows)
    assert rows == before


def test_per_image_nlls_give_the_paired_standard_error():
    # Same images and noise in every cell: per-image NLLs move together, so a 0.03 bits/dim
    # gain that is not resolved unpaired (~1.1 s.e.) is many paired standard errors.
    rows = grid_rows()
    simple, hybrid = row(rows, "cosine-simple"), row(rows, "cosine-hybrid")
    base = [4.0 + 0.5 * math.sin(i) for i in range(64)]  # spread 0.35: unpaired s.e. ~0.044
    simple["nll_per_image"] = [v + 0.03 + 0.002 * math.cos(3 * i) for i, v in enumerate(base)]
    hybrid["nll_per_image"] = base
    simple["nll_bpd"], hybrid["nll_bpd"] = (sum(r["nll_per_image"]) / 64 for r in (simple, hybrid))
    claim = check_claims(rows)[HYBRID]
    assert claim.verdict == HOLDS
    paired = [p for p in claim.evidence.split("; ") if p.startswith("cosine")]
    assert paired and " paired)" in paired[0]


def seeded_rows(nll_gain: list[float]) -> list[dict]:
    """The fixture grid trained with len(nll_gain) seeds (seed 0 unsuffixed, then -s1, ...):
    with seed i, every hybrid cell's NLL is its simple cell's minus nll_gain[i]."""
    rows = []
    for seed, gain in enumerate(nll_gain):
        for r in grid_rows():
            suffix = f"-s{seed}" if seed else ""
            r = {**r, "cell": r["cell"] + suffix, "seed": seed}
            rows.append(r)
        simple = {r["schedule"]: r for r in rows[-8:] if r["loss"] == "simple"}
        for r in rows[-8:]:
            if r["loss"] == "hybrid":
                r["nll_bpd"] = simple[r["schedule"]]["nll_bpd"] - gain
    return rows


@pytest.mark.parametrize(
    "gains,verdict,z",
    [
        ([0.10, 0.12, 0.08], HOLDS, 8.66),  # mean 0.10, s.e. across seeds 0.0115
        ([0.10, -0.10, 0.05], NOT_RESOLVED, 0.28),
        ([-0.10, -0.12, -0.08], CONTRADICTED, -8.66),
    ],
)
def test_two_or_more_seeds_compare_seed_by_seed(gains, verdict, z):
    claim = check_claims(seeded_rows(gains))[HYBRID]
    assert claim.verdict == verdict
    assert f"z = {z:+.2f} paired over 3 seeds" in claim.evidence and "(means of 3 seeds)" in claim.evidence


def test_one_seed_in_common_falls_back_to_the_within_cell_standard_errors():
    rows = seeded_rows([0.25, 0.25])
    rows = [r for r in rows if not (r["loss"] == "simple" and r["seed"] == 1)]  # simple has seed 0 only
    claim = check_claims(rows)[HYBRID]
    assert "unpaired" in claim.evidence and "seed" not in claim.evidence


def test_the_one_seed_in_common_is_the_pair_compared():
    rows = seeded_rows([0.25, -0.25])  # hybrid beats simple with seed 0, loses with seed 1
    # hybrid has seeds 0 and 1, simple seed 1 only: the one pair is seed 1's, not the first rows
    rows = [r for r in rows if not (r["loss"] == "simple" and r["seed"] == 0)]
    claim = check_claims(rows)[HYBRID]
    assert claim.verdict == CONTRADICTED and "no seed in common" not in claim.evidence


def test_cells_without_a_seed_in_common_say_which_seeds_they_compare():
    rows = seeded_rows([0.25, 0.25])
    rows = [r for r in rows if (r["seed"] == 0) == (r["loss"] == "simple")]  # simple 0, hybrid 1
    claim = check_claims(rows)[HYBRID]
    assert "seed 1 against seed 0: no seed in common" in claim.evidence


# DDPM Table 2 as `losses` entries named as pipelines/ddpm-ablation names them.
DDPM_ENTRIES = {
    "mean-vlb-learned": dict(objective="vlb", mean_type="previous_x", var_type="learned"),
    "mean-vlb-fixed": dict(objective="vlb", mean_type="previous_x", var_type="fixed_large"),
    "mean-mse": dict(objective="simple", mean_type="previous_x", var_type="fixed_large"),
    "eps-vlb-learned": dict(objective="vlb", mean_type="epsilon", var_type="learned"),
    "eps-vlb-fixed": dict(objective="vlb", mean_type="epsilon", var_type="fixed_large"),
    "eps-simple": dict(objective="simple", mean_type="epsilon", var_type="fixed_large"),
}
DDPM_FD = {
    "mean-vlb-learned": 24.0,
    "mean-vlb-fixed": 13.0,
    "mean-mse": 40.0,
    "eps-vlb-learned": 30.0,
    "eps-vlb-fixed": 13.5,
    "eps-simple": 3.0,
}
EPS_BEST, MEAN_NEEDS_L, LEARNED_SIGMA_WORSE = range(3)  # DDPM's claims, after Improved DDPM's


def ddpm_rows() -> list[dict]:
    """The DDPM ablation's six cells on the linear schedule, FD shaped like DDPM Table 2."""
    return [
        {
            "cell": f"linear-{name}",
            "schedule": "linear",
            "loss": name,
            "seed": 0,
            "timestep_sampler": "uniform",
            **settings,
            "nll_bpd": 4.0,
            "nll_bpd_se": 0.02,
            "fd_classifier": DDPM_FD[name],
            "fd_classifier_se": FD_SE,
            "kid_classifier": DDPM_FD[name] / 1000,
            "kid_classifier_se": FD_SE / 1000,
        }
        for name, settings in DDPM_ENTRIES.items()
    ]


def ddpm_claims(rows: list[dict]) -> list:
    claims = check_claims(rows)
    return [c for c in claims if "(DDPM Table 2" in c.claim]


def test_ddpm_claims_are_checked_on_the_ablation_cells_and_only_there():
    claims = check_claims(ddpm_rows())
    assert len(claims) == 3 and all("(DDPM Table 2" in c.claim for c in claims)  # no Improved DDPM cell
    assert [c.verdict for c in claims] == [HOLDS] * 3
    assert "FD eps-simple 3.00 ± 0.30 vs mean-mse 40.00 ± 0.30" in claims[EPS_BEST].evidence
    # the default grid has DDPM's eps + L_simple cell (linear-simple) and nothing to compare it with
    assert not [c for c in check_claims(grid_rows()) if "(DDPM Table 2" in c.claim]


@pytest.mark.parametrize(
    "name,fd,claim,verdict",
    [
        ("eps-vlb-fixed", 3.2, EPS_BEST, NOT_RESOLVED),  # within noise of eps-simple
        ("mean-mse", 10.0, MEAN_NEEDS_L, CONTRADICTED),  # mu~ with MSE beats mu~ with L
        ("eps-vlb-learned", 13.5, LEARNED_SIGMA_WORSE, NOT_RESOLVED),  # learned as good as fixed
        ("mean-vlb-learned", 5.0, LEARNED_SIGMA_WORSE, CONTRADICTED),
    ],
)
def test_each_ddpm_claim_gives_each_verdict(name, fd, claim, verdict):
    rows = ddpm_rows()
    for r in rows:
        if r["loss"] == name:
            r["fd_classifier"], r["kid_classifier"] = fd, fd / 1000
    assert ddpm_claims(rows)[claim].verdict == verdict


def test_an_unstable_cell_without_outputs_is_not_computed():
    rows = ddpm_rows()
    learned = next(r for r in rows if r["loss"] == "eps-vlb-learned")
    for key in ("nll_bpd", "fd_classifier", "kid_classifier"):
        del learned[key]
    assert ddpm_claims(rows)[LEARNED_SIGMA_WORSE].verdict == NOT_COMPUTED


def test_aux_and_vlb_with_different_timestep_samplers_are_not_compared():
    rows = grid_rows()
    for r in rows:
        if r["loss"] == "aux":
            r["timestep_sampler"] = "uniform"
    claim = check_claims(rows)[AUX]
    assert claim.verdict == NOT_COMPUTED and "not matched" in claim.evidence
