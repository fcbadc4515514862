"""The report's PNG plots (matplotlib, Agg canvas, no pyplot state). A plot with no data
to show is not written; the report says "not computed" in its place."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..io import atomic_write
from .cells import NOT_COMPUTED, class_names, grid_axes


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    return path


def loss_curves(rows: list[dict], path: Path) -> Path | None:
    """One panel per objective (their losses differ in scale by orders of magnitude), one
    line per schedule, log-scale y."""
    curves = [r for r in rows if (r.get("loss_curve") or {}).get("step")]
    if not curves:
        return None
    _, losses = grid_axes(curves)
    fig = Figure(figsize=(3.2 * len(losses), 3.0))
    for i, loss in enumerate(losses):
        ax = fig.add_subplot(1, len(losses), i + 1)
        for r in (r for r in curves if r["loss"] == loss):
            c = r["loss_curve"]
            xy = [
                (s, v) for s, v in zip(c["step"], c.get("loss", []), strict=False) if v is not None and v > 0
            ]
            if xy:
                ax.plot(*zip(*xy, strict=True), label=r["schedule"])
        ax.set(title=f"L_{loss}", xlabel="step", yscale="log")
        ax.legend(fontsize="small")
    fig.axes[0].set_ylabel("training loss (own scale)")
    return _save(fig, path)


def _log_y(ax) -> None:
    """A log-scale y axis labelled 10, 20, 30 rather than 2x10^1; left linear when the axes
    hold no positive value (every one not computed)."""
    if not ax.dataLim.y1 > 0:
        return
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)


def _bars(ax, names: list[str], values: list[float | None], errors: list[float | None] | None = None) -> None:
    """A labelled bar per computed value; a missing one is a "not computed" gap, never a bar."""
    shown = [i for i, v in enumerate(values) if v is not None]
    yerr = None if errors is None else [errors[i] or 0.0 for i in shown]
    bars = ax.bar(shown, [values[i] for i in shown], yerr=yerr, capsize=3, color="tab:blue")
    ax.bar_label(bars, fmt="%.3g", fontsize="x-small", padding=2)
    for i, v in enumerate(values):
        if v is None:  # x in data units, y in axes units: works on a log axis too
            ax.text(i, 0.02, NOT_COMPUTED, transform=ax.get_xaxis_transform(), rotation=90, ha="center")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_xlim(-0.6, len(names) - 0.4)


def nll_fd(rows: list[dict], path: Path) -> Path | None:
    """NLL, FD (classifier) and KID (classifier) per cell, error bars 1 s.e.; FID (Inception)
    too where any cell has it."""
    panels = [("nll_bpd", "NLL (bits/dim)"), ("fd_classifier", "FD (classifier)")]
    panels.append(("kid_classifier", "KID (classifier)"))
    if any(r.get("fid_inception") is not None for r in rows):
        panels.append(("fid_inception", "FID (Inception)"))
    if not rows or all(r.get(k) is None for r in rows for k, _ in panels):
        return None
    names = [r["cell"] for r in rows]
    fig = Figure(figsize=(4.0 * len(panels), 3.6))
    for i, (key, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        se_key = "nll_bpd_se" if key == "nll_bpd" else f"{key}_se"
        _bars(ax, names, [r.get(key) for r in rows], [r.get(se_key) for r in rows])
        if key == "nll_bpd":
            ax.set_title(f"{label}, error bar 1 s.e.")
        else:
            ax.set_title(f"{label}, lower is better, error bar 1 s.e.", fontsize="small")
            if key != "kid_classifier":  # one diverged cell would flatten the others; KID can be < 0
                _log_y(ax)
    return _save(fig, path)


def sampling_steps(rows: list[dict], path: Path) -> Path | None:
    """FD (classifier) vs the number of sampling steps, log-x, error bars 1 bootstrap s.e.:
    ancestral (respaced) solid, DDIM dashed, one colour per cell (Improved DDPM Fig. 8)."""
    curves = [r for r in rows if r.get("step_curve")]
    if not curves:
        return None
    fig = Figure(figsize=(8.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for i, r in enumerate(curves):
        for method, style in (("ancestral", "-"), ("ddim", "--")):
            points = sorted(
                (p["steps"], p["fd_classifier"], p.get("fd_classifier_se") or 0.0)
                for p in r["step_curve"]
                if p.get("method") == method and p.get("fd_classifier") is not None
            )
            if points:
                label = r["cell"] if method == "ancestral" else None  # colour = cell, style = method
                x, y, err = zip(*points, strict=True)
                ax.errorbar(
                    x, y, yerr=err, fmt=style, marker="o", ms=3, capsize=2, color=f"C{i % 10}", label=label
                )
    ax.plot([], [], "k-", label="ancestral (respaced)")
    ax.plot([], [], "k--", label="DDIM")
    ax.set(xscale="log", xlabel="sampling steps", ylabel="FD (classifier), lower is better")
    _log_y(ax)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def class_accuracy(conditional: dict | None, path: Path) -> Path | None:
    """The conditional samples' accuracy per requested class, with the overall accuracy as a line."""
    per_class = (conditional or {}).get("per_class_accuracy")
    if not per_class:
        return None
    classes = class_names(per_class)
    fig = Figure(figsize=(5.0, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    _bars(ax, classes, [per_class[k] for k in classes])
    ax.set_xticks(range(len(classes)), classes, rotation=0, ha="center")
    overall = conditional.get("class_accuracy")
    if overall is not None and math.isfinite(overall):
        ax.axhline(overall, color="tab:red", ls="--", label=f"overall {overall:.3f}")
        ax.legend(fontsize="small", loc="lower right")
    ax.set(ylim=(0, 1.05), xlabel="requested class", ylabel="classifier accuracy", title=conditional["cell"])
    return _save(fig, path)


def write_plots(rows: list[dict], plots_dir: Path, conditional: dict | None = None) -> dict[str, Path]:
    """Every plot that has data, by name: loss_curves, nll_fd, sampling_steps, class_accuracy."""
    written = {
        "loss_curves": loss_curves(rows, plots_dir / "loss_curves.png"),
        "nll_fd": nll_fd(rows, plots_dir / "nll_fd.png"),
        "sampling_steps": sampling_steps(rows, plots_dir / "sampling_steps.png"),
        "class_accuracy": class_accuracy(conditional, plots_dir / "class_accuracy.png"),
    }
    return {name: p for name, p in written.items() if p is not None}
