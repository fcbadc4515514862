"""The report's inputs: per-cell folders of train.json, nll.json, eval.json, loss.csv and
samples.png.

A row is one dict: the JSON files merged, plus "cell", "schedule", "loss" (the `losses`
entry), what the entry trains ("objective", "mean_type", "var_type", "timestep_sampler",
from the params: reporting keys on these, never on the entry's name), "loss_curve"
(loss.csv as {column: [float | None]}) and "samples_png" (its path) for the
files that exist. A missing file (a stage not run) leaves its keys out, and the report
shows NOT_COMPUTED; a file that lacks a declared key fails (stage_outputs.py).
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from ..cell import Cell
from ..config import Config
from ..errors import UserError
from ..stage_outputs import CELL_OUTPUTS, EVAL

NOT_COMPUTED = "not computed"  # shown for every number a row lacks; never an estimate


def read_loss_curve(path: str | Path) -> dict[str, list[float | None]]:
    """loss.csv as columns of floats; an empty field (a column that does not apply) is None."""
    with open(path, newline="") as f:
        records = list(csv.DictReader(f))
    columns = list(records[0]) if records else []
    return {c: [float(r[c]) if r[c] not in ("", None) else None for r in records] for c in columns}


def settings_of(config: Config, loss: str) -> dict[str, str]:
    """What the `losses` entry `loss` trains: objective, mean_type, var_type, timestep_sampler."""
    d = config.entry_diffusion(loss)
    return {
        "objective": d.objective.value,
        "mean_type": d.mean_type.value,
        "var_type": d.var_type.value,
        "timestep_sampler": d.timestep_sampler,
    }


def read_cell_folder(folder: str | Path, cell: str, config: Config) -> dict:
    """One row from a folder holding some of train.json, nll.json, nll_per_image.json, eval.json,
    loss.csv, samples.png; `config` (the run's params) says what the cell's entry trains."""
    folder = Path(folder)
    parsed = Cell.parse(cell)
    seed = config.train.seed if parsed.seed is None else parsed.seed
    names = {"cell": cell, "schedule": parsed.schedule, "loss": parsed.loss, "seed": seed}
    row: dict = dict(names)
    for output in CELL_OUTPUTS:
        path = folder / output.filename
        if path.is_file():
            row.update(output.read(path))
    row.update(names, **settings_of(config, parsed.loss))  # the folder's cell wins over the JSON's
    if (folder / "loss.csv").is_file():
        row["loss_curve"] = read_loss_curve(folder / "loss.csv")
    if (folder / "samples.png").is_file():
        row["samples_png"] = str(folder / "samples.png")
    return row


# the figures a cell with replicates shows as mean ± s.e. over its training seeds
SEED_FIGURES = (
    "final_loss",
    "nll_bpd",
    "fd_classifier",
    "kid_classifier",
    "is_classifier",
    "fid_inception",
    "kid_inception",
)


def by_cell(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(schedule, losses entry) -> that cell's rows, one per training seed, in seed order; the
    cells in grid (first-seen) order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["schedule"], r["loss"]), []).append(r)
    return {k: sorted(g, key=lambda r: r.get("seed") or 0) for k, g in groups.items()}


def over_seeds(rows: list[dict]) -> list[dict]:
    """One row per (schedule, losses entry), in grid order, with "seeds" (how many rows it
    stands for). A cell with one seed is its own row. A cell with replicates
    (grid.replicate_seeds) is its first seed's row (curves, samples) with each SEED_FIGURES
    figure replaced by its mean over the seeds and `<figure>_se` by the standard error of that
    mean across seeds (both None, not computed, when a seed lacks the figure); FD's bootstrap
    interval, which describes one seed, is dropped."""
    merged = []
    for group in by_cell(rows).values():
        row = {**group[0], "seeds": len(group)}
        if len(group) > 1:
            for key in SEED_FIGURES:
                values = [r[key] for r in group if isinstance(r.get(key), int | float)]
                whole = len(values) == len(group)  # a seed without the figure: the mean is not computed
                row[key] = statistics.fmean(values) if whole else None
                row[f"{key}_se"] = statistics.stdev(values) / math.sqrt(len(values)) if whole else None
            row.pop("fd_classifier_low", None), row.pop("fd_classifier_high", None)
            row.pop("fid_inception_low", None), row.pop("fid_inception_high", None)
        merged.append(row)
    return merged


def grid_axes(rows: list[dict]) -> tuple[list[str], list[str]]:
    """The schedules and the losses of `rows`, each in first-seen (grid) order."""
    return list(dict.fromkeys(r["schedule"] for r in rows)), list(dict.fromkeys(r["loss"] for r in rows))


def class_names(per_class: dict) -> list[str]:
    """The keys of per_class_accuracy in numeric order ("2" before "10")."""
    return sorted(per_class, key=lambda k: (len(k), k))


def collect_cells(cells_dir: str | Path, config: Config) -> list[dict]:
    """One row per cell of the config's grid in grid order, read from `cells_dir`/<cell>/."""
    return [read_cell_folder(Path(cells_dir) / cell, cell, config) for cell in config.grid.cells]


def collect_conditional(folder: str | Path, config: Config) -> dict | None:
    """The class-conditional run's row (its eval.json names the cell), or None when the
    folder or its eval.json does not exist."""
    path = Path(folder) / "eval.json"
    if not path.is_file():
        return None
    cell = EVAL.read(path)["cell"]
    if not isinstance(cell, str) or "-" not in cell:
        raise UserError(f"{path}: 'cell' must name a grid cell like cosine-hybrid, got {cell!r}")
    return read_cell_folder(folder, cell, config)
