"""Progress of long work: a tqdm bar on a terminal, elsewhere (a pipeline's log, CI, a batch
job) one line every `DDPM_REPRO_LOG_INTERVAL` seconds (default 60) and one at the end:

    train cosine-hybrid: step 300/1000 (30%), loss 0.0312, 812 images/s, ETA 52 s

so that a stage that runs for hours is never silent.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from .errors import UserError

DEFAULT_INTERVAL_S = 60.0


def log_interval() -> float:
    """Seconds between status lines, from DDPM_REPRO_LOG_INTERVAL (0: a line per update)."""
    raw = os.environ.get("DDPM_REPRO_LOG_INTERVAL", "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        raise UserError(f"DDPM_REPRO_LOG_INTERVAL must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise UserError(f"DDPM_REPRO_LOG_INTERVAL must be >= 0, got {raw!r}")
    return value


def format_duration(seconds: float) -> str:
    """'52 s', '4 min 05 s', '3 h 12 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts `total` units of work from `initial`; `update` adds to the count (or sets it with
    `done=`) and takes named figures to show (loss, images/s). With `bar` false, or when
    `stream` is not a terminal, prints status lines instead of a bar; `enabled` false prints
    nothing (a worker that is not rank 0)."""

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str,
        initial: int = 0,
        bar: bool = True,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.desc, self.total, self.unit, self.enabled = desc, total, unit, enabled
        self.stream = stream or sys.stderr
        self.done, self.start_done = initial, initial
        self.figures: dict[str, str] = {}
        self.start = self.last_line = time.perf_counter()
        self.interval = log_interval()
        self._bar = None
        if enabled and bar and self.stream.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream)

    def update(self, n: int = 1, done: int | None = None, **figures: str | float) -> None:
        """Add `n` units (or set the count to `done`); `figures` replace the shown values."""
        if not self.enabled:
            return
        new = self.done + n if done is None else done
        self.figures.update({k: v if isinstance(v, str) else f"{v:.4g}" for k, v in figures.items()})
        if self._bar is not None:
            self._bar.update(new - self.done)
            if figures:
                self._bar.set_postfix(self.figures, refresh=False)
        changed, self.done = new != self.done, new
        now = time.perf_counter()
        finished = changed and self.done >= self.total
        if self._bar is None and (now - self.last_line >= self.interval or finished):
            self.last_line = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """The status line: count, share, figures, rate and ETA."""
        now = time.perf_counter() if now is None else now
        share = 100 * self.done / max(self.total, 1)
        parts = [f"{self.desc}: {self.unit} {self.done}/{self.total} ({share:.0f}%)"]
        parts += [f"{k} {v}" for k, v in self.figures.items()]
        elapsed, worked = now - self.start, self.done - self.start_done
        if worked > 0 and elapsed > 0:
            rate = worked / elapsed
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.done < self.total:
                parts.append(f"ETA {format_duration((self.total - self.done) / rate)}")
            else:
                parts.append(f"took {format_duration(elapsed)}")
        return ", ".join(parts)

    def close(self) -> None:
        """End the bar, or print the last line if the count stopped short of the total."""
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.done < self.total:
            print(self.line(), file=self.stream, flush=True)
