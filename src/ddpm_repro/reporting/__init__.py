"""The paper-style report: tables (Markdown, CSV, LaTeX), the papers' claims checked on
this run, plots and sample grids, from the per-cell metrics of the grid.

Modules: cells (read the inputs), paper (the published numbers, as package data),
claims (verdicts), tables (table contents and CSV), markdown, latex, plots, report.
"""

from .cells import collect_cells, collect_conditional
from .report import write_report

__all__ = ["collect_cells", "collect_conditional", "write_report"]
