"""The on-disk form of every dataset: uint8 images [N, H, W, C] and int64 labels [N] in
one .npz per split, written atomically; and their in-library form, float [N, C, H, W]
in [-1, 1]."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..io import atomic_write


@dataclass(frozen=True)
class ImageArrays:
    """images: uint8 [N, H, W, C]; labels: int64 [N] (-1 where a dataset has none)."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise UserError(f"images must be uint8 [N, H, W, C], got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise UserError(f"labels must be [N={len(self.images)}], got {self.labels.shape}")

    @property
    def num_classes(self) -> int | None:
        """Number of classes when every image has a label in 0..K-1, else None."""
        if len(self.labels) == 0 or self.labels.min() < 0:
            return None
        return int(self.labels.max()) + 1

    def to_tensor(self) -> Tensor:
        """Float32 [N, C, H, W] in [-1, 1]: x = k / 127.5 - 1 for pixel value k."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(x: Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C], rounding to the nearest level."""
    x = ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def save_arrays(path: str | Path, arrays: ImageArrays) -> None:
    """Write images and labels to one .npz, atomically."""
    atomic_write(path, lambda f: np.savez(f, images=arrays.images, labels=arrays.labels))


def load_arrays(path: str | Path) -> ImageArrays:
    """Read an .npz written by `save_arrays`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file '{path}' not found")
    try:
        with np.load(path) as z:
            missing = {"images", "labels"} - set(z.files)
            if missing:
                raise UserError(f"data file '{path}' lacks {sorted(missing)} (has {z.files})")
            return ImageArrays(images=z["images"], labels=z["labels"].astype(np.int64))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UserError(f"data file '{path}' is not a readable .npz: {exc}") from None


def split(arrays: ImageArrays, test_fraction: float, seed: int) -> tuple[ImageArrays, ImageArrays]:
    """A seeded random train/test split."""
    order = np.random.default_rng(seed).permutation(len(arrays.images))
    n_test = int(round(len(order) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return (
        ImageArrays(arrays.images[train], arrays.labels[train]),
        ImageArrays(arrays.images[test], arrays.labels[test]),
    )
