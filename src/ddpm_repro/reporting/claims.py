"""The papers' claims, checked on this project's own rows.

`check_claims(rows)` is a pure function from grid rows to `Claim`s (claim, evidence,
verdict). Each claim is split into parts (one per schedule, or per objective for the
schedule claim), and each part is a comparison with a statistic z: the gap in the claimed
direction over the standard error of the gap. A part is

- "holds" when z >= 2 (the claimed direction, at 2 s.e. or more),
- "contradicted" when z <= -2 (the opposite direction, at 2 s.e. or more),
- "not resolved" when |z| < 2 (a gap inside the noise: the run cannot tell),
- "not computed" when a number or its standard error is missing.

A claim is contradicted if any part is; otherwise not computed if any part is; otherwise
not resolved if any part is; otherwise it holds.

Standard errors:
- NLL: every cell is scored on the same test images with the same noise (and, for the
  stratified estimate, the same timesteps), so when both rows carry per-image NLLs
  (`nll_per_image`) the s.e. is the paired std(b_i - a_i) / sqrt(n); otherwise the
  conservative unpaired sqrt(se_A^2 + se_B^2).
- Sample quality: FD (bootstrap s.e.) and KID (s.e. over disjoint subsets) in the
  reference classifier's features, and FID/KID in Inception features where both cells have
  them; each metric is a part, lower is better, unpaired s.e.
- Respaced sampling (Improved DDPM Fig. 8): the degradation ratio FD(n)/FD(full chain) on
  the ancestral step curve, with its paired bootstrap s.e., at the paper's ratios of steps
  to T (50 and 100 of T = 4000: n = T/80 and T/40); L_simple must lose more than L_hybrid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .cells import NOT_COMPUTED, grid_axes

HOLDS = "holds"
CONTRADICTED = "contradicted"
NOT_RESOLVED = "not resolved"
MARGIN_SE = 2.0
PAPER_T, PAPER_RESPACED = 4000, (50, 100)  # Improved DDPM Fig. 8: 50 and 100 of 4000 steps
# lower is better; (value key, its s.e. key, label, shown x this); the classifier's FD is required
QUALITY_METRICS = (
    ("fd_classifier", "fd_classifier_se", "FD", 1.0),
    ("kid_classifier", "kid_classifier_se", "KID×10³", 1e3),
    ("fid_inception", "fid_inception_se", "FID", 1.0),
    ("kid_inception", "kid_inception_se", "KID×10³ (Inception)", 1e3),
)
RULES = (
    f"Each comparison gives z, the gap in the claimed direction over its standard error: holds at "
    f"z >= {MARGIN_SE:g}, contradicted at z <= -{MARGIN_SE:g}, not resolved in between. NLL: paired over "
    "the same test images when per-image NLLs exist. Sample quality: FD (bootstrap s.e.) and KID (s.e. "
    "over disjoint subsets of the samples), lower is better, unpaired. Steps: FD(n)/FD(T) on the "
    "ancestral curve at the paper's step ratios (50 and 100 of T = 4000), paired bootstrap s.e. A claim is "
    "contradicted if any part is, not computed if a part lacks its numbers, not resolved if a part is, "
    "and holds when every part holds."
)


def respaced_steps(timesteps: int) -> tuple[int, ...]:
    """The step counts at Fig. 8's ratios for a chain of `timesteps`: 50/4000 and 100/4000 of
    T, rounded half up (12 and 25 at T = 1000), at least 1."""
    return tuple(max(1, math.floor(timesteps * n / PAPER_T + 0.5)) for n in PAPER_RESPACED)


def verdict_of(z: float) -> str:
    """holds, contradicted or not resolved for a statistic z (see the module docstring)."""
    return HOLDS if z >= MARGIN_SE else CONTRADICTED if z <= -MARGIN_SE else NOT_RESOLVED


def _z(gap: float, se: float) -> float:
    return gap / se if se > 0 else math.copysign(math.inf, gap) if gap else 0.0


@dataclass(frozen=True)
class Claim:
    """One published claim, what this run measured, and the verdict."""

    claim: str
    evidence: str
    verdict: str


Part = tuple[str, str]  # (evidence, verdict)


def _combine(parts: list[Part]) -> str:
    verdicts = {v for _, v in parts}
    for verdict in (CONTRADICTED, NOT_COMPUTED, NOT_RESOLVED):
        if verdict in verdicts:
            return verdict
    return HOLDS


def _claim(text: str, parts: list[Part]) -> Claim:
    return Claim(text, "; ".join(e for e, _ in parts), _combine(parts))


def _lower_nll(a: dict | None, b: dict | None, name_a: str, name_b: str) -> Part:
    """A's NLL below B's: z = (NLL_B - NLL_A) / s.e. of the difference."""
    keys = ("nll_bpd", "nll_bpd_se")
    if a is None or b is None or any(r.get(k) is None for r in (a, b) for k in keys):
        return f"NLL {name_a} vs {name_b}: {NOT_COMPUTED}", NOT_COMPUTED
    margin = b["nll_bpd"] - a["nll_bpd"]
    se, kind = _difference_se(a, b)
    z = _z(margin, se)
    evidence = (
        f"NLL {name_a} {a['nll_bpd']:.3f} vs {name_b} {b['nll_bpd']:.3f} "
        f"(margin {margin:+.3f} bits/dim, z = {z:+.2f} {kind})"
    )
    return evidence, verdict_of(z)


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
    """A's samples better than B's in every quality metric both have (the classifier's FD
    required): one z per metric, combined as a claim's parts are."""
    first, first_se, _, _ = QUALITY_METRICS[0]
    if a is None or b is None or any(r.get(k) is None for r in (a, b) for k in (first, first_se)):
        return f"FD {name_a} vs {name_b}: {NOT_COMPUTED} (a value or its s.e. is missing)", NOT_COMPUTED
    shown, parts = [], []
    for key, se_key, label, scale in QUALITY_METRICS:
        if any(r.get(k) is None for r in (a, b) for k in (key, se_key)):
            continue
        z = _z(b[key] - a[key], math.hypot(a[se_key], b[se_key]))
        shown.append(
            f"{label} {name_a} {scale * a[key]:.2f} ± {scale * a[se_key]:.2f} vs {name_b} "
            f"{scale * b[key]:.2f} ± {scale * b[se_key]:.2f} (z = {z:+.2f})"
        )
        parts.append(("", verdict_of(z)))
    return ", ".join(shown), _combine(parts)


def _degradation(row: dict | None, steps: tuple[int, ...]) -> dict[int, tuple[float, float]] | None:
    """(FD(n) / FD(full chain), its s.e.) on the ancestral step curve for n in steps, or None."""
    points = {
        p["steps"]: (p["fd_ratio"], p["fd_ratio_se"])
        for p in (row or {}).get("step_curve") or []
        if p.get("method") == "ancestral"
        and p.get("fd_ratio") is not None
        and p.get("fd_ratio_se") is not None
    }
    if any(n not in points for n in steps):
        return None
    return {n: points[n] for n in steps}


def _degrades_more(
    a: dict | None, b: dict | None, name_a: str, name_b: str, prefix: str, steps: tuple[int, ...]
) -> Part:
    """A's FD(n)/FD(T) above B's at every n in steps: A loses more quality when respaced."""
    ratio_a, ratio_b = _degradation(a, steps), _degradation(b, steps)
    if ratio_a is None or ratio_b is None:
        n = " and ".join(map(str, steps))
        return f"{prefix}FD(n)/FD(T) at n = {n}, {name_a} vs {name_b}: {NOT_COMPUTED}", NOT_COMPUTED
    shown, parts = [], []
    for n in steps:
        (ra, sa), (rb, sb) = ratio_a[n], ratio_b[n]
        z = _z(ra - rb, math.hypot(sa, sb))
        shown.append(f"n={n}: {name_a} {ra:.2f} ± {sa:.2f} vs {name_b} {rb:.2f} ± {sb:.2f} (z = {z:+.2f})")
        parts.append(("", verdict_of(z)))
    return f"{prefix}FD(n)/FD(T) " + ", ".join(shown), _combine(parts)


def _per_schedule(parts: list[tuple[str, list[Part]]]) -> list[Part]:
    """Join each schedule's sub-parts into one part prefixed with the schedule."""
    return [(f"{s}: " + ", ".join(e for e, _ in sub), _combine(sub)) for s, sub in parts]


def check_claims(rows: list[dict], timesteps: int = 1000) -> list[Claim]:
    """The five claims of the report, in order, on the rows of one grid whose chains have
    `timesteps` steps. Each is checked only in the settings where the papers state it."""
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
            "cosine",
            [
                _lower_nll(cell("cosine", "vlb"), cell("cosine", other), "vlb", other)
                for other in ("simple", "hybrid")
            ]
            + [
                _better_quality(cell("cosine", other), cell("cosine", "vlb"), other, "vlb")
                for other in ("simple", "hybrid")
            ],
        )
    ]
    n = respaced_steps(timesteps)
    # the schedules whose cells drew the curve (evaluate.curve_schedules); none: not computed
    curved = [s for s in schedules if any((cell(s, x) or {}).get("step_curve") for x in ("simple", "hybrid"))]
    steps = [
        _degrades_more(cell(s, "simple"), cell(s, "hybrid"), "simple", "hybrid", f"{s}: ", n)
        for s in curved or schedules
    ]
    aux = [(s, [_better_quality(cell(s, "aux"), cell(s, "vlb"), "aux", "vlb")]) for s in schedules]
    return [
        _claim(
            "The cosine schedule gives a lower NLL than the linear one, with L_simple and L_hybrid "
            "(iDDPM Tables 1-2)",
            _per_schedule(cosine),
        ),
        _claim(
            "L_hybrid gives a lower NLL than L_simple, on both schedules (iDDPM Tables 1-2)",
            _per_schedule(hybrid),
        ),
        _claim(
            "With the cosine schedule, L_vlb has a lower NLL and worse sample quality than L_simple and "
            "L_hybrid (iDDPM Tables 1-2: L_vlb only with cosine)",
            _per_schedule(vlb),
        ),
        _claim(
            f"Respaced to {n[0]} and {n[1]} of T = {timesteps} ancestral steps (the ratios of 50 and 100 of "
            "4000), L_simple (fixed variance) loses more sample quality than L_hybrid (learned variance) "
            "(iDDPM Fig. 8)",
            steps,
        ),
        _claim(
            "The auxiliary loss gives better samples than L_vlb, with the same timestep sampler "
            "(D3PM Table 3; continuous Gaussian diffusion is this project's extension)",
            _per_schedule(aux),
        ),
    ]
