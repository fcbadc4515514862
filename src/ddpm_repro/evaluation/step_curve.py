"""Sample quality against the number of sampling steps (Improved DDPM Fig. 8): the same
starting noise sampled through respaced ancestral and DDIM chains of several lengths, each
scored by the reference classifier's Frechet distance."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import SampleConfig, SampleMethod
from ..diffusion import GaussianDiffusion
from ..sampling import generate
from ..sharding import RunChunks
from .frechet import bootstrap_indices, feature_statistics, frechet_distance, frechet_draws
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
    """One result per (method, steps) point: {"method", "steps", "samples", "fd_classifier",
    "fd_classifier_se"}, and for ancestral points when the curve has the full chain (T steps)
    "fd_ratio" = FD(n) / FD(T) with "fd_ratio_se".

    Standard errors are bootstrap ones (`bootstrap_indices`, evaluate's rounds): every
    point's samples start from the same noise, so each round redraws the same sample indices
    at every point, and the ratio's spread is that of a paired comparison.

    `sample` gives the seed, clipping, eta and guidance; every point starts from the same
    noise (same seed), so the curve shows the effect of the chain's length alone. A step
    count of T is the full chain; a smaller one keeps that many evenly spaced timesteps
    (Improved DDPM sec. 4, "50" in `space_timesteps`' notation). `point_chunks(name)` gives
    how a point's sampling chunks run (across workers, resumable: a ChunkedJob's sub-job
    `run`); a worker that is not rank 0 gets an empty list.
    """
    T = diffusion.num_timesteps
    results, features = [], []
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
        feats, _ = reference.classifier_features(samples)
        features.append(feats)
        fd = frechet_distance(*feature_statistics(feats), reference.mu, reference.sigma)
        results.append({"method": method.value, "steps": n, "samples": num_samples, "fd_classifier": fd})
    if not results:
        return results
    indices = bootstrap_indices(num_samples, reference.rounds)
    draws = [frechet_draws(f, reference.mu, reference.sigma, indices) for f in features]
    full = next((i for i, r in enumerate(results) if r["method"] == "ancestral" and r["steps"] == T), None)
    for i, r in enumerate(results):
        r["fd_classifier_se"] = float(draws[i].std(ddof=1))
        if full is not None and r["method"] == "ancestral":
            r["fd_ratio"] = r["fd_classifier"] / results[full]["fd_classifier"]
            r["fd_ratio_se"] = float(np.std(draws[i] / draws[full], ddof=1))
    return results
