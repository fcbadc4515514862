"""sklearn's bundled 8x8 digits (1,797 real images; no download).

The digits have 17 grey levels, 0..16; they become 8-bit by round(v * 255 / 16), so that
likelihoods are measured over 256 bins like any 8-bit image (and are not comparable with
CIFAR-10's).
"""

from __future__ import annotations

import numpy as np

from .arrays import ImageArrays


def load_digits() -> ImageArrays:
    """All 1,797 digits as uint8 [N, 8, 8, 1] with their labels 0..9."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.round(bunch.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    return ImageArrays(images=images, labels=bunch.target.astype(np.int64))
