"""Paper-style tables (Markdown, CSV) from the per-cell metrics JSON."""

from .tables import collect_cells, write_report

__all__ = ["collect_cells", "write_report"]
