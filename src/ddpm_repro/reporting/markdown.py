"""report.md: the main document. The setting first, so a CPU digits run cannot be mistaken
for the papers' CIFAR-10 runs; then the tables, the claims, the conditional run, the plots
and the sample grids, all linked with paths relative to the report."""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config
from .cells import NOT_COMPUTED, grid_axes
from .claims import Claim
from .tables import (
    Comparison,
    Table,
    claims_table,
    comparison_tables,
    fmt,
    main_table,
    per_class_table,
    setting,
)

PLOT_TITLES = {
    "loss_curves": "Training loss per cell",
    "nll_fd": "NLL and FD per cell",
    "sampling_steps": "Sample quality vs sampling steps (Improved DDPM Fig. 8)",
    "class_accuracy": "Per-class accuracy of the conditional samples",
}


def render_table(table: Table) -> str:
    """A GitHub-flavoured Markdown table with its caption above it."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join("---:" if a == "r" else "---" for a in table.align) + "|"
    return "\n".join([f"*{table.caption}*", "", line(table.header), rule, *map(line, table.rows)])


def _link(path: str | Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


def _image(label: str, path: str | Path | None, out_dir: Path) -> str:
    return NOT_COMPUTED if path is None else f"![{label}]({_link(path, out_dir)})"


def _sizes(rows: list[dict], key: str) -> str:
    """The distinct values of `key` over rows, or NOT_COMPUTED."""
    return ", ".join(map(str, sorted({r[key] for r in rows if r.get(key) is not None}))) or NOT_COMPUTED


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else factor * value


# nll.json's nll_strata_spacing, as the report words it (an older nll.json without it: no word)
STRATA_WORDS = {
    "geometric": "geometric strata, whose widths grow with t from one timestep: edges near T^(k/K);",
    "uniform": "equal strata;",
}


# beside the papers' FIDs: what keeps ours from being the same measurement (sources: pytorch-fid's
# README; the papers' tables use 50K samples; FID's upward bias at fewer samples, Chong & Forsyth 2020)
FID_CAVEAT = (
    "Two things keep it from matching the papers' FIDs exactly: pytorch-fid's port can differ "
    "slightly from the TensorFlow code the papers used (the same weights, other image resizing; "
    "its README reports 0.08 absolute on one LSUN test), and FID is biased upward at fewer "
    "samples: the papers used 50K, this report {samples} per cell."
)


def _nll_method(rows: list[dict]) -> str:
    """How the cells' NLL was computed: the full bound, or the stratified estimate with K strata."""
    methods = set()
    for r in rows:
        if r.get("nll_bpd") is None:
            continue
        if r.get("nll_estimate") == "stratified":
            strata = STRATA_WORDS.get(r.get("nll_strata_spacing"), "strata;")
            methods.add(
                "L_0 and the prior exactly plus an unbiased stratified estimate of the T - 1 KL terms "
                f"(one timestep drawn in each of {r['nll_terms'] - 1} {strata} each drawn term weighted "
                "by its stratum's size; the same draws for every cell, and the timestep noise is inside ±)"
            )
        else:
            methods.add("every one of the T terms plus the prior summed (full bound)")
    return "; ".join(sorted(methods)) or NOT_COMPUTED


def _setting(config: Config, rows: list[dict], reference: dict) -> list[str]:
    """The warning banner and the bullets saying what was run and what each metric is."""
    d, t = config.diffusion, config.train
    digits = config.data.dataset == "digits"
    papers_setting = config.data.dataset == "cifar10" and d.timesteps == 4000 and t.steps >= 500_000
    banner = (
        f"> **{'The' if papers_setting else 'Not the'} papers' setting:** {setting(config)}. The papers "
        "trained on CIFAR-10 for 500K iterations and ImageNet 64x64 for 200K-1.5M, at T = 4K. Their "
        "numbers are printed beside ours to show the direction of each effect"
        + ("." if papers_setting else ", not values to match.")
    )
    dataset = f"- Dataset: **{config.data.dataset}**" + (
        " (sklearn's 8x8 digits, 17 grey levels mapped to 8 bits; NLL is not comparable with CIFAR-10's)"
        if digits
        else ""
    )
    n_train, n_test = (reference.get(k, NOT_COMPUTED) for k in ("train_images", "test_images"))
    classifier = (
        "- FD / KID / IS (classifier): Frechet distance, kernel distance (KID, unbiased MMD^2 with the "
        "cubic polynomial kernel) and Inception-Score analogue of the samples in the "
        "features of a small CNN trained on this dataset by the `reference` stage (test accuracy "
        f"{fmt(reference.get('classifier_test_accuracy'))}); samples per cell: {_sizes(rows, 'fd_samples')}. "
        "FD's [interval] is the 95% bootstrap interval over the samples (the training statistics fixed); "
        "KID's ± is its standard error over disjoint subsets of the samples. "
        f"Real held-out images score FD {fmt(reference.get('fd_test_vs_train'))}, KID×10³ "
        f"{fmt(_scaled(reference.get('kid_test_vs_train'), 1e3), '.2f')} and IS "
        f"{fmt(reference.get('is_test'), '.2f')} against the training set. Not Inception features: not "
        "comparable with any published FID."
    )
    if any(r.get("fid_inception") is not None for r in rows):
        ref = reference.get("inception")
        fid = (
            "- FID (Inception): Frechet distance in pytorch-fid's Inception-v3 features of the same samples"
            + ("" if ref is None else f" (reference stage: {_describe(ref)})")
            + (". On upscaled 8x8 digits it is not comparable with published FIDs." if digits else ". ")
            + ("" if digits else FID_CAVEAT.format(samples=_sizes(rows, "fd_samples")))
        )
    else:
        notes = sorted({r["fid_note"] for r in rows if r.get("fid_note")})
        fid = f"- FID (Inception): {NOT_COMPUTED}" + (f" ({'; '.join(notes)})." if notes else ".")
    step_rows = [{"samples": p.get("samples")} for r in rows for p in r.get("step_curve") or []]
    return [
        banner,
        "",
        "## Setting",
        "",
        f"{dataset}; {n_train} training / {n_test} test images.",
        f"- Model preset `{config.model.preset}`, T = {d.timesteps}, {t.steps} training steps of batch "
        f"{t.batch_size}, EMA {t.ema_rate}.",
        f"- NLL: bits/dim on {_sizes(rows, 'nll_images')} test images, {_nll_method(rows)}, EMA weights; "
        "± is the standard error over images.",
        "- Train loss: the objective's own value (L_simple, T·L_t, ...) averaged over the last "
        f"{t.log_every} steps; losses of different objectives are not comparable with each other.",
        classifier,
        fid,
        "- Sampling-step curves: FD (classifier) vs the number of steps, respaced ancestral sampling and "
        "DDIM; the largest ancestral point is the full chain. Samples per point: "
        f"{_sizes(step_rows, 'samples')}.",
        "- The aux rows apply D3PM's auxiliary loss to Gaussian diffusion: this project's extension.",
        "- Each cell is matched to the papers' rows by what it trains (objective, the mean's "
        "parameterisation, the variance), not by its `losses` entry's name.",
    ]


def _comparison(c: Comparison) -> list[str]:
    """A comparison's section: its table, or a line saying that the grid has none of its cells."""
    body = (
        render_table(c.table)
        if c.table is not None
        else f"No cell of this grid trains {c.trains} (pipelines/README.md lists the profiles that do)."
    )
    return ["", f"## {c.title}", "", body]


def _describe(value: object) -> str:
    """A reference-stage entry: a number, or a mapping of named numbers."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v) if isinstance(v, float) else v}" for k, v in value.items())
    return fmt(value) if isinstance(value, float) else str(value)


def _conditional(conditional: dict | None, plots: dict[str, Path], out_dir: Path) -> list[str]:
    """The class-conditional section: cell, guidance scale, accuracy overall and per class."""
    lines = ["## Class-conditional run", ""]
    if conditional is None:
        return lines + [f"{NOT_COMPUTED.capitalize()}: no class-conditional run in this report."]
    lines += [
        f"- Cell: {conditional['cell']}, guidance scale {fmt(conditional.get('guidance_scale'), '.2f')}.",
        f"- Accuracy of the reference classifier on the samples, against the requested labels: "
        f"{fmt(conditional.get('class_accuracy'))}.",
        f"- NLL {fmt(conditional.get('nll_bpd'))} bits/dim, FD (classifier) "
        f"{fmt(conditional.get('fd_classifier'), '.2f')}.",
        "",
    ]
    table = per_class_table(conditional)
    lines += [render_table(table) if table else f"Per-class accuracy: {NOT_COMPUTED}.", ""]
    if "class_accuracy" in plots:
        lines += [_image(PLOT_TITLES["class_accuracy"], plots["class_accuracy"], out_dir), ""]
    samples = conditional.get("samples_png")
    return lines + [
        _image("conditional samples", samples, out_dir) if samples else f"Samples: {NOT_COMPUTED}."
    ]


def _samples(rows: list[dict], out_dir: Path) -> list[str]:
    """A grid of the per-cell sample PNGs: objectives down, schedules across."""
    schedules, losses = grid_axes(rows)
    cells = {(r["schedule"], r["loss"]): r for r in rows}
    header = ["objective", *(f"{s} schedule" for s in schedules)]
    body = [
        [
            f"L_{loss}",
            *(_image(f"{s}-{loss}", cells.get((s, loss), {}).get("samples_png"), out_dir) for s in schedules),
        ]
        for loss in losses
    ]
    caption = "Samples per cell (the sample stage's settings)."
    return ["## Samples", "", render_table(Table(header, body, caption, "l" * len(header)))]


def report_markdown(
    config: Config,
    rows: list[dict],
    claims: list[Claim],
    out_dir: Path,
    plots: dict[str, Path],
    reference: dict | None = None,
    conditional: dict | None = None,
) -> str:
    """The whole of report.md. `plots` maps a plot name (PLOT_TITLES) to the PNG written."""
    plot_lines = [
        f"![{title}]({_link(plots[name], out_dir)})" if name in plots else f"{title}: {NOT_COMPUTED}."
        for name, title in PLOT_TITLES.items()
        if name != "class_accuracy"
    ]
    parts = [
        [f"# ddpm-repro report: profile `{config.profile}`", ""],
        _setting(config, rows, reference or {}),
        ["", "## Results", "", render_table(main_table(config, rows))],
        *(_comparison(c) for c in comparison_tables(config, rows)),
        ["", "## The papers' claims on this run", "", render_table(claims_table(claims))],
        [""] + _conditional(conditional, plots, out_dir),
        ["", "## Plots", "", f"*{setting(config)}.*"] + [line for plot in plot_lines for line in ("", plot)],
        [""],
        _samples(rows, out_dir),
    ]
    return "\n".join(line for part in parts for line in part) + "\n"
