"""The CI regression: a pipeline run's per-cell metrics against committed pins.

The pins file (pipelines/smoke/pins.json) holds, per metric, a tolerance and where it came
from, and per cell the pinned values. Pinned metrics depend on the weights alone, never on
timing or on the last minibatch: `probe_loss` (the objective on a fixed batch, fixed t and
noise, train.json), `nll_bpd` (fixed test images and noise, nll.json) and `fd_classifier` (fixed
sampling seed, eval.json). A value passes when |got - pinned| <= abs + rel * |pinned|.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .io import write_json
from .stage_outputs import EVAL, NLL, TRAIN

PINNED = {"probe_loss": TRAIN, "nll_bpd": NLL, "fd_classifier": EVAL}  # metric -> the file that holds it


@dataclass(frozen=True)
class Check:
    """One pinned number of one cell, as measured now."""

    cell: str
    metric: str
    pinned: float | None
    got: float | None
    tolerance: str
    ok: bool


def read_metrics(cells_dir: str | Path, cells: list[str]) -> dict[str, dict[str, float | None]]:
    """{cell: {metric: value}} for the PINNED metrics; None where a file is missing (a file
    without its key fails, naming both)."""
    out: dict[str, dict[str, float | None]] = {}
    for cell in cells:
        values: dict[str, float | None] = {}
        for metric, output in PINNED.items():
            path = Path(cells_dir) / cell / output.filename
            values[metric] = output.read(path)[metric] if path.is_file() else None
        out[cell] = values
    return out


def load_pins(path: str | Path) -> dict:
    """The pins file; errors name it and what is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pins file '{path}' not found; create it with `ddpm-repro regression --update`"
        )
    pins = json.loads(path.read_text())
    for key in ("tolerances", "cells"):
        if key not in pins:
            raise UserError(f"pins file '{path}' has no '{key}' section")
    missing = [m for m in PINNED if m not in pins["tolerances"]]
    if missing:
        raise UserError(f"pins file '{path}': no tolerance for {', '.join(missing)}")
    return pins


def compare(pins: dict, got: dict[str, dict[str, float | None]]) -> list[Check]:
    """Every pinned (cell, metric) against the measured value; a missing value fails, and so
    does a cell that was measured but has no pins (the grid changed: re-pin)."""
    checks = []
    for cell in sorted(set(pins["cells"]) | set(got)):
        for metric in PINNED:
            tol = pins["tolerances"][metric]
            pinned = pins["cells"].get(cell, {}).get(metric)
            value = got.get(cell, {}).get(metric)
            ok = (
                pinned is not None
                and value is not None
                and abs(value - pinned) <= tol["abs"] + tol["rel"] * abs(pinned)
            )
            checks.append(Check(cell, metric, pinned, value, f"±({tol['abs']:g} + {tol['rel']:g}·|pin|)", ok))
    return checks


def format_table(checks: list[Check], only_failures: bool = False) -> str:
    """A Markdown table: cell, metric, pinned, got, difference, tolerance, verdict."""

    def num(v: float | None) -> str:
        return "missing" if v is None else f"{v:.6g}"

    lines = ["| cell | metric | pinned | got | got − pinned | tolerance | |", "|---|---|---|---|---|---|---|"]
    for c in checks:
        if only_failures and c.ok:
            continue
        diff = "" if c.pinned is None or c.got is None else f"{c.got - c.pinned:+.3g}"
        verdict = "ok" if c.ok else "**FAIL**"
        lines.append(
            f"| {c.cell} | {c.metric} | {num(c.pinned)} | {num(c.got)} | {diff} | {c.tolerance} | {verdict} |"
        )
    return "\n".join(lines)


def update_pins(path: str | Path, got: dict[str, dict[str, float | None]]) -> None:
    """Re-pin: the measured values replace the pinned ones; tolerances and notes are kept."""
    pins = load_pins(path)
    missing = [f"{cell}/{m}" for cell, values in got.items() for m, v in values.items() if v is None]
    if missing:
        raise UserError(f"cannot pin missing metrics: {', '.join(missing)}")
    pins["cells"] = got
    write_json(path, pins)
