"""Sample quality against the number of sampling steps (Improved DDPM Fig. 8): the same
starting noise sampled through respaced ancestral and DDIM chains of several lengths, each
scored by the reference classifier's Frechet distance."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..config import SampleConfig, SampleMethod
from ..diffusion import GaussianDiffusion
from ..sampling import generate
from ..sharding import RunChunks
from .reference import Reference


def step_curve(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    sample: SampleConfig,
    reference: Reference,
    image_shape: tuple[int, int, int],
    points: Sequence[tuple[SampleMethod, int]],
    num_samples: int,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    point_chunks: Callable[[str], RunChunks] | None = None,
) -> list[dict]:
    """One result per (method, steps) point: {"method", "steps", "samples", "fd_classifier"}.

    `sample` gives the seed, clipping, eta and guidance; every point starts from the same
    noise (same seed), so the curve shows the effect of the chain's length alone. A step
    count of T is the full chain; a smaller one keeps that many evenly spaced timesteps
    (Improved DDPM sec. 4, "50" in `space_timesteps`' notation). `point_chunks(name)` gives
    how a point's sampling chunks run (across workers, resumable: a ChunkedJob's sub-job
    `run`); a worker that is not rank 0 gets an empty list.
    """
    T = diffusion.num_timesteps
    results = []
    for method, n in points:
        if not 0 < n <= T:
            raise ValueError(f"a step-curve point of {n} steps is not in 1..T={T}")
        config = dataclasses.replace(
            sample, num_samples=num_samples, steps="" if n == T else str(n), method=method
        )
        run_chunks = point_chunks(f"{method.value}-{n}") if point_chunks else None
        samples = generate(
            model, diffusion, config, image_shape, num_classes, device=device, progress=progress,
            run_chunks=run_chunks,
        )  # fmt: skip
        if samples is None:
            continue
        fd = reference.classifier_quality(samples)["fd_classifier"]
        results.append({"method": method.value, "steps": n, "samples": num_samples, "fd_classifier": fd})
    return results
