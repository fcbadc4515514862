"""A grid cell's name, `<schedule>-<loss entry>[-s<seed>][-cond]`, parsed in one place.

The loss entry is a `losses:` name and may hold dashes (`cosine-mean-vlb-learned`); schedules
hold none. `-s<seed>` names a training-seed replicate, `-cond` the class-conditional variant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UserError

_SEED = re.compile(r"(.+)-s(\d+)")


@dataclass(frozen=True)
class Cell:
    """schedule (e.g. cosine), loss (the `losses:` entry, e.g. hybrid), seed (None: the grid's
    only seed), cond (the class-conditional variant)."""

    schedule: str
    loss: str
    seed: int | None = None
    cond: bool = False

    @classmethod
    def parse(cls, text: str) -> Cell:
        """'cosine-hybrid' -> Cell('cosine', 'hybrid'); 'linear-vlb-s2-cond' -> seed 2, cond."""
        rest, cond = (text[: -len("-cond")], True) if text.endswith("-cond") else (text, False)
        seed = None
        if m := _SEED.fullmatch(rest):
            rest, seed = m.group(1), int(m.group(2))
        schedule, sep, loss = rest.partition("-")
        if not (sep and schedule and loss):
            raise UserError(f"cell {text!r} is not of the form <schedule>-<loss>, e.g. cosine-hybrid")
        return cls(schedule, loss, seed, cond)

    def stage(self, command: str) -> str:
        """The DVC stage (dvc.yaml) that runs `command` (train, sample, nll, evaluate) for this
        cell: 'train@cosine-hybrid', a replicate's 'train-seed@cosine-hybrid-1', a
        class-conditional variant's 'train-cond@cosine-hybrid'."""
        base = f"{self.schedule}-{self.loss}"
        if self.cond:
            return f"{command}-cond@{base}"
        return f"{command}@{base}" if self.seed is None else f"{command}-seed@{base}-{self.seed}"

    def __str__(self) -> str:
        seed = f"-s{self.seed}" if self.seed is not None else ""
        return f"{self.schedule}-{self.loss}{seed}{'-cond' if self.cond else ''}"
