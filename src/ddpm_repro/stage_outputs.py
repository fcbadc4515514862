"""Every stage's metrics file and the keys it holds, declared once.

The stage handlers write these files through `StageOutput.write`, and reporting/ and
regression.py read them through `StageOutput.read`. A key that a writer forgets, renames or
adds without declaring it here fails at write time (a bug: a traceback); a file on disk that
lacks a required key, or holds one not declared, fails at read time with the file and the
keys named (a `UserError`), instead of turning a report column into "not computed".

A value may be null where the setting it depends on did not apply (`final_vb` of an
L_simple cell, `fid_inception` without Inception weights); the key is still there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import write_json


@dataclass(frozen=True)
class StageOutput:
    """One stage's JSON file: its name in a cell folder and the keys it must and may hold."""

    filename: str
    required: frozenset[str]
    optional: frozenset[str] = frozenset()

    def problems(self, data: Any) -> list[str]:
        """What is wrong with `data` as this file's content; empty when nothing is."""
        if not isinstance(data, dict):
            return [f"expected a JSON object, got {type(data).__name__}"]
        out = []
        if missing := sorted(self.required - data.keys()):
            out.append(f"missing keys {missing}")
        if unknown := sorted(data.keys() - self.required - self.optional):
            out.append(f"undeclared keys {unknown} (declared in ddpm_repro/stage_outputs.py)")
        return out

    def write(self, path: str | Path, data: dict) -> None:
        """Write `data` atomically as JSON after checking its keys; a wrong key is the writer's bug."""
        if problems := self.problems(data):
            raise RuntimeError(f"{self.filename} for '{path}': {'; '.join(problems)}")
        write_json(path, data)

    def read(self, path: str | Path) -> dict:
        """The checked content of `path`; raises UserError naming the file and the bad keys."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"'{path}' is not valid JSON ({exc}); rerun the stage that writes it") from exc
        if problems := self.problems(data):
            raise UserError(f"'{path}': {'; '.join(problems)}; rerun the stage that writes it")
        return data


def _keys(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _quality(fd: str, kid: str) -> frozenset[str]:
    """The keys of evaluation.reference.sample_quality for one feature space."""
    return _keys(f"{fd} {fd}_se {fd}_low {fd}_high {kid} {kid}_se {kid}_subsets")


TRAIN = StageOutput(
    "train.json",
    _keys("cell steps final_loss final_mse final_vb images_per_s probe_loss train_seconds_this_run"),
)
NLL = StageOutput(
    "nll.json",
    _keys(
        "cell checkpoint_step nll_seconds nll_bpd nll_bpd_se prior_bpd kl_bpd decoder_bpd "
        "nll_images nll_terms nll_estimate"
    ),
    _keys("nll_strata_spacing"),  # written since 2026-12-05
)
NLL_PER_IMAGE = StageOutput("nll_per_image.json", _keys("cell nll_per_image"))
EVAL = StageOutput(
    "eval.json",
    _quality("fd_classifier", "kid_classifier")
    | _keys("cell checkpoint_step eval_seconds is_classifier fd_samples fid_inception"),
    # Inception figures when its weights exist (else fid_note says why), the step curve on the
    # schedules evaluate.curve_schedules names, class accuracy for a class-conditional cell
    _quality("fid_inception", "kid_inception")
    | _keys("fid_note step_curve class_accuracy per_class_accuracy guidance_scale"),
)
REFERENCE = StageOutput(
    "reference.json",
    _keys("classifier_test_accuracy fd_test_vs_train kid_test_vs_train is_test")
    | _keys("test_images train_images inception"),
    _keys("inception_note"),
)
CELL_OUTPUTS = (TRAIN, NLL, NLL_PER_IMAGE, EVAL)  # what a cell folder under reports/cells/ may hold
