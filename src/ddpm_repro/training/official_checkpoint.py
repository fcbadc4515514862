"""Converting a checkpoint released with Improved DDPM (github.com/openai/improved-diffusion)
into one of ours: the weights mapped by models/official.py, and the settings their authors
trained with, written by the one checkpoint writer (training/checkpoint.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..config import Config, DataConfig, DiffusionConfig, ModelConfig, config_to_dict
from ..diffusion import LossType, ModelVarType, create_named_schedule_sampler
from ..models.official import (
    ORIGIN,
    OfficialSettings,
    load_official_state_dict,
    map_official_state_dict,
    official_unet_config,
)
from .checkpoint import FORMAT_VERSION, write_checkpoint


def convert_official_checkpoint(
    source: str | Path, destination: str | Path, settings: OfficialSettings
) -> Path:
    """Write `source` (an original checkpoint) as our checkpoint file `destination`.

    The weights go to both `model` and `ema` (a released file holds one set); the
    config records the diffusion of `settings`, so `ddpm-repro sample/evaluate --checkpoint
    destination` run the model as its authors did. The optimizer state is empty: the file
    is for sampling and evaluation, not for resuming training. `source` records the file's
    name and SHA-256.
    """
    source, destination = Path(source), Path(destination)
    state = load_official_state_dict(source)
    unet = official_unet_config(state, settings)
    weights = map_official_state_dict(state, unet, f"'{source}'", f"preset {settings.preset!r}")
    learned = unet.out_channels == 2 * unet.in_channels
    diffusion = DiffusionConfig(
        schedule=settings.schedule,
        timesteps=settings.timesteps,
        var_type=ModelVarType.LEARNED_RANGE if learned else ModelVarType.FIXED_LARGE,
        objective=LossType(settings.objective),
        hybrid_lambda=settings.hybrid_lambda,
        timestep_sampler=settings.timestep_sampler,
    )
    size = unet.image_size
    config = Config(
        profile="official",
        data=DataConfig(dataset="cifar10") if size == 32 else DataConfig(dataset="folder", image_size=size),
        model=ModelConfig(
            preset=settings.preset,
            model_channels=settings.model_channels,
            class_cond=unet.num_classes is not None,
        ),
        diffusion=diffusion,
    )
    digest = hashlib.sha256()
    with source.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    payload = {
        "format": FORMAT_VERSION,
        "step": settings.step,
        "model": weights,
        "ema": weights,  # the same tensors: torch.save stores them once
        "optimizer": {},
        "sampler": create_named_schedule_sampler(settings.timestep_sampler, settings.timesteps).state_dict(),
        "rng": {"torch": torch.Generator().manual_seed(0).get_state()},
        "config": config_to_dict(config),
        "unet": config_to_dict(unet),
        "source": {"origin": ORIGIN, "file": source.name, "sha256": digest.hexdigest()},
    }
    write_checkpoint(destination, payload)
    return destination
