"""The papers' claims, checked on this project's own rows.

`check_claims(rows)` is a pure function from grid rows to `Claim`s (claim, evidence,
verdict). Each claim is split into parts (one per schedule, or per objective for the
schedule claim) and the verdict combines them: "does not hold" if any measured part fails,
else "not computed" if any part lacks its inputs, else "holds".

Rules (RULES is the short form the report prints):
- NLL: A beats B when NLL(B) - NLL(A) >= 2 standard errors of that difference. Every cell
  is scored on the same test images with the same noise, so when both rows carry their
  per-image NLLs (`nll_per_image`) the s.e. is the paired one, std(b_i - a_i) / sqrt(n);
  otherwise the conservative unpaired sqrt(se_A^2 + se_B^2). A difference in the claimed
  direction but under 2 s.e. is "within noise" and the part does not hold: the run does
  not show the effect.
- Sample quality: lower is better for fd_classifier (the offline FD) and, where both
  cells have it, fid_inception; every available metric must agree. These carry no
  standard error here, so they are compared as measured.
- Respaced sampling (Improved DDPM Fig. 8): on the ancestral step curve, the degradation
  ratio FD(n steps) / FD(full chain) at n = 50 and 100; hybrid must keep its quality (ratio
  <= DEGRADED at both n) and simple must degrade (ratio > DEGRADED at one n at least), per
  schedule; hybrid degrading less than simple is not enough when neither degrades.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .cells import NOT_COMPUTED, grid_axes

HOLDS = "holds"
FAILS = "does not hold"
MARGIN_SE = 2.0
RESPACED_STEPS = (50, 100)
DEGRADED = 1.10  # FD(n)/FD(T) above this: sample quality degraded (10% worse than the full chain)
QUALITY_METRICS = ("fd_classifier", "fid_inception")  # lower is better; the first is required
RULES = (
    f"NLL: a difference counts when it is at least {MARGIN_SE:g} standard errors of the difference (paired "
    "over the same test images when per-image NLLs exist); a smaller one "
    "in the claimed direction is within noise and does not hold. Sample quality: lower FD (and FID "
    "where both cells have it) is better, compared as measured. Steps: FD(n)/FD(T) on the ancestral "
    f"curve at n = {' and '.join(map(str, RESPACED_STEPS))}; degraded means a ratio above {DEGRADED:g}. "
    "A claim does not hold if any measured part "
    "fails; it is not computed if a part lacks its numbers."
)


@dataclass(frozen=True)
class Claim:
    """One published claim, what this run measured, and the verdict."""

    claim: str
    evidence: str
    verdict: str


Part = tuple[str, str]  # (evidence, verdict)


def _combine(parts: list[Part]) -> str:
    verdicts = {v for _, v in parts}
    return FAILS if FAILS in verdicts else NOT_COMPUTED if NOT_COMPUTED in verdicts else HOLDS


def _claim(text: str, parts: list[Part]) -> Claim:
    return Claim(text, "; ".join(e for e, _ in parts), _combine(parts))


def _lower_nll(a: dict | None, b: dict | None, name_a: str, name_b: str) -> Part:
    """A's NLL below B's by at least MARGIN_SE combined standard errors."""
    keys = ("nll_bpd", "nll_bpd_se")
    if a is None or b is None or any(r.get(k) is None for r in (a, b) for k in keys):
        return f"NLL {name_a} vs {name_b}: {NOT_COMPUTED}", NOT_COMPUTED
    margin = b["nll_bpd"] - a["nll_bpd"]
    se, kind = _difference_se(a, b)
    z = margin / se if se > 0 else math.copysign(math.inf, margin) if margin else 0.0
    note = "" if z >= MARGIN_SE else ", within noise" if z > -MARGIN_SE else ", reversed"
    evidence = (
        f"NLL {name_a} {a['nll_bpd']:.3f} vs {name_b} {b['nll_bpd']:.3f} "
        f"(margin {margin:+.3f} bits/dim = {z:+.2f} {kind} s.e.{note})"
    )
    return evidence, HOLDS if z >= MARGIN_SE else FAILS


def _difference_se(a: dict, b: dict) -> tuple[float, str]:
    """The standard error of NLL(B) - NLL(A): paired over images when both rows have them."""
    pa, pb = a.get("nll_per_image"), b.get("nll_per_image")
    if pa and pb and len(pa) == len(pb) >= 2:
        d = [y - x for x, y in zip(pa, pb, strict=True)]
        mean = sum(d) / len(d)
        var = sum((v - mean) ** 2 for v in d) / (len(d) - 1)
        return math.sqrt(var / len(d)), "paired"
    return math.hypot(a["nll_bpd_se"], b["nll_bpd_se"]), "unpaired"


def _better_quality(a: dict | None, b: dict | None, name_a: str, name_b: str) -> Part:
    """A's samples better than B's in every quality metric both have (fd_classifier required)."""
    if a is None or b is None or a.get(QUALITY_METRICS[0]) is None or b.get(QUALITY_METRICS[0]) is None:
        return f"FD {name_a} vs {name_b}: {NOT_COMPUTED}", NOT_COMPUTED
    shown, verdict = [], HOLDS
    for key, label in zip(QUALITY_METRICS, ("FD", "FID"), strict=True):
        if a.get(key) is not None and b.get(key) is not None:
            shown.append(f"{label} {name_a} {a[key]:.2f} vs {name_b} {b[key]:.2f}")
            verdict = verdict if a[key] < b[key] else FAILS
    return ", ".join(shown), verdict


def _degradation(row: dict | None) -> dict[int, float] | None:
    """FD(n) / FD(full chain) on the ancestral step curve for n in RESPACED_STEPS, or None."""
    points = {
        p["steps"]: p["fd_classifier"]
        for p in (row or {}).get("step_curve") or []
        if p.get("method") == "ancestral" and p.get("fd_classifier") is not None
    }
    full = max(points, default=0)
    if any(n not in points or n >= full for n in RESPACED_STEPS) or points[full] <= 0:
        return None
    return {n: points[n] / points[full] for n in RESPACED_STEPS}


def _degrades_less(a: dict | None, b: dict | None, name_a: str, name_b: str, prefix: str) -> Part:
    ratio_a, ratio_b = _degradation(a), _degradation(b)
    if ratio_a is None or ratio_b is None:
        return f"{prefix}FD(n)/FD(T) {name_a} vs {name_b}: {NOT_COMPUTED}", NOT_COMPUTED
    shown = ", ".join(f"n={n}: {name_a} {ratio_a[n]:.2f} vs {name_b} {ratio_b[n]:.2f}" for n in ratio_a)
    # "keeps" and "degrades" are both claims: A within DEGRADED of its full-chain FD, B beyond it
    keeps = all(ratio_a[n] <= DEGRADED for n in ratio_a)
    degrades = any(ratio_b[n] > DEGRADED for n in ratio_b)
    note = "" if keeps and degrades else f" ({name_b} does not degrade)" if keeps else f" ({name_a} degrades)"
    return f"{prefix}FD(n)/FD(T) {shown}{note}", HOLDS if keeps and degrades else FAILS


def _per_schedule(parts: list[tuple[str, list[Part]]]) -> list[Part]:
    """Join each schedule's sub-parts into one part prefixed with the schedule."""
    return [(f"{s}: " + ", ".join(e for e, _ in sub), _combine(sub)) for s, sub in parts]


def check_claims(rows: list[dict]) -> list[Claim]:
    """The five claims of the report, in order, on the rows of one grid."""
    cells = {(r["schedule"], r["loss"]): r for r in rows}
    schedules, _ = grid_axes(rows)

    def cell(schedule: str, loss: str) -> dict | None:
        return cells.get((schedule, loss))

    cosine = [
        (loss, [_lower_nll(cell("cosine", loss), cell("linear", loss), "cosine", "linear")])
        for loss in ("simple", "hybrid")
    ]
    hybrid = [(s, [_lower_nll(cell(s, "hybrid"), cell(s, "simple"), "hybrid", "simple")]) for s in schedules]
    vlb = [
        (
            s,
            [_lower_nll(cell(s, "vlb"), cell(s, other), "vlb", other) for other in ("simple", "hybrid")]
            + [
                _better_quality(cell(s, other), cell(s, "vlb"), other, "vlb")
                for other in ("simple", "hybrid")
            ],
        )
        for s in schedules
    ]
    steps = [
        _degrades_less(cell(s, "hybrid"), cell(s, "simple"), "hybrid", "simple", f"{s}: ") for s in schedules
    ]
    aux = [(s, [_better_quality(cell(s, "aux"), cell(s, "vlb"), "aux", "vlb")]) for s in schedules]
    return [
        _claim(
            "The cosine schedule gives a lower NLL than the linear one (iDDPM Tables 1-2)",
            _per_schedule(cosine),
        ),
        _claim("L_hybrid gives a lower NLL than L_simple (iDDPM Tables 1-2)", _per_schedule(hybrid)),
        _claim(
            "L_vlb has the best NLL and the worst sample quality of L_simple, L_hybrid, L_vlb "
            "(iDDPM Tables 1-2)",
            _per_schedule(vlb),
        ),
        _claim(
            "With 50-100 respaced ancestral steps, L_hybrid (learned variance) keeps its sample quality "
            "while L_simple (fixed variance) degrades (iDDPM Fig. 8)",
            steps,
        ),
        _claim(
            "The auxiliary loss gives better samples than L_vlb (D3PM Table 3; continuous Gaussian "
            "diffusion is this project's extension)",
            _per_schedule(aux),
        ),
    ]
