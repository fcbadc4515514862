"""The report's inputs: per-cell folders of train.json, nll.json, eval.json, loss.csv and
samples.png.

A row is one dict: the JSON files merged, plus "cell", "schedule", "loss",
"loss_curve" (loss.csv as {column: [float | None]}) and "samples_png" (its path) for the
files that exist. A missing file (a stage not run) leaves its keys out, and the report
shows NOT_COMPUTED; a file that lacks a declared key fails (stage_outputs.py).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..cell import Cell
from ..errors import UserError
from ..stage_outputs import CELL_OUTPUTS, EVAL

NOT_COMPUTED = "not computed"  # shown for every number a row lacks; never an estimate


def read_loss_curve(path: str | Path) -> dict[str, list[float | None]]:
    """loss.csv as columns of floats; an empty field (a column that does not apply) is None."""
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    columns = list(records[0]) if records else []
    return {c: [float(r[c]) if r[c] not in ("", None) else None for r in records] for c in columns}


def read_cell_folder(folder: str | Path, cell: str) -> dict:
    """One row from a folder holding some of train.json, nll.json, nll_per_image.json, eval.json,
    loss.csv, samples.png."""
    folder = Path(folder)
    parsed = Cell.parse(cell)
    schedule, loss = parsed.schedule, parsed.loss
    row: dict = {"cell": cell, "schedule": schedule, "loss": loss}
    for output in CELL_OUTPUTS:
        path = folder / output.filename
        if path.is_file():
            row.update(output.read(path))
    row.update(cell=cell, schedule=schedule, loss=loss)  # the folder's cell wins over the JSON's
    if (folder / "loss.csv").is_file():
        row["loss_curve"] = read_loss_curve(folder / "loss.csv")
    if (folder / "samples.png").is_file():
        row["samples_png"] = str(folder / "samples.png")
    return row


def grid_axes(rows: list[dict]) -> tuple[list[str], list[str]]:
    """The schedules and the losses of `rows`, each in first-seen (grid) order."""
    return list(dict.fromkeys(r["schedule"] for r in rows)), list(dict.fromkeys(r["loss"] for r in rows))


def class_names(per_class: dict) -> list[str]:
    """The keys of per_class_accuracy in numeric order ("2" before "10")."""
    return sorted(per_class, key=lambda k: (len(k), k))


def collect_cells(cells_dir: str | Path, cells: list[str]) -> list[dict]:
    """One row per cell in grid order, read from `cells_dir`/<cell>/."""
    return [read_cell_folder(Path(cells_dir) / cell, cell) for cell in cells]


def collect_conditional(folder: str | Path) -> dict | None:
    """The class-conditional run's row (its eval.json names the cell), or None when the
    folder or its eval.json does not exist."""
    path = Path(folder) / "eval.json"
    if not path.is_file():
        return None
    cell = EVAL.read(path)["cell"]
    if not isinstance(cell, str) or "-" not in cell:
        raise UserError(f"{path}: 'cell' must name a grid cell like cosine-hybrid, got {cell!r}")
    return read_cell_folder(folder, cell)
