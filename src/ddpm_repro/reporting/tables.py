"""The report's tables as data: what each table holds, formatted as plain text cells, and
the machine-readable CSV forms. markdown.py and latex.py render the same `Table`s, so
the two documents cannot disagree."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from ..config import Config, LossType
from .cells import NOT_COMPUTED, class_names
from .claims import RULES, Claim
from .paper import CIFAR10, D3PM, DDPM, IMAGENET64, ddpm_key, iddpm_objective, paper_row

NO_PAPER_ROW = "—"  # the paper has no such row (unlike NOT_COMPUTED: ours, missing)


@dataclass(frozen=True)
class Table:
    """A header, rows of text cells, a caption, and one alignment letter per column:
    l(eft), r(ight), or p (left, a paragraph that wraps in LaTeX)."""

    header: list[str]
    rows: list[list[str]]
    caption: str
    align: str


def fmt(value: float | None, spec: str = ".3f") -> str:
    """A number, or NOT_COMPUTED when it is missing."""
    return NOT_COMPUTED if value is None else format(value, spec)


def fmt_nll(row: dict) -> str:
    """'NLL ± s.e.' in bits/dim."""
    if row.get("nll_bpd") is None:
        return NOT_COMPUTED
    se = row.get("nll_bpd_se")
    return f"{row['nll_bpd']:.3f}" + ("" if se is None else f" ± {se:.3f}")


def is_extension(row: dict) -> bool:
    """Whether a row's objective is this project's extension (`LossType.is_extension`)."""
    return LossType(row["objective"]).is_extension


def objective_label(row: dict) -> str:
    """The objective a row trains ('L_simple', ...), with the `losses` entry's name when it
    differs (e.g. 'L_vlb (mean-vlb-fixed)'); an extension's objective (aux) is labelled so."""
    label = f"L_{row['objective']}" + ("" if row["loss"] == row["objective"] else f" ({row['loss']})")
    return label + (" (extension)" if is_extension(row) else "")


def setting(config: Config) -> str:
    """The run's setting in one line, for every caption."""
    t = config.train
    return (
        f"profile {config.profile}, dataset {config.data.dataset}, T = {config.diffusion.timesteps}, "
        f"{t.steps} training steps of batch {t.batch_size}"
    )


def fmt_interval(row: dict, key: str) -> str:
    """'value [low, high]' (the bootstrap 95% interval), 'mean ± s.e.' over the seeds of a
    cell with replicates, or the value alone when a row predates the interval."""
    if row.get(key) is None:
        return NOT_COMPUTED
    if row.get("seeds", 1) > 1:
        se = row.get(f"{key}_se")
        return f"{row[key]:.2f}" + ("" if se is None else f" ± {se:.2f}")
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    return f"{row[key]:.2f}" + ("" if low is None or high is None else f" [{low:.2f}, {high:.2f}]")


def fmt_kid(row: dict, key: str) -> str:
    """KID x 10^3 ± its s.e. x 10^3."""
    if row.get(key) is None:
        return NOT_COMPUTED
    se = row.get(f"{key}_se")
    return f"{1e3 * row[key]:.2f}" + ("" if se is None else f" ± {1e3 * se:.2f}")


def seeds_note(rows: list[dict]) -> str:
    """The caption's sentence on replicates, when some cell has more than one training seed."""
    n = sorted({r.get("seeds", 1) for r in rows if r.get("seeds", 1) > 1})
    if not n:
        return ""
    return (
        f" Cells with {' or '.join(map(str, n))} training seeds (grid.replicate_seeds) show the mean over "
        "their seeds ± the standard error across seeds."
    )


def _ours(row: dict) -> list[str]:
    return [
        fmt_nll(row),
        fmt_interval(row, "fd_classifier"),
        fmt_kid(row, "kid_classifier"),
        fmt(row.get("is_classifier"), ".2f"),
        fmt_interval(row, "fid_inception"),
    ]


OURS_HEADER = ["NLL (bits/dim)", "FD (classifier) [95%]", "KID×10³ (classifier)", "IS (classifier)"]
OURS_HEADER += ["FID (Inception) [95%]"]


def _paper(
    table: str, keys: tuple[tuple[str, str], ...], timesteps: int | None = None, **match: str
) -> list[str]:
    """The paper's values for `keys` ((field, format spec), ...), with the row's T when it
    differs from ours; NO_PAPER_ROW when the paper has no such row."""
    row = paper_row(table, timesteps, **match)
    if row is None:
        return [NO_PAPER_ROW] * len(keys)
    at_t = "" if "T" not in row or row["T"] == timesteps else f" (T={row['T'] // 1000}K)"
    return [format(row[k], spec) + at_t for k, spec in keys]


def main_table(config: Config, rows: list[dict]) -> Table:
    """Rows schedule x objective: ours beside Improved DDPM Tables 2 (CIFAR-10) and 1 (ImageNet 64),
    where the cell trains as that paper did (`iddpm_objective`)."""
    T = config.diffusion.timesteps

    def paper(table: str, keys: tuple[tuple[str, str], ...], row: dict) -> list[str]:
        objective = iddpm_objective(row)
        if objective is None:
            return [NO_PAPER_ROW] * len(keys)
        return _paper(table, keys, T, schedule=row["schedule"], objective=objective)

    body = [
        [r["schedule"], objective_label(r), fmt(r.get("final_loss"), ".4g"), *_ours(r)]
        + paper(CIFAR10, (("nll", ".2f"), ("fid", ".2f")), r)
        + paper(IMAGENET64, (("nll", ".2f"), ("fid", ".1f")), r)
        for r in rows
    ]
    header = ["schedule", "objective", "train loss", *OURS_HEADER]
    header += ["CIFAR-10 NLL (paper)", "CIFAR-10 FID (paper)"]
    header += ["ImageNet-64 NLL (paper)", "ImageNet-64 FID (paper)"]
    caption = (
        f"Ours ({setting(config)}) beside Improved DDPM Table 2 (CIFAR-10, 500K iterations) and Table 1 "
        f"(ImageNet 64x64, 200K iterations); the paper's row at our T when it has one, else at T = 4K "
        f"(marked). {NO_PAPER_ROW}: the paper has no such row.{seeds_note(rows)}"
    )
    return Table(header, body, caption, "ll" + "r" * 10)


def _loss_setting(config: Config, entry: str, key: str) -> Any:
    """A `losses` entry's setting, or the diffusion section's where the entry leaves it unset."""
    value = getattr(config.losses.get(entry), key, None)
    return getattr(config.diffusion, key) if value is None else value


def d3pm_rows(rows: list[dict]) -> list[dict]:
    """The L_vlb cells, then the aux cells, that train as Improved DDPM's L_vlb (eps, learned range)."""
    return [r for objective in ("vlb", "aux") for r in rows if iddpm_objective(r) == objective]


def d3pm_table(config: Config, rows: list[dict]) -> Table:
    """The vlb and aux cells beside D3PM Table 3's discretized-Gaussian rows."""
    body = [
        [f"{r['cell']}" + (" (extension)" if is_extension(r) else ""), *_ours(r)]
        + _paper(
            D3PM,
            (("label", ""), ("nll", ".3f"), ("is", ".2f"), ("fid", ".2f")),
            transition="Gauss",
            objective=r["objective"],
        )
        for r in d3pm_rows(rows)
    ]
    header = ["cell", *OURS_HEADER]
    header += ["D3PM row", "D3PM NLL", "D3PM IS", "D3PM FID"]
    form = _loss_setting(config, "aux", "aux_variance")
    caption = (
        f"L_vlb and the auxiliary loss ({setting(config)}) beside D3PM Table 3 (CIFAR-10, discrete "
        "diffusion with discretized-Gaussian transitions). Applying the auxiliary term to continuous "
        f"Gaussian diffusion is this project's extension. A_t scores x_0 under the '{form.value}' "
        'x_0-distribution (README, "Modifications"); timesteps are drawn by '
        f"'{_loss_setting(config, 'aux', 'timestep_sampler')}' for aux and "
        f"'{_loss_setting(config, 'vlb', 'timestep_sampler')}' for vlb."
    )
    return Table(header, body, caption, "lrrrrrlrrr")


def ddpm_rows(rows: list[dict]) -> list[dict]:
    """The cells that train one of DDPM Table 2's combinations (`ddpm_key`), in grid order."""
    return [r for r in rows if ddpm_key(r) is not None]


def _ddpm_paper(row: dict) -> list[str]:
    """DDPM's label, IS, FID and NLL for the row's combination; 'unstable' where the paper says so."""
    mean_type, var, objective = ddpm_key(row)  # type: ignore[misc]
    paper = paper_row(DDPM, mean_type=mean_type, var=var, objective=objective)
    assert paper is not None  # ddpm_key only matches the paper's rows
    unstable = paper.get("note", NO_PAPER_ROW)  # Table 2 gives no IS / FID where training diverged
    return [paper["label"]] + [
        format(paper[k], spec) if k in paper else unstable if k != "nll" else NO_PAPER_ROW
        for k, spec in (("is", ".2f"), ("fid", ".2f"), ("nll", ".2f"))
    ]


def ddpm_table(config: Config, rows: list[dict]) -> Table:
    """The cells that train DDPM Table 2's combinations beside its IS and FID, and Table 1's NLL."""
    body = [[r["cell"], *_ours(r), *_ddpm_paper(r)] for r in ddpm_rows(rows)]
    header = ["cell", *OURS_HEADER, "DDPM row", "DDPM IS", "DDPM FID", "DDPM NLL (Table 1)"]
    caption = (
        f"Ours ({setting(config)}) beside DDPM Table 2 (CIFAR-10, the parameterisation x objective "
        "ablation, IS / FID) and Table 1 (NLL, given for two rows), matched on what each cell trains: "
        "the mean's parameterisation (eps or mu~), the variance (fixed, or a learned diagonal) and the "
        "objective (L_simple, or the true bound L), on DDPM's linear schedule. 'unstable': DDPM reports "
        f"that training diverged; {NO_PAPER_ROW}: the paper gives no such number."
    )
    return Table(header, body, caption, "l" + "r" * len(OURS_HEADER) + "lrrr")


@dataclass(frozen=True)
class Comparison:
    """A paper's table set beside the cells that train what it reports: `table` is None when no
    cell of the grid does (`trains` says what a cell would have to train)."""

    label: str
    title: str
    trains: str
    table: Table | None


def comparison_tables(config: Config, rows: list[dict]) -> list[Comparison]:
    """The comparisons with D3PM and with DDPM, in report order, each with its table or None;
    the one decision both report.md and report.tex render."""
    return [
        Comparison(
            "d3pm",
            "The auxiliary loss beside D3PM",
            "Improved DDPM's L_vlb or the aux loss",
            d3pm_table(config, rows) if d3pm_rows(rows) else None,
        ),
        Comparison(
            "ddpm",
            "The parameterisation ablation beside DDPM",
            "one of DDPM Table 2's combinations",
            ddpm_table(config, rows) if ddpm_rows(rows) else None,
        ),
    ]


def claims_table(claims: list[Claim]) -> Table:
    """Each claim, the measured evidence with numbers, and the verdict."""
    caption = f"The papers' claims checked on this run. {RULES}"
    return Table(
        ["claim", "measured", "verdict"], [[c.claim, c.evidence, c.verdict] for c in claims], caption, "ppl"
    )


def per_class_table(conditional: dict) -> Table | None:
    """The conditional samples' per-class accuracy, one column per class; None if not computed."""
    per_class = conditional.get("per_class_accuracy")
    if not per_class:
        return None
    classes = class_names(per_class)
    caption = (
        f"Accuracy of the reference classifier on class-conditional samples of {conditional['cell']} "
        f"(guidance scale {fmt(conditional.get('guidance_scale'), '.2f')}), per requested class."
    )
    body = [["accuracy", *(fmt(per_class[k]) for k in classes)]]
    return Table(["class", *classes], body, caption, "l" + "r" * len(classes))


CSV_FIELDS = [
    "profile",
    "dataset",
    "cell",
    "schedule",
    "loss",
    "seed",
    "objective",
    "mean_type",
    "var_type",
    "steps",
    "final_loss",
    "final_mse",
    "final_vb",
    "nll_bpd",
    "nll_bpd_se",
    "nll_images",
    "nll_estimate",
    "nll_strata_spacing",
    "nll_terms",
    "prior_bpd",
    "decoder_bpd",
    "kl_bpd",
    "fd_classifier",
    "fd_classifier_se",
    "fd_classifier_low",
    "fd_classifier_high",
    "kid_classifier",
    "kid_classifier_se",
    "is_classifier",
    "fd_samples",
    "fid_inception",
    "fid_inception_se",
    "fid_inception_low",
    "fid_inception_high",
    "kid_inception",
    "kid_inception_se",
    "checkpoint_step",
]
STEP_FIELDS = ["cell", "schedule", "loss", "method", "steps", "samples", "fd_classifier", "fd_classifier_se"]
STEP_FIELDS += ["fd_ratio", "fd_ratio_se"]


def _csv(fields: list[str], records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: NOT_COMPUTED if r.get(k) is None else r[k] for k in fields} for r in records)
    return buffer.getvalue()


def report_csv(config: Config, rows: list[dict]) -> str:
    """report.csv: one line per cell, full-precision numbers, NOT_COMPUTED where missing."""
    return _csv(CSV_FIELDS, [{**r, "profile": config.profile, "dataset": config.data.dataset} for r in rows])


def steps_csv(rows: list[dict]) -> str:
    """steps.csv: one line per step-curve point (Improved DDPM Fig. 8); cells without a
    curve have no lines."""
    points = [{**r, **p} for r in rows for p in r.get("step_curve") or []]
    return _csv(STEP_FIELDS, points)
