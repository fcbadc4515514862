"""The papers' claims checked on fixture rows: each verdict flips when its numbers flip.

`grid_rows()` is the fixture grid shared with test_report.py: 8 cells with NLL ± s.e.,
FD, FID and Improved-DDPM-Fig.-8 step curves, chosen so that every claim holds."""

import copy
import math

import pytest

from ddpm_repro.reporting.claims import FAILS, HOLDS, NOT_COMPUTED, check_claims

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
# FD(n)/FD(T) on the ancestral curve: hybrid barely moves, the others degrade.
RATIO = {25: 3.0, 50: 2.0, 100: 1.5, 250: 1.1, 1000: 1.0}
HYBRID_RATIO = {25: 1.5, 50: 1.08, 100: 1.05, 250: 1.01, 1000: 1.0}


def step_curve(fd: float, ratios: dict[int, float]) -> list[dict]:
    ancestral = [
        {"method": "ancestral", "steps": n, "samples": 50, "fd_classifier": fd * r} for n, r in ratios.items()
    ]
    ddim = [{"method": "ddim", "steps": n, "samples": 50, "fd_classifier": fd * 1.2} for n in (10, 50, 100)]
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
                    "steps": 1000,
                    "final_loss": 0.1 if loss in ("simple", "hybrid") else 4.0,
                    "nll_bpd": NLL[s][loss],
                    "nll_bpd_se": 0.02,
                    "nll_images": 64,
                    "fd_classifier": fd,
                    "is_classifier": 7.5,
                    "fd_samples": 100,
                    "fid_inception": fd * 2,
                    "step_curve": step_curve(fd, HYBRID_RATIO if loss == "hybrid" else RATIO),
                    "loss_curve": {"step": [50.0, 100.0, 150.0], "loss": [1.0, 0.5, 0.4]},
                }
            )
    return rows


def row(rows: list[dict], cell: str) -> dict:
    return next(r for r in rows if r["cell"] == cell)


def verdicts(rows: list[dict]) -> list[str]:
    return [c.verdict for c in check_claims(rows)]


def test_every_claim_holds_on_the_fixture_grid():
    claims = check_claims(grid_rows())
    assert [c.verdict for c in claims] == [HOLDS] * 5
    assert (
        "NLL cosine 4.550 vs linear 4.700 (margin +0.150 bits/dim = +5.30 unpaired s.e.)"
        in claims[COSINE].evidence
    )
    assert "cosine: FD(n)/FD(T) n=50: hybrid 1.08 vs simple 2.00, n=100: hybrid 1.05 vs simple 1.50" in (
        claims[STEPS].evidence
    )


@pytest.mark.parametrize("loss", ["simple", "hybrid"])
def test_linear_better_than_cosine_breaks_the_schedule_claim(loss):
    rows = grid_rows()
    row(rows, f"linear-{loss}")["nll_bpd"] = row(rows, f"cosine-{loss}")["nll_bpd"] - 0.1
    assert verdicts(rows)[COSINE] == FAILS


def test_a_difference_under_two_standard_errors_is_within_noise_and_does_not_hold():
    rows = grid_rows()
    row(rows, "cosine-hybrid")["nll_bpd"] = row(rows, "cosine-simple")["nll_bpd"] - 0.03  # ~1.1 s.e.
    claim = check_claims(rows)[HYBRID]
    assert claim.verdict == FAILS and "within noise" in claim.evidence


def test_simple_better_than_hybrid_breaks_the_hybrid_claim():
    rows = grid_rows()
    row(rows, "linear-simple")["nll_bpd"] = 4.30
    claim = check_claims(rows)[HYBRID]
    assert claim.verdict == FAILS and "reversed" in claim.evidence


@pytest.mark.parametrize(
    "cell,key,value",
    [
        ("cosine-hybrid", "nll_bpd", 3.5),  # vlb no longer has the best NLL
        ("linear-simple", "fd_classifier", 30.0),  # vlb no longer has the worst FD
        ("linear-simple", "fid_inception", 100.0),  # FID disagrees with FD
    ],
)
def test_vlb_claim_fails_when_vlb_is_not_best_nll_and_worst_fd(cell, key, value):
    rows = grid_rows()
    row(rows, cell)[key] = value
    assert verdicts(rows)[VLB] == FAILS


def test_simple_keeping_quality_as_well_as_hybrid_breaks_the_steps_claim():
    rows = grid_rows()
    row(rows, "cosine-simple")["step_curve"] = step_curve(10.0, HYBRID_RATIO)
    verdict = verdicts(rows)
    assert verdict[STEPS] == FAILS and verdict[:STEPS] == [HOLDS] * 3


@pytest.mark.parametrize("missing_steps", [50, 100, 1000])
def test_steps_claim_needs_50_100_and_the_full_chain(missing_steps):
    rows = grid_rows()
    r = row(rows, "linear-hybrid")
    r["step_curve"] = [
        p for p in r["step_curve"] if not (p["method"] == "ancestral" and p["steps"] == missing_steps)
    ]
    if missing_steps == 1000:  # then 250 is the full chain: a shorter curve, still comparable
        assert verdicts(rows)[STEPS] == HOLDS
    else:
        assert verdicts(rows)[STEPS] == NOT_COMPUTED


def test_aux_worse_than_vlb_breaks_the_aux_claim():
    rows = grid_rows()
    row(rows, "cosine-aux")["fd_classifier"] = 40.0
    claim = check_claims(rows)[AUX]
    assert claim.verdict == FAILS and "FD aux 40.00 vs vlb 25.00" in claim.evidence


def test_missing_inputs_give_not_computed_never_a_verdict():
    rows = [{"cell": r["cell"], "schedule": r["schedule"], "loss": r["loss"]} for r in grid_rows()]
    claims = check_claims(rows)
    assert [c.verdict for c in claims] == [NOT_COMPUTED] * 5
    assert all("not computed" in c.evidence for c in claims)


def test_a_measured_failure_outweighs_a_missing_part():
    rows = grid_rows()
    del row(rows, "linear-hybrid")["nll_bpd"]
    assert verdicts(rows)[HYBRID] == NOT_COMPUTED
    row(rows, "cosine-simple")["nll_bpd"] = 3.0
    assert verdicts(rows)[HYBRID] == FAILS


def test_check_claims_does_not_change_its_input():
    rows = grid_rows()
    before = copy.deepcopy(rows)
    check_claims(rows)
    assert rows == before


def test_per_image_nlls_give_the_paired_standard_error():
    # Same images and noise in every cell: per-image NLLs move together, so a 0.03 bits/dim
    # gain that is within noise unpaired (~1.1 s.e.) is many paired standard errors.
    rows = grid_rows()
    simple, hybrid = row(rows, "cosine-simple"), row(rows, "cosine-hybrid")
    base = [4.0 + 0.5 * math.sin(i) for i in range(64)]  # spread 0.35: unpaired s.e. ~0.044
    simple["nll_per_image"] = [v + 0.03 + 0.002 * math.cos(3 * i) for i, v in enumerate(base)]
    hybrid["nll_per_image"] = base
    simple["nll_bpd"], hybrid["nll_bpd"] = (sum(r["nll_per_image"]) / 64 for r in (simple, hybrid))
    claim = check_claims(rows)[HYBRID]
    assert "cosine" in claim.evidence and "paired s.e." in claim.evidence
    paired = [p for p in claim.evidence.split("; ") if "paired" in p and "unpaired" not in p]
    assert paired and "within noise" not in paired[0]


def test_hybrid_degrading_less_is_not_enough_when_simple_does_not_degrade():
    # Measured on the default digits grid: fewer steps did not hurt either objective.
    rows = grid_rows()
    for loss, ratio in (("hybrid", 0.95), ("simple", 0.96)):
        row(rows, f"linear-{loss}")["step_curve"] = step_curve(10.0, {50: ratio, 100: ratio, 1000: 1.0})
    claim = check_claims(rows)[STEPS]
    assert claim.verdict == FAILS and "(simple does not degrade)" in claim.evidence
