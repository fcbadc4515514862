"""report.tex: the report's tables as booktabs LaTeX, one `table` float each, to be
\\input into a paper (needs \\usepackage{booktabs}); not a standalone document."""

from __future__ import annotations

from ..config import Config
from .claims import Claim
from .tables import (
    Table,
    claims_table,
    comparison_tables,
    main_table,
    per_class_table,
    setting,
)

# Characters special to LaTeX, and the few non-ASCII ones the tables use.
_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "—": "---",
    "·": r"$\cdot$",
}


def escape(text: str) -> str:
    """Plain text as LaTeX source."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def render_table(table: Table, label: str) -> str:
    """A `table` float holding a booktabs `tabular`; paragraph columns (align "p") share
    80% of the line width so long text wraps."""
    width = 0.8 / max(table.align.count("p"), 1)
    spec = "".join(f"p{{{width:.2f}\\linewidth}}" if a == "p" else a for a in table.align)
    lines = [
        r"\begin{table}[ht]",
        r"\centering\small",
        rf"\caption{{{escape(table.caption)}}}",
        rf"\label{{tab:{label}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(escape(h) for h in table.header) + r" \\",
        r"\midrule",
        *(" & ".join(escape(c) for c in row) + r" \\" for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines)


def report_latex(
    config: Config, rows: list[dict], claims: list[Claim], conditional: dict | None = None
) -> str:
    """The whole of report.tex: results, the D3PM and DDPM comparisons (where the grid has
    their cells), the claims, per-class accuracy."""
    tables = [(main_table(config, rows), "results")]
    tables += [(c.table, c.label) for c in comparison_tables(config, rows) if c.table is not None]
    tables.append((claims_table(claims), "claims"))
    per_class = per_class_table(conditional) if conditional else None
    if per_class is not None:
        tables.append((per_class, "per-class"))
    head = [
        f"% ddpm-repro report: {setting(config)}. Generated; do not edit.",
        "% Needs \\usepackage{booktabs}.",
    ]
    return "\n\n".join(["\n".join(head), *(render_table(t, label) for t, label in tables)]) + "\n"
