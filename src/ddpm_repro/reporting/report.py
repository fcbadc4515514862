"""write_report: every file of the report stage, from the rows of one grid."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import Config
from ..io import write_text
from .cells import over_seeds
from .claims import check_claims
from .latex import report_latex
from .markdown import report_markdown
from .plots import write_plots
from .tables import report_csv, steps_csv

SUMMARY_KEYS = ("final_loss", "nll_bpd", "nll_bpd_se", "fd_classifier", "fd_classifier_se", "kid_classifier")


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """{cell: {train loss, NLL and its s.e., FD and its s.e., KID}}: the one small metrics file
    of a run (DVC's `metrics: reports/summary.json`), so `dvc exp show` has a short table to
    read. A figure the cell did not compute is left out, never filled in."""
    return {r["cell"]: {k: r[k] for k in SUMMARY_KEYS if isinstance(r.get(k), int | float)} for r in rows}


def write_report(
    config: Config,
    rows: list[dict],
    out_dir: str | Path,
    reference: dict | None = None,
    conditional: dict | None = None,
) -> list[Path]:
    """Write report.md, report.csv, steps.csv, report.tex, summary.json and plots/*.png under
    `out_dir` (each atomically) and return their paths. `rows` come from collect_cells (one per
    cell and seed), `reference` is the reference stage's metrics, `conditional` the
    class-conditional run's row (collect_conditional). The tables and plots show one row per
    cell (mean ± s.e. over its seeds when it has replicates); report.csv, steps.csv and
    summary.json one per seed."""
    out_dir = Path(out_dir)
    claims = check_claims(rows, config.diffusion.timesteps)  # seed by seed where there are replicates
    cells = over_seeds(rows)  # one row per cell: mean ± s.e. over its seeds
    plots = write_plots(cells, out_dir / "plots", conditional)
    documents = {
        out_dir / "report.md": report_markdown(config, cells, claims, out_dir, plots, reference, conditional),
        out_dir / "report.csv": report_csv(config, rows),
        out_dir / "steps.csv": steps_csv(rows),
        out_dir / "report.tex": report_latex(config, cells, claims, conditional),
        out_dir / "summary.json": json.dumps(summary(rows), indent=2) + "\n",
    }
    for path, text in documents.items():
        write_text(path, text)
    return [*documents, *plots.values()]
