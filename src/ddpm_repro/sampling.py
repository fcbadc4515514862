"""Generation: ancestral, respaced and DDIM sampling, with classifier-free guidance, to
uint8 arrays [N, H, W, C] in an .npz (with labels) and a PNG grid.

Chunks of sample.batch_size images are drawn one at a time (memory stays flat in the number
of samples); chunk k uses a generator seeded by (seed, k), so the images are reproducible for
a given batch size, whatever the number of worker processes (sharding.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .config import Config, SampleConfig, SampleMethod, build_diffusion, config_from_dict, config_to_dict
from .data.arrays import ImageArrays, to_uint8
from .diffusion import GaussianDiffusion, respaced
from .io import atomic_write
from .progress import Progress
from .seeding import derive_seed
from .sharding import RunChunks, run_in_process

_SAMPLE_STREAM = 7


class GuidedModel(nn.Module):
    """Classifier-free guidance (Ho & Salimans 2022): for the mean channels,
    out = out_u + s (out_c - out_u), where out_u uses the null label; the variance channels
    are the conditional ones. s = 1 is the plain conditional model, s = 0 the unconditional.
    """

    def __init__(self, model: nn.Module, scale: float, null_label: int, learned_variance: bool) -> None:
        super().__init__()
        self.model, self.scale, self.null_label, self.learned_variance = (
            model,
            scale,
            null_label,
            learned_variance,
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x [N, C, H, W], t [N], y [N] -> the guided output [N, C or 2C, H, W]; at s != 1 one
        model call on a doubled batch [2N, ...] gives the conditional and unconditional outputs."""
        if self.scale == 1.0:
            return self.model(x, t, y)
        both = self.model(
            torch.cat([x, x]),
            torch.cat([t, t]),
            torch.cat([y, torch.full_like(y, self.null_label)]),
        )
        cond, uncond = both.chunk(2)
        if self.learned_variance:
            (cond_mean, cond_var), (uncond_mean, _) = cond.chunk(2, dim=1), uncond.chunk(2, dim=1)
            return torch.cat([uncond_mean + self.scale * (cond_mean - uncond_mean), cond_var], dim=1)
        return uncond + self.scale * (cond - uncond)


@torch.no_grad()
def generate(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    config: SampleConfig,
    image_shape: tuple[int, int, int],
    num_classes: int | None = None,
    labels: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    run_chunks: RunChunks | None = None,
) -> ImageArrays | None:
    """Draw config.num_samples images, in chunks of config.batch_size.

    Chunk k holds images k·batch_size onwards and draws all its noise from a generator
    seeded by (seed, k): the images depend on their index alone, not on how the chunks are
    split between processes or on a resumed run.

    Args:
        model: model(x_t, t[, y]) as trained (use EMA weights for the papers' numbers).
        diffusion: the process it was trained with; config.steps respaces it.
        image_shape: (C, H, W).
        num_classes: for a class-conditional model; labels default to 0, 1, ..., K-1, 0, ...
        labels: explicit labels [num_samples] for a class-conditional model.
        run_chunks: how the chunks run (sharding.ChunkedJob.run: across workers, resumable);
            default: all here. A worker that is not rank 0 gets None back.
    """
    process = respaced(diffusion, config.steps) if config.steps else diffusion
    n = config.num_samples
    if num_classes:
        labels = np.arange(n) % num_classes if labels is None else np.asarray(labels)
        if labels.shape != (n,) or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"labels must be [{n}] ints in 0..{num_classes - 1}")
        model = GuidedModel(model, config.guidance_scale, num_classes, diffusion.model_var_type.is_learned)
    elif labels is not None:
        raise ValueError("labels given for a model that is not class-conditional")
    loop = process.ddim_sample_loop if config.method is SampleMethod.DDIM else process.p_sample_loop
    extra = {"eta": config.eta} if config.method is SampleMethod.DDIM else {}
    label_array = np.asarray(labels if num_classes else np.full(n, -1), dtype=np.int64)
    num_chunks = math.ceil(n / config.batch_size)
    bar = None
    if progress and run_chunks is None:
        bar = Progress(f"sample ({process.num_timesteps} steps)", n, "img")

    def chunk(k: int) -> dict[str, np.ndarray]:
        start = k * config.batch_size
        size = min(config.batch_size, n - start)
        g = torch.Generator(device=device).manual_seed(derive_seed(config.seed, _SAMPLE_STREAM, k))
        kwargs = None
        if num_classes:
            kwargs = {"y": torch.as_tensor(label_array[start : start + size], device=device)}
        x = loop(
            model,
            (size, *image_shape),
            clip_denoised=config.clip_denoised,
            model_kwargs=kwargs,
            device=device,
            generator=g,
            **extra,
        )
        if bar is not None:
            bar.update(size)
        return {"images": to_uint8(x)}

    parts = (run_chunks or run_in_process)(num_chunks, chunk)
    if bar is not None:
        bar.close()
    if parts is None:
        return None
    return ImageArrays(np.concatenate([p["images"] for p in parts]), label_array)


@dataclass
class Pretrained:
    """A trained model ready to sample: the network (EMA weights by default), the diffusion
    it was trained with and its own config, from one checkpoint file or folder.

        model = Pretrained.load("checkpoints/cosine-hybrid")  # the folder's newest checkpoint
        images = model.sample(num_samples=16, steps="50").images  # uint8 [16, H, W, C]
    """

    model: nn.Module
    diffusion: GaussianDiffusion
    config: Config
    checkpoint: Path
    step: int

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        config: Config | None = None,
        use_ema: bool | None = None,
    ) -> Pretrained:
        """`checkpoint`: a ckpt_<step>.pt file (a training checkpoint, or the one logged to
        MLflow under `checkpoint/`) or a folder of them. `config` replaces the checkpoint's
        own (the CLI passes it with --params/--set applied); `use_ema` defaults to
        config.sample.use_ema."""
        from .training import load_checkpoint
        from .training.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(checkpoint)
        return cls.from_payload(path, load_checkpoint(path), device, config, use_ema)

    @classmethod
    def from_payload(
        cls,
        path: Path,
        ckpt: dict,
        device: str | torch.device = "cpu",
        config: Config | None = None,
        use_ema: bool | None = None,
    ) -> Pretrained:
        """As `load`, for a checkpoint already read with training.load_checkpoint."""
        from .training.checkpoint import model_from_checkpoint

        config = config or config_from_dict(ckpt["config"])
        use_ema = config.sample.use_ema if use_ema is None else use_ema
        model = model_from_checkpoint(ckpt, use_ema=use_ema, device=device)
        return cls(model, build_diffusion(config.diffusion), config, Path(path), int(ckpt["step"]))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model makes."""
        unet = self.model.config
        return unet.in_channels, unet.image_size, unet.image_size

    def sample(
        self,
        labels: np.ndarray | None = None,
        progress: bool = False,
        run_chunks: RunChunks | None = None,
        **sample_settings,
    ) -> ImageArrays | None:
        """Draw images with the config's sample section, any of its keys replaced by
        `sample_settings` (num_samples, steps, method, eta, guidance_scale, seed, ...);
        `run_chunks` as in `generate` (None back on a worker that is not rank 0)."""
        if "use_ema" in sample_settings:  # the weights were chosen when loading: never ignore it
            raise ValueError("use_ema is chosen when loading: Pretrained.load(checkpoint, use_ema=...)")
        # through the config loader, so a bad key or value is named as in params.yaml
        sample = {**config_to_dict(self.config.sample), **sample_settings}
        settings = config_from_dict({"sample": sample}).sample
        return generate(
            self.model,
            self.diffusion,
            settings,
            self.image_shape,
            num_classes=self.model.config.num_classes,
            labels=labels,
            device=next(self.model.parameters()).device,
            progress=progress,
            run_chunks=run_chunks,
        )


def save_grid(path: str | Path, images: np.ndarray, ncols: int | None = None, scale: int = 4) -> None:
    """A PNG grid of uint8 [N, H, W, C] images, 1-pixel borders, upscaled by `scale`."""
    from PIL import Image

    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + 1) + 1, ncols * (w + 1) + 1, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = img
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    image = Image.fromarray(grid[..., 0] if c == 1 else grid)
    atomic_write(path, lambda f: image.save(f, format="PNG"))
