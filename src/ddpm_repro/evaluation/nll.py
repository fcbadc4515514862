"""Negative log-likelihood in bits/dim through the full variational bound (DDPM eq. 5):
the prior term plus all T terms, per test image, from one draw of x_t per term."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.arrays import ImageArrays
from ..diffusion import GaussianDiffusion


@torch.no_grad()
def evaluate_nll(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    test: ImageArrays,
    num_images: int,
    max_batch: int,
    clip_denoised: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """The bound on the first `num_images` test images (all of them if fewer).

    Returns bits/dim: nll_bpd (mean) and nll_bpd_se (standard error over images),
    prior_bpd, decoder_bpd (L_0), kl_bpd (sum of L_1..L_{T-1}), with nll_images and
    nll_terms (T, every term summed), and nll_per_image (the n totals, in order).
    """
    n = min(num_images, len(test.images))
    if n == 0:
        raise ValueError("the test split is empty")
    x = test.to_tensor()[:n].to(device)
    kwargs = None
    if getattr(getattr(model, "config", None), "num_classes", None):
        kwargs = {"y": torch.from_numpy(test.labels[:n]).to(device)}
    generator = torch.Generator(device=device).manual_seed(seed)
    # Images per chunk: all of them unless one timestep of all would exceed max_batch.
    chunk = max(1, min(n, max_batch))
    totals, priors, decoders, kls = [], [], [], []
    for start in range(0, n, chunk):
        xb = x[start : start + chunk]
        kb = {k: v[start : start + chunk] for k, v in kwargs.items()} if kwargs else None
        out = diffusion.calc_bpd_loop(
            model,
            xb,
            clip_denoised=clip_denoised,
            model_kwargs=kb,
            generator=generator,
            max_batch=max_batch,
            progress=progress,
        )
        totals.append(out["total_bpd"])
        priors.append(out["prior_bpd"])
        decoders.append(out["vb"][:, 0])
        kls.append(out["vb"][:, 1:].sum(dim=1))
    total = torch.cat(totals).double()
    se = float(total.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {
        "nll_bpd": float(total.mean()),
        "nll_bpd_se": se,
        "prior_bpd": float(torch.cat(priors).double().mean()),
        "decoder_bpd": float(torch.cat(decoders).double().mean()),
        "kl_bpd": float(torch.cat(kls).double().mean()),
        "nll_images": n,
        "nll_terms": diffusion.num_timesteps,
        "nll_per_image": total.tolist(),  # for paired comparisons between cells (same images, noise)
    }
