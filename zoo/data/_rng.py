"""Seeded random streams for the procedural generators.

Every generated item draws from its own stream, keyed by the run's seed and by names
(category, split, defect, index). Keys are hashed with CRC-32 rather than Python's
`hash()`, which is salted per process, so the same keys give the same stream in every
process and on every machine. Because each item has its own stream, asking for more
training images never changes the test images.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key_to_int(key: str | int) -> int:
    if isinstance(key, (bool, np.bool_)):
        return int(key)
    if isinstance(key, (int, np.integer)):
        return int(key) % (1 << 64)  # SeedSequence wants non-negative integers
    return zlib.crc32(str(key).encode("utf-8"))


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent `numpy` generator for (seed, *keys): same arguments, same stream."""
    entropy = [_key_to_int(seed)] + [_key_to_int(k) for k in keys]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
