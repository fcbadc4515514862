"""The papers' published numbers, shipped as data (paper_tables.json) inside the package.

Each table has a `source` (paper, table number, dataset, settings) and `rows`. Improved
DDPM rows are keyed by T, schedule and objective (this project's loss names); D3PM rows
by transition and objective.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

CIFAR10 = "iddpm_cifar10"  # Improved DDPM Table 2
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
