"""The data pattern of cuda_kernels/pattern.cu, computed on the host (numpy).

Word i (32-bit) of a buffer filled with `seed` is `pattern(seed, i)`; the poison written before each copy is
its bitwise NOT, so a copy that did nothing leaves every word wrong. Each sample uses its own seed
(`sample_seed`), so a stale buffer from the previous sample does not pass either. The self-test compares the
GPU's fill with this function; the fake GPU interface (tests) fills with it.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
WORD_BYTES = 4


def pattern(seed: int, start: int, count: int) -> np.ndarray:
    """Words start..start+count-1 of the pattern for `seed`, as uint32."""
    with np.errstate(over="ignore"):
        i = np.arange(start, start + count, dtype=np.uint64)
        z = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + (i + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
        return (z ^ (z >> np.uint64(32))).astype(np.uint32)


def poison(seed: int, start: int, count: int) -> np.ndarray:
    return ~pattern(seed, start, count)


def sample_seed(base: int, *parts: int) -> int:
    """A distinct 64-bit seed per (base, measurement, sample, ...)."""
    seed = base & 0xFFFFFFFFFFFFFFFF
    for p in parts:
        seed = (seed * 0x100000001B3 + (p & 0xFFFFFFFF) + 0x9E3779B9) & 0xFFFFFFFFFFFFFFFF
    return seed
