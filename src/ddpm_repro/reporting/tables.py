"""The report: one row per grid cell (schedule x objective) with its final training loss
and NLL, read from reports/cells/<cell>/{train,eval}.json. A number that was not
computed is shown as "not computed", never estimated."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..config import Config
from ..io import write_text

NOT_COMPUTED = "not computed"


def collect_cells(cells_dir: str | Path, cells: list[str]) -> list[dict]:
    """One dict per cell in grid order: the cell's train.json and eval.json merged."""
    rows = []
    for cell in cells:
        row: dict = {"cell": cell, "schedule": cell.split("-")[0], "loss": cell.split("-", 1)[1]}
        for part in ("train", "eval"):
            path = Path(cells_dir) / cell / f"{part}.json"
            if path.is_file():
                row.update(json.loads(path.read_text()))
        rows.append(row)
    return rows


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return NOT_COMPUTED
    return f"{value:.{digits}f}"


def write_report(
    config: Config, rows: list[dict], out_dir: str | Path, reference: dict | None = None
) -> tuple[Path, Path]:
    """reports/report.md and reports/report.csv; returns their paths. `reference` holds the
    reference stage's metrics (classifier accuracy, the real-data FD baseline)."""
    out_dir = Path(out_dir)
    reference = reference or {}
    sample_counts = ", ".join(map(str, sorted({r["fd_samples"] for r in rows if "fd_samples" in r})))
    d, t, e = config.diffusion, config.train, config.evaluate
    nll_images = {r.get("nll_images") for r in rows if r.get("nll_images") is not None}
    header = [
        f"# ddpm-repro report: profile `{config.profile}`",
        "",
        f"- Dataset: **{config.data.dataset}**"
        + (
            " (sklearn's 8x8 digits, 17 grey levels mapped to 8 bits; NLL is not comparable with CIFAR-10's)"
            if config.data.dataset == "digits"
            else ""
        ),
        f"- Model preset `{config.model.preset}`, T = {d.timesteps}, {t.steps} training steps of batch "
        f"{t.batch_size}, EMA {t.ema_rate}.",
        f"- NLL: bits/dim on the first {', '.join(map(str, sorted(nll_images))) or e.nll_images} test "
        f"images, every one of the T terms plus the prior summed (full bound), EMA weights; ± is the "
        "standard error over images.",
        "- Train loss: the objective's own value (L_simple, T·L_t, ...) averaged over the last "
        f"{t.log_every} steps; losses of different objectives are not comparable with each other.",
        "- FD / IS (classifier): Frechet distance and Inception-Score analogue of the samples in the "
        "features of a small CNN trained on this dataset by the `reference` stage (test accuracy "
        f"{_fmt(reference.get('classifier_test_accuracy'))}); samples per cell: "
        f"{sample_counts or NOT_COMPUTED}. "
        f"Real held-out images score FD {_fmt(reference.get('fd_test_vs_train'))} and IS "
        f"{_fmt(reference.get('is_test'), 2)} against the training set. Not Inception features: "
        "not comparable with any published FID.",
        "- FID (Inception): not computed; this report has no Inception weights offline.",
        "- The aux rows apply D3PM's auxiliary loss to Gaussian diffusion: this project's extension.",
        "",
    ]
    table = [
        "| schedule | objective | train loss | NLL (bits/dim) | FD (classifier) | IS (classifier) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        nll = NOT_COMPUTED if r.get("nll_bpd") is None else f"{r['nll_bpd']:.3f} ± {r['nll_bpd_se']:.3f}"
        objective = f"L_{r['loss']}" + (" (extension)" if r["loss"] == "aux" else "")
        table.append(
            f"| {r['schedule']} | {objective} | {_fmt(r.get('final_loss'), 4)} | {nll} | "
            f"{_fmt(r.get('fd_classifier'))} | {_fmt(r.get('is_classifier'), 2)} |"
        )
    md_path = out_dir / "report.md"
    write_text(md_path, "\n".join(header + table) + "\n")

    fields = [
        "profile",
        "dataset",
        "schedule",
        "loss",
        "steps",
        "final_loss",
        "nll_bpd",
        "nll_bpd_se",
        "nll_images",
        "prior_bpd",
        "decoder_bpd",
        "kl_bpd",
        "fd_classifier",
        "is_classifier",
        "fd_samples",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {
                "profile": config.profile,
                "dataset": config.data.dataset,
                **{k: (NOT_COMPUTED if r.get(k) is None else r[k]) for k in fields[2:]},
            }
        )
    csv_path = out_dir / "report.csv"
    write_text(csv_path, buffer.getvalue())
    return md_path, csv_path
