"""The papers' published numbers, shipped as data (paper_tables.json) inside the package.

Each table has a `source` (paper, table number, dataset, settings) and `rows`. Improved
DDPM rows are keyed by T, schedule and objective (this project's loss names); D3PM rows
by transition and objective; DDPM rows by the mean's parameterisation, the variance
(fixed or learned) and the objective.

A cell is matched to a paper's row by what it trains, never by its `losses` entry's name:
`iddpm_objective` and `ddpm_key` read a report row's objective, mean_type and var_type
(reporting/cells.py puts them there from the params), so a profile that renames its
entries still gets its paper columns and claims.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

CIFAR10 = "iddpm_cifar10"  # Improved DDPM Table 2
DDPM = "ddpm_cifar10"  # DDPM Tables 1 (NLL) and 2 (IS / FID)
IMAGENET64 = "iddpm_imagenet64"  # Improved DDPM Table 1
D3PM = "d3pm_cifar10"  # D3PM Table 3
PAPER_T = 4000  # the papers' main setting; rows at another T are used only when they match ours


@lru_cache(maxsize=1)
def paper_tables() -> dict[str, dict]:
    """Every table of paper_tables.json by key (CIFAR10, IMAGENET64, D3PM)."""
    text = resources.files(__package__).joinpath("paper_tables.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def paper_row(table: str, timesteps: int | None = None, **match: str) -> dict | None:
    """The row of `table` whose fields equal `match`, or None when the paper has no such row.

    Among several, the row at T = `timesteps` (the profile's T) comes first, then T = 4K,
    then the fewest iterations (Improved DDPM Table 1 compares schedules and objectives at
    200K; its 1.5M rows are kept as data only)."""
    rows = [r for r in paper_tables()[table]["rows"] if all(r.get(k) == v for k, v in match.items())]
    rows.sort(key=lambda r: (r.get("T") != timesteps, r.get("T") != PAPER_T, r.get("iters", 0)))
    return rows[0] if rows else None


def source_line(table: str) -> str:
    """'<paper>, <table> (<dataset>; <settings>)' for a caption or footnote."""
    s = paper_tables()[table]["source"]
    return f"{s['paper']}, {s['table']} ({s['dataset']}; {s['settings']})"


FIXED_VARIANCES = ("fixed_large", "fixed_small")
# Improved DDPM's (and D3PM's, for vlb and aux) cells: objective -> (mean_type, var_types)
IDDPM_CELLS = {
    "simple": ("epsilon", FIXED_VARIANCES),
    "hybrid": ("epsilon", ("learned_range",)),
    "vlb": ("epsilon", ("learned_range",)),
    "aux": ("epsilon", ("learned_range",)),
}


def iddpm_objective(row: dict) -> str | None:
    """The Improved DDPM objective (simple, hybrid, vlb, aux) that a row trains as that paper
    does (eps prediction; fixed variance for L_simple, the learned range otherwise), or None
    for any other combination (e.g. DDPM Table 2's mu~ prediction or learned diagonal Sigma)."""
    objective = row.get("objective")
    if objective not in IDDPM_CELLS:
        return None
    mean_type, var_types = IDDPM_CELLS[objective]
    return objective if row.get("mean_type") == mean_type and row.get("var_type") in var_types else None


def ddpm_key(row: dict) -> tuple[str, str, str] | None:
    """(mean_type, "fixed" | "learned", objective) when the row is one of DDPM Table 2's
    combinations (epsilon or previous_x; a fixed or a directly learned diagonal variance; L_simple
    or the true bound), else None. Only the linear schedule: DDPM's."""
    var = {"learned": "learned", **dict.fromkeys(FIXED_VARIANCES, "fixed")}.get(row.get("var_type"))
    key = (row.get("mean_type"), var, row.get("objective"))
    return key if row.get("schedule") == "linear" and key in _ddpm_keys() else None  # type: ignore[return-value]


@lru_cache(maxsize=1)
def _ddpm_keys() -> frozenset[tuple[str, str, str]]:
    """DDPM Table 2's rows as (mean_type, "fixed" | "learned", objective)."""
    return frozenset((r["mean_type"], r["var"], r["objective"]) for r in paper_tables()[DDPM]["rows"])
