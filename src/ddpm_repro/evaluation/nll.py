"""Negative log-likelihood in bits/dim through the variational bound (DDPM eq. 5), per test
image: the prior and L_0 exactly, and the T - 1 KL terms either every one or as an unbiased
stratified estimate (`GaussianDiffusion.estimate_bpd`); one draw of x_t per computed term."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..data.arrays import ImageArrays
from ..diffusion import GaussianDiffusion
from ..errors import UserError
from ..progress import Progress
from ..seeding import derive_seed
from ..sharding import RunChunks, run_in_process

_NLL_STREAM = 11
# the strata of the stratified estimate (`GaussianDiffusion.bound_strata`): narrow at small t,
# where the terms are large and change fast (benchmarks/README.md, "The NLL estimator")
STRATA_SPACING = "geometric"


@torch.no_grad()
def evaluate_nll(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    test: ImageArrays,
    num_images: int,
    max_batch: int,
    strata: int = 0,
    chunk_images: int = 16,
    clip_denoised: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    run_chunks: RunChunks | None = None,
) -> dict | None:
    """The bound on the first `num_images` test images (0, or more than there are: all).

    `strata` = 0 (or T - 1 or more) sums every one of the T terms; K in 1..T-2 estimates the
    T - 1 KL terms from one timestep in each of K `STRATA_SPACING` strata, weighted by the
    stratum's size (unbiased; its timestep noise is inside nll_bpd_se). The images go in chunks of
    `chunk_images`; chunk k draws every t and x_t from a generator seeded by (seed, k), so an
    image's value depends on its index alone, not on how the chunks are split between
    processes (`run_chunks`, as in sampling.generate; a worker that is not rank 0 gets None),
    and two checkpoints scored with the same seed see the same t and noise (paired
    comparisons). Each model call stacks up to `max_batch` (image, timestep) examples.

    Returns bits/dim: nll_bpd (mean) and nll_bpd_se (standard error over images),
    prior_bpd, decoder_bpd (L_0), kl_bpd (sum of L_1..L_{T-1}, or its estimate), with
    nll_images, nll_terms (model evaluations per image: T, or K + 1), nll_estimate
    ("full bound" or "stratified"), nll_strata_spacing (`STRATA_SPACING`; None for the full
    bound) and nll_per_image (the n totals, in order).
    """
    T = diffusion.num_timesteps
    strata = strata if 0 < strata < T - 1 else T - 1
    n = min(num_images, len(test.images)) if num_images > 0 else len(test.images)
    if n == 0:
        raise UserError("the test split is empty")
    x = test.to_tensor()[:n]
    labels = None
    if getattr(getattr(model, "config", None), "num_classes", None):
        labels = torch.from_numpy(test.labels[:n])
    num_chunks = math.ceil(n / chunk_images)
    bar = Progress("nll", n, "img") if progress and run_chunks is None else None

    def chunk(k: int) -> dict[str, np.ndarray]:
        part = slice(k * chunk_images, min(n, (k + 1) * chunk_images))
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, _NLL_STREAM, k))
        out = diffusion.estimate_bpd(
            model,
            x[part].to(device),
            strata,
            clip_denoised=clip_denoised,
            model_kwargs={"y": labels[part].to(device)} if labels is not None else None,
            generator=generator,
            max_batch=max_batch,
            spacing=STRATA_SPACING,
        )
        if bar is not None:
            bar.update(len(out["total_bpd"]))
        return {
            "total": out["total_bpd"].double().cpu().numpy(),
            "prior": out["prior_bpd"].double().cpu().numpy(),
            "decoder": out["decoder_bpd"].double().cpu().numpy(),
            "kl": out["kl_bpd"].double().cpu().numpy(),
        }

    parts = (run_chunks or run_in_process)(num_chunks, chunk)
    if bar is not None:
        bar.close()
    if parts is None:
        return None
    total, prior, decoder, kl = (
        np.concatenate([p[k] for p in parts]) for k in ("total", "prior", "decoder", "kl")
    )
    se = float(total.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "nll_bpd": float(total.mean()),
        "nll_bpd_se": se,
        "prior_bpd": float(prior.mean()),
        "decoder_bpd": float(decoder.mean()),
        "kl_bpd": float(kl.mean()),
        "nll_images": n,
        "nll_terms": strata + 1,
        "nll_estimate": "full bound" if strata == T - 1 else "stratified",
        "nll_strata_spacing": None if strata == T - 1 else STRATA_SPACING,
        "nll_per_image": total.tolist(),  # for paired comparisons between cells (same images, noise)
    }
