"""The papers' claims, checked on this project's own rows.

`check_claims(rows)` is a pure function from grid rows to `Claim`s (claim, evidence,
verdict). Cells are found by what they train (paper.py: `iddpm_objective`, `ddpm_key`), not
by their `losses` entry's name, and a claim is checked only when the grid has its cells: a
claim none of whose comparisons has both cells is left out. Each claim is split into parts
(one per schedule, or per objective for the schedule claim), and each part is a comparison
with a statistic z: the gap in the claimed direction over the standard error of the gap. A
part is

- "holds" when z >= 2 (the claimed direction, at 2 s.e. or more),
- "contradicted" when z <= -2 (the opposite direction, at 2 s.e. or more),
- "not resolved" when |z| < 2 (a gap inside the noise: the run cannot tell),
- "not computed" when a number or its standard error is missing.

A claim is contradicted if any part is; otherwise not computed if any part is; otherwise
not resolved if any part is; otherwise it holds.

Standard errors:
- Seeds: when both cells have two or more training seeds in common (grid.seeds), every
  figure is compared seed by seed: z is the mean of the per-seed differences over its
  standard error across seeds (paired over seeds). With one seed, the within-cell errors below.
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
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from .cells import NOT_COMPUTED, by_cell, grid_axes
from .paper import ddpm_key, iddpm_objective

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
    f"z >= {MARGIN_SE:g}, contradicted at z <= -{MARGIN_SE:g}, not resolved in between. With two or more "
    "training seeds, every figure is compared seed by seed (paired over seeds). NLL: paired over "
    "the same test images when per-image NLLs exist. Sample quality: FD (bootstrap s.e.) and KID (s.e. "
    "over disjoint subsets of the samples), lower is better, unpaired. Steps: FD(n)/FD(T) on the "
    "ancestral curve at the paper's step ratios (50 and 100 of T = 4000), paired bootstrap s.e. A claim is "
    "contradicted if any part is, not computed if a part lacks its numbers, not resolved if a part is, "
    "and holds when every part holds. Claims whose cells this grid lacks are left out."
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


def _claim(text: str, parts: list[Part | None]) -> Claim | None:
    """The claim from its parts; None when no part has its cells in the grid (not checked)."""
    present = [p for p in parts if p is not None]
    return Claim(text, "; ".join(e for e, _ in present), _combine(present)) if present else None


Group = list[dict]  # one cell's rows, one per training seed, in seed order
Figure = Callable[[dict], float | None]


def _pairs(a: Group, b: Group) -> list[tuple[dict, dict]]:
    """The (A, B) rows of the training seeds both cells have, in A's order; with none in
    common, the two cells' first rows, whose seeds `_unmatched_seeds` names. With one pair the
    within-cell standard errors apply."""
    by_seed = {r.get("seed"): r for r in b}
    pairs = [(r, by_seed[r.get("seed")]) for r in a if r.get("seed") in by_seed]
    return pairs or [(a[0], b[0])]


def _gap(
    pairs: list[tuple[dict, dict]], value: Figure, se_of: Callable[[dict, dict], tuple[float | None, str]]
) -> tuple[float, float, float, str] | None:
    """(A, B, z of B - A, how its s.e. was found) for one figure, or None when a value or its
    s.e. is missing. Over two or more seeds: the means, and the s.e. of the mean per-seed
    difference; over one: the values and `se_of(a, b)`."""
    values = [(value(a), value(b)) for a, b in pairs]
    if any(v is None for pair in values for v in pair):
        return None
    if len(values) >= 2:
        diffs = [vb - va for va, vb in values]  # type: ignore[operator]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs))
        mean_a, mean_b = (statistics.fmean(v[i] for v in values) for i in (0, 1))  # type: ignore[misc]
        return mean_a, mean_b, _z(mean_b - mean_a, se), f"paired over {len(diffs)} seeds"
    (va, vb), (a, b) = values[0], pairs[0]
    se, kind = se_of(a, b)
    return None if se is None else (va, vb, _z(vb - va, se), kind)  # type: ignore[operator]


def _unmatched_seeds(pairs: list) -> str:
    """The evidence's note when the cells have no seed in common (`_pairs` then compares
    their first rows): which two seeds; nothing when the pairs share their seeds."""
    seed_a, seed_b = (r.get("seed") for r in pairs[0])
    return "" if seed_a == seed_b else f" (seed {seed_a} against seed {seed_b}: no seed in common)"


def _seeds_note(pairs: list) -> str:
    """The evidence's note on seeds: the number of seeds averaged over two or more pairs,
    else `_unmatched_seeds`."""
    return f" (means of {len(pairs)} seeds)" if len(pairs) >= 2 else _unmatched_seeds(pairs)


def _lower_nll(a: Group, b: Group, name_a: str, name_b: str) -> Part | None:
    """A's NLL below B's: z = (NLL_B - NLL_A) / s.e. of the difference. None: a cell is not in the grid."""
    if not a or not b:
        return None
    pairs = _pairs(a, b)
    gap = _gap(pairs, lambda r: r.get("nll_bpd"), _nll_difference_se)
    if gap is None:
        return f"NLL {name_a} vs {name_b}: {NOT_COMPUTED}", NOT_COMPUTED
    nll_a, nll_b, z, kind = gap
    evidence = (
        f"NLL {name_a} {nll_a:.3f} vs {name_b} {nll_b:.3f}{_seeds_note(pairs)} "
        f"(margin {nll_b - nll_a:+.3f} bits/dim, z = {z:+.2f} {kind})"
    )
    return evidence, verdict_of(z)


def _nll_difference_se(a: dict, b: dict) -> tuple[float | None, str]:
    """The standard error of NLL(B) - NLL(A): paired over images when both rows have them."""
    pa, pb = a.get("nll_per_image"), b.get("nll_per_image")
    if pa and pb and len(pa) == len(pb) >= 2:
        d = [y - x for x, y in zip(pa, pb, strict=True)]
        return statistics.stdev(d) / math.sqrt(len(d)), "paired"
    if a.get("nll_bpd_se") is None or b.get("nll_bpd_se") is None:
        return None, ""
    return math.hypot(a["nll_bpd_se"], b["nll_bpd_se"]), "unpaired"


def _unpaired(se_key: str) -> Callable[[dict, dict], tuple[float | None, str]]:
    def se_of(a: dict, b: dict) -> tuple[float | None, str]:
        if a.get(se_key) is None or b.get(se_key) is None:
            return None, ""
        return math.hypot(a[se_key], b[se_key]), ""

    return se_of


def _better_quality(a: Group, b: Group, name_a: str, name_b: str) -> Part | None:
    """A's samples better than B's in every quality metric both have (the classifier's FD
    required): one z per metric, combined as a claim's parts are. None: a cell is not in the grid."""
    if not a or not b:
        return None
    pairs = _pairs(a, b)
    seeded = len(pairs) >= 2
    shown, parts = [], []
    for i, (key, se_key, label, scale) in enumerate(QUALITY_METRICS):
        gap = _gap(pairs, lambda r, k=key: r.get(k), _unpaired(se_key))  # type: ignore[misc]
        if gap is None:
            if i == 0:  # the classifier's FD is required
                return (
                    f"FD {name_a} vs {name_b}: {NOT_COMPUTED} (a value or its s.e. is missing)",
                    NOT_COMPUTED,
                )
            continue
        va, vb, z, kind = gap
        if seeded:
            shown.append(
                f"{label} {name_a} {scale * va:.2f} vs {name_b} {scale * vb:.2f} (z = {z:+.2f} {kind})"
            )
        else:
            ra, rb = pairs[0]
            shown.append(
                f"{label} {name_a} {scale * va:.2f} ± {scale * ra[se_key]:.2f} vs {name_b} "
                f"{scale * vb:.2f} ± {scale * rb[se_key]:.2f} (z = {z:+.2f})"
            )
        parts.append(("", verdict_of(z)))
    return ", ".join(shown) + _unmatched_seeds(pairs), _combine(parts)


def _ratio(n: int, field: str) -> Figure:
    """FD(n) / FD(full chain) (or its s.e.) on a row's ancestral step curve, or None."""

    def value(row: dict) -> float | None:
        for p in row.get("step_curve") or []:
            if p.get("method") == "ancestral" and p.get("steps") == n and p.get(field) is not None:
                return p[field]
        return None

    return value


def _degrades_more(a: Group, b: Group, name_a: str, name_b: str, prefix: str, steps: tuple[int, ...]) -> Part:
    """A's FD(n)/FD(T) above B's at every n in steps: A loses more quality when respaced."""
    pairs = _pairs(a, b) if a and b else []
    gaps = []
    for n in steps:
        se = _ratio(n, "fd_ratio_se")

        def se_of(x: dict, y: dict, se: Figure = se) -> tuple[float | None, str]:
            sx, sy = se(x), se(y)
            return (None, "") if sx is None or sy is None else (math.hypot(sx, sy), "")

        gaps.append(_gap(pairs, _ratio(n, "fd_ratio"), se_of) if pairs else None)
    if any(g is None for g in gaps):
        n = " and ".join(map(str, steps))
        return f"{prefix}FD(n)/FD(T) at n = {n}, {name_a} vs {name_b}: {NOT_COMPUTED}", NOT_COMPUTED
    shown, parts = [], []
    for n, (ra, rb, z, kind) in zip(steps, gaps, strict=True):  # type: ignore[misc]
        z = -z  # the claim: A's ratio above B's
        if len(pairs) >= 2:
            shown.append(f"n={n}: {name_a} {ra:.2f} vs {name_b} {rb:.2f} (z = {z:+.2f} {kind})")
        else:
            (x, y), se = pairs[0], _ratio(n, "fd_ratio_se")
            shown.append(
                f"n={n}: {name_a} {ra:.2f} ± {se(x):.2f} vs {name_b} {rb:.2f} ± {se(y):.2f} (z = {z:+.2f})"
            )
        parts.append(("", verdict_of(z)))
    return f"{prefix}FD(n)/FD(T) " + ", ".join(shown) + _unmatched_seeds(pairs), _combine(parts)


def _per_schedule(parts: list[tuple[str, list[Part | None]]]) -> list[Part | None]:
    """Join each schedule's sub-parts into one part prefixed with the schedule; a schedule
    without any of its cells is left out (None)."""
    joined: list[Part | None] = []
    for s, sub in parts:
        present = [p for p in sub if p is not None]
        joined.append((f"{s}: " + ", ".join(e for e, _ in present), _combine(present)) if present else None)
    return joined


# DDPM Table 2's rows as (mean_type, variance, objective)
EPS_SIMPLE = ("epsilon", "fixed", "simple")
DDPM_ROWS = (
    ("previous_x", "learned", "vlb"),
    ("previous_x", "fixed", "vlb"),
    ("previous_x", "fixed", "simple"),
    ("epsilon", "learned", "vlb"),
    ("epsilon", "fixed", "vlb"),
    EPS_SIMPLE,
)


def check_claims(rows: list[dict], timesteps: int = 1000) -> list[Claim]:
    """The claims of the report whose cells the grid has, in order (Improved DDPM's four, D3PM's,
    then DDPM's three), on the rows of one grid whose chains have `timesteps` steps. Each is
    checked only in the settings where the papers state it."""
    groups = by_cell(rows)
    schedules, _ = grid_axes(rows)

    def find(schedule: str, matches: Callable[[dict], bool]) -> Group:
        """The first cell of `schedule` whose rows match (what it trains), or [] when none does."""
        return next((g for (s, _), g in groups.items() if s == schedule and matches(g[0])), [])

    def cell(schedule: str, objective: str) -> Group:
        return find(schedule, lambda r: iddpm_objective(r) == objective)

    def name(group: Group, default: str) -> str:
        return group[0]["loss"] if group else default

    def nll(s: str, a: str, b: str, name_a: str = "", name_b: str = "") -> Part | None:
        ga, gb = cell(s, a), cell(s, b)
        return _lower_nll(ga, gb, name_a or name(ga, a), name_b or name(gb, b))

    def quality(a: Group, b: Group, default_a: str, default_b: str) -> Part | None:
        return _better_quality(a, b, name(a, default_a), name(b, default_b))

    cosine = [
        (obj, [_lower_nll(cell("cosine", obj), cell("linear", obj), "cosine", "linear")])
        for obj in ("simple", "hybrid")
    ]
    hybrid = [(s, [nll(s, "hybrid", "simple")]) for s in schedules]
    vlb = [
        (
            "cosine",
            [nll("cosine", "vlb", other) for other in ("simple", "hybrid")]
            + [
                quality(cell("cosine", other), cell("cosine", "vlb"), other, "vlb")
                for other in ("simple", "hybrid")
            ],
        )
    ]
    n = respaced_steps(timesteps)
    # the schedules whose cells drew the curve (evaluate.curve_schedules); none: not computed
    with_both = [s for s in schedules if cell(s, "simple") and cell(s, "hybrid")]
    curved = [
        s for s in with_both if any(r.get("step_curve") for x in ("simple", "hybrid") for r in cell(s, x))
    ]
    steps: list[Part | None] = [
        _degrades_more(cell(s, "simple"), cell(s, "hybrid"), name(cell(s, "simple"), "simple"),
                       name(cell(s, "hybrid"), "hybrid"), f"{s}: ", n)
        for s in curved or with_both
    ]  # fmt: skip
    aux = [(s, [_matched(cell(s, "aux"), cell(s, "vlb"), quality)]) for s in schedules]
    ddpm = {key: find("linear", lambda r, key=key: ddpm_key(r) == key) for key in DDPM_ROWS}

    def ddpm_quality(a: tuple, b: tuple) -> Part | None:
        return quality(ddpm[a], ddpm[b], " ".join(a), " ".join(b))

    claims = [
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
        _claim(
            "eps prediction with L_simple gives the best sample quality of the parameterisation x "
            "objective ablation (DDPM Table 2, linear schedule)",
            [ddpm_quality(EPS_SIMPLE, other) for other in DDPM_ROWS if other != EPS_SIMPLE],
        ),
        _claim(
            "Predicting mu~ works only with the true bound: mu~ with L gives better samples than mu~ "
            "with the unweighted MSE (DDPM Table 2, sec. 4.2)",
            [
                ddpm_quality(("previous_x", var, "vlb"), ("previous_x", "fixed", "simple"))
                for var in ("fixed", "learned")
            ],
        ),
        _claim(
            "A learned diagonal Sigma, trained on the true bound, is unstable or gives worse samples than "
            "a fixed isotropic Sigma (DDPM Table 2, sec. 4.2)",
            [
                ddpm_quality((mean, "fixed", "vlb"), (mean, "learned", "vlb"))
                for mean in ("previous_x", "epsilon")
            ],
        ),
    ]
    return [c for c in claims if c is not None]


def _matched(a: Group, b: Group, quality: Callable[[Group, Group, str, str], Part | None]) -> Part | None:
    """aux better than vlb, only between cells that draw timesteps alike (D3PM's matched comparison)."""
    if a and b and a[0].get("timestep_sampler") != b[0].get("timestep_sampler"):
        samplers = f"{a[0].get('timestep_sampler')} vs {b[0].get('timestep_sampler')}"
        return f"aux vs vlb: {NOT_COMPUTED} (not matched: timestep samplers {samplers})", NOT_COMPUTED
    return quality(a, b, "aux", "vlb")
