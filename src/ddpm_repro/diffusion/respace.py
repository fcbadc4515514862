"""Respacing: a diffusion restricted to a subset of its timesteps (Improved DDPM sec. 4).

Keeping steps S = {s_1 < ... < s_K} of a process with alpha-bars alpha_bar_s defines a new
K-step process with beta_k = 1 - alpha_bar_{s_k} / alpha_bar_{s_{k-1}} (Improved DDPM,
"Improving sampling speed"); the same trained model is called with the original s_k.
"""

from __future__ import annotations

from collections.abc import Iterable

from .gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps: int, section_counts: str | int | Iterable[int]) -> list[int]:
    """The timesteps to keep, sorted, from a spacing spec.

    Args:
        num_timesteps: T of the base process.
        section_counts: one of
            - "N" or N: N steps, spread as evenly as possible over [0, T-1] (strided);
            - "a,b,c": T split into equal sections, with a, b, c evenly spaced steps in each
              (Improved DDPM's code convention);
            - "ddimN": N steps at a fixed integer stride that starts at 0 (DDIM's "uniform"
              skip), as used for DDIM sampling;
            - an iterable of explicit timesteps.
    Raises:
        ValueError: naming the spec, when it asks for more steps than exist or is malformed.
    """
    if isinstance(section_counts, int):
        section_counts = str(section_counts)
    if not isinstance(section_counts, str):
        steps = sorted({int(s) for s in section_counts})
        if not steps or steps[0] < 0 or steps[-1] >= num_timesteps:
            raise ValueError(f"explicit timesteps must be a non-empty subset of 0..{num_timesteps - 1}")
        return steps
    spec = section_counts.strip()
    if spec.startswith("ddim"):
        count = _positive_int(spec[len("ddim") :], spec)
        if count > num_timesteps:
            raise ValueError(f"respacing {spec!r}: {count} steps exceed T={num_timesteps}")
        stride = num_timesteps // count
        return list(range(0, stride * count, stride))
    counts = [_positive_int(part, spec) for part in spec.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    steps: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(f"respacing {spec!r}: section {i} has {size} steps, cannot keep {count}")
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        steps.extend(start + round(stride * j) for j in range(count))
        start += size
    return steps


def _positive_int(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"bad respacing spec {spec!r}: use 'N', 'a,b,c' or 'ddimN' with positive integers"
        ) from None
    if value < 1:
        raise ValueError(f"bad respacing spec {spec!r}: counts must be positive")
    return value


def respaced(base: GaussianDiffusion, section_counts: str | int | Iterable[int]) -> GaussianDiffusion:
    """A `GaussianDiffusion` over the kept timesteps of `base` (see `space_timesteps`).

    Betas are recomputed from the kept alpha-bars; the result keeps base's mean/variance
    types, loss and lambdas, and calls the model with base's timesteps. Respacing a
    respaced process composes the maps.
    """
    keep = space_timesteps(base.num_timesteps, section_counts)
    if len(keep) < 2:
        raise ValueError(f"respacing {section_counts!r} keeps {len(keep)} step; at least 2 are needed")
    betas, last = [], 1.0
    for i in keep:
        alpha_bar = base.alphas_cumprod[i]
        betas.append(1.0 - alpha_bar / last)
        last = alpha_bar
    base_map = base.timestep_map or tuple(range(base.num_timesteps))
    return GaussianDiffusion(
        betas=betas,
        model_mean_type=base.model_mean_type,
        model_var_type=base.model_var_type,
        loss_type=base.loss_type,
        hybrid_lambda=base.hybrid_lambda,
        aux_lambda=base.aux_lambda,
        aux_variance=base.aux_variance,
        timestep_map=[base_map[i] for i in keep],
    )
