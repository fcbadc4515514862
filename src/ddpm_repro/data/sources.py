"""Dataset sources -> `ImageArrays` (uint8 [N, H, W, C] + labels).

- digits: sklearn's bundled 8x8 digits (offline; the default).
- cifar10, mnist: through torchvision, downloaded into `root` when online; offline, one
  line says which files to place where.
- folder: a user's folder of images (any size, resized and centre-cropped); labels from
  sub-folder names when there are sub-folders, else -1. Unreadable files are named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .arrays import ImageArrays, split
from .digits import load_digits

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DatasetUnavailable(FileNotFoundError):
    """A dataset that cannot be read or downloaded here; the message says what to do."""


def _torchvision(name: str, root: Path, train: bool) -> ImageArrays:
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "mnist": datasets.MNIST}[name]
    files = {
        "cifar10": "cifar-10-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar.html)",
        "mnist": "the four MNIST *-ubyte.gz files (from https://yann.lecun.com/exdb/mnist/)",
    }[name]
    try:
        ds = cls(str(root), train=train, download=True)
    except Exception as exc:  # URLError, socket errors, checksum failures: all "not available"
        where = root / ("" if name == "cifar10" else "MNIST/raw")
        raise DatasetUnavailable(
            f"could not load or download {name} ({type(exc).__name__}); offline, place {files} in '{where}'"
        ) from None
    images = np.asarray(ds.data, dtype=np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    return ImageArrays(images=images, labels=np.asarray(ds.targets, dtype=np.int64))


def load_image_folder(root: str | Path, image_size: int) -> ImageArrays:
    """Every image under `root`, resized (shorter side) and centre-cropped to image_size, RGB.

    Raises DatasetUnavailable if the folder is missing or empty, ValueError naming every
    file that cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DatasetUnavailable(f"image folder '{root}' not found")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DatasetUnavailable(f"image folder '{root}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    classes = sorted({p.parent.relative_to(root).as_posix() for p in paths} - {"."})
    class_index = {c: i for i, c in enumerate(classes)}
    images, labels, bad = [], [], []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                scale = image_size / min(img.size)
                w, h = max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale))
                img = img.resize((w, h), Image.Resampling.BICUBIC)
                left, top = (w - image_size) // 2, (h - image_size) // 2
                images.append(np.asarray(img.crop((left, top, left + image_size, top + image_size))))
        except (UnidentifiedImageError, OSError) as exc:
            bad.append(f"{path} ({type(exc).__name__})")
            continue
        labels.append(class_index.get(path.parent.relative_to(root).as_posix(), -1))
    if bad:
        raise UserError(f"{len(bad)} unreadable image(s) in '{root}': {'; '.join(bad)}")
    return ImageArrays(np.stack(images).astype(np.uint8), np.asarray(labels, dtype=np.int64))


DATASETS = ("digits", "cifar10", "mnist", "folder")


def load_dataset(
    name: str, root: str | Path, image_size: int | None, test_fraction: float, seed: int
) -> tuple[ImageArrays, ImageArrays]:
    """(train, test) for a dataset name. digits and folder are split here with a seeded
    permutation; cifar10 and mnist use their official splits."""
    if name == "digits":
        return split(load_digits(), test_fraction, seed)
    if name == "folder":
        if image_size is None:
            raise UserError("data.image_size is required for an image folder")
        return split(load_image_folder(root, image_size), test_fraction, seed)
    if name in ("cifar10", "mnist"):
        return _torchvision(name, Path(root), True), _torchvision(name, Path(root), False)
    raise UserError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
