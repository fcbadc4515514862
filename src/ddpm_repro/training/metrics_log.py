"""A CSV of training metrics kept beside the checkpoints, so a resumed run's loss curve
is whole: rows after the resumed step are dropped, later rows appended."""

from __future__ import annotations

import csv
from pathlib import Path

FIELDS = ["step", "loss", "mse", "vb", "aux", "grad_norm", "lr", "images_per_s"]


class CsvMetricsLog:
    """A training callback appending one row per `train.log_every` steps."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_start(self, step: int, checkpoint_dir: Path) -> None:
        """Keep the rows up to `step` (where training resumes) and drop the later ones, which
        the run that wrote them did not checkpoint; a new file gets its header at once."""
        rows = self.rows()
        kept = [r for r in rows if int(r["step"]) <= step]
        if len(kept) != len(rows) or not self.path.exists():
            self._write(kept)

    def rows(self) -> list[dict[str, str]]:
        """Every row of the CSV as strings keyed by `FIELDS` ([] if there is no file yet)."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def last(self) -> dict[str, float]:
        """The newest row's metrics (empty if none), e.g. for a run that had nothing left to train."""
        rows = self.rows()
        return {k: float(v) for k, v in rows[-1].items() if k != "step" and v} if rows else {}

    def _write(self, rows: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Append one row for `step` (6 significant digits; absent fields left empty) and flush."""
        row = {"step": step, **{k: f"{metrics[k]:.6g}" for k in FIELDS[1:] if k in metrics}}
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(row)
            f.flush()

    def on_checkpoint(self, step: int, path: Path) -> None:
        """Nothing to do: every row is flushed as it is written."""
