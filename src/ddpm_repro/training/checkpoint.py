"""Checkpoints: one file per saved step, `ckpt_<step>.pt`, written atomically and loaded with
`weights_only=True`. A checkpoint holds the model, EMA, optimizer, step, timestep-sampler
state, RNG states and the resolved config, all as tensors and plain Python types, so that
it is all a resumed or evaluated run needs."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..io import atomic_write
from ..models import UNet, UNetConfig

FORMAT_VERSION = 2
# Format 1 named the diffusion section's objective `loss` and its loss entry `variant`; it
# still loads, with those keys renamed.
_FORMAT_1_RENAMES = {"loss": "objective", "variant": "loss_entry"}
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
REQUIRED_KEYS = {"format", "step", "model", "ema", "optimizer", "sampler", "rng", "config", "unet"}


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file."""


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """`directory`/ckpt_<step>.pt, the step zero-padded to 8 digits so names sort by step."""
    return Path(directory) / f"ckpt_{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in a directory, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def fault_point(name: str, step: int) -> None:
    """Fault injection for tests: DDPM_REPRO_FAULT=<name>@<step> ends the process here at
    that step with no cleanup at all, as SIGKILL would (exit status 137)."""
    if os.environ.get("DDPM_REPRO_FAULT") == f"{name}@{step}":
        os._exit(137)


def remove_partial_writes(directory: str | Path) -> None:
    """Delete temporary files left by a write that was killed (see io.atomic_write)."""
    directory = Path(directory)
    if directory.is_dir():
        for tmp in directory.glob(".ckpt_*.tmp"):
            tmp.unlink(missing_ok=True)


def move_aside(directory: str | Path) -> Path:
    """Rename a checkpoint folder to the first free `<directory>.replaced-<n>` (n = 1, 2, ...)
    and leave an empty folder in its place; returns the new name. Checkpoints of a run that
    is being replaced are kept, never deleted: they may be all a user has of a long run."""
    directory = Path(directory)
    n = 1
    while (target := directory.with_name(f"{directory.name}.replaced-{n}")).exists():
        n += 1
    directory.rename(target)
    directory.mkdir()
    return target


def write_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """The one writer of the checkpoint format: `payload` (every key of REQUIRED_KEYS) to
    `path`, atomically (a killed process leaves the old file or none, never half of one)."""
    missing = REQUIRED_KEYS - set(payload)
    if missing:
        raise ValueError(f"checkpoint payload lacks {sorted(missing)}")  # a bug, not the user's

    def write(f) -> None:
        torch.save(payload, f)
        fault_point("checkpoint-mid-write", payload["step"])

    atomic_write(path, write)
    return Path(path)


def save_checkpoint(directory: str | Path, payload: dict[str, Any], keep: int) -> Path:
    """Write payload as the checkpoint of payload["step"] in `directory`; keep the last `keep`."""
    path = write_checkpoint(checkpoint_path(directory, payload["step"]), payload)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check one checkpoint; raises CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, wrong types: all mean "unusable"
        raise CheckpointError(
            f"checkpoint '{path}' is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(payload, dict) or not REQUIRED_KEYS <= set(payload):
        raise CheckpointError(f"checkpoint '{path}' is not a ddpm-repro checkpoint (missing keys)")
    if payload["format"] == 1:
        diffusion = payload["config"].get("diffusion", {})
        for old, new in _FORMAT_1_RENAMES.items():
            if old in diffusion:
                diffusion[new] = diffusion.pop(old)
        payload["format"] = FORMAT_VERSION
    if payload["format"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format {payload['format']}, expected {FORMAT_VERSION}"
        )
    return payload


def load_latest(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest usable checkpoint in a directory, or None if there is none.

    A corrupt newer file is reported on stderr by name and the previous one is used; if
    files exist but none loads, raises CheckpointError listing them.
    """
    candidates = list_checkpoints(directory)
    errors = []
    for path in reversed(candidates):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            errors.append(str(exc))
            print(f"warning: {exc}; trying the previous checkpoint", file=sys.stderr)
    if errors:
        raise CheckpointError("no usable checkpoint in '{}': {}".format(directory, "; ".join(errors)))
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the newest usable one in a directory."""
    path = Path(path)
    if path.is_dir():
        found = load_latest(path)
        if found is None:
            raise CheckpointError(f"no checkpoint in '{path}'")
        return found[0]
    return path


def unet_config_from_dict(data: dict) -> UNetConfig:
    """The `UNetConfig` a checkpoint's "unet" entry holds (lists back to tuples)."""
    return UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def model_from_checkpoint(ckpt: dict, use_ema: bool = True, device: str | torch.device = "cpu") -> UNet:
    """Rebuild the UNet a checkpoint describes, with its EMA (default) or raw weights."""
    model = UNet(unet_config_from_dict(ckpt["unet"]))
    model.load_state_dict(ckpt["ema"] if use_ema else ckpt["model"])
    return model.to(device).eval()
