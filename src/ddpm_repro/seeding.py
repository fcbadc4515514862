"""Seeds derived from integers: independent random streams for (seed, purpose, index)."""

from __future__ import annotations

import numpy as np


def derive_seed(*words: int) -> int:
    """A 63-bit seed from integers via numpy's SeedSequence: distinct tuples give
    statistically independent streams, with no collisions between purposes."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0]) >> 1
