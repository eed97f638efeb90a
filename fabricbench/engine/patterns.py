"""Check-iteration data: every rank contributes different values, and the exact result is known in advance.

All values are small integers, so every partial sum, product, max or min that any reduction order can form
is exactly representable in the element type: the result is bit-exact whatever algorithm the library picked.
Bounds per (dtype, redop, nranks):
- sum: values in [-M, M] (unsigned: [0, M]) with nranks*M <= the type's exact limit;
- prod: each value is 1 or 2 (times -1 on signed types), with at most log2(limit) twos per element;
- max/min: distinct values in the type's exact range;
- avg: inputs are nranks*u with nranks**2*max|u| <= limit, so sum/nranks is exact; a library that pre-scales
  by 1/nranks (NCCL's premultiplied sum) can still round, so avg is compared within `avg_ulps` ULPs.
When nranks is so large that M would fall below 1 (bfloat16 beyond 128 ranks), each element gets a 1 from
exactly one rank and 0 from the others: still distinct per rank, still exact.
"""

from __future__ import annotations

import math

import numpy as np

from fabricbench.engine.dtypes import DType

_MIX_INDEX = 2654435761  # Knuth's multiplicative hash constant
_MIX_RANK = 1000003  # a prime: rank r and r' map to different residues for any modulus it does not divide
_MIX_SEED = 40503
SAFE_LIMIT = 2**61


class Pattern:
    """Values of rank r at global element indices [start, start + count), and their exact reduction."""

    def __init__(self, dtype: DType, redop: str, nranks: int, seed: int):
        self.dtype, self.redop, self.nranks, self.seed = dtype, redop, nranks, seed
        # 64-bit types: the exact integers are computed in int64 (and hashed in uint64), so no bound may pass
        # 2**61 whatever the group size (a 1-rank uint64 group would otherwise ask for 2**64).
        limit = min(dtype.exact_limit, SAFE_LIMIT)
        if redop == "prod":
            # At most nranks-1 twos per element, so that no two ranks are all-twos alike.
            self.twos = max(1, min(nranks - 1, int(math.log2(limit))))
        elif redop in ("max", "min"):
            self.bound = min(limit, 1 << 20)
        elif redop == "avg":
            self.bound = limit // (nranks * nranks)
        else:  # sum, and ops that only move data
            self.bound = limit // nranks
        self.one_hot = redop in ("sum", "avg", "none") and self.bound < 1

    # -- inputs -------------------------------------------------------------------------------------------
    def _mix(self, rank: int, start: int, count: int) -> np.ndarray:
        idx = np.arange(start, start + count, dtype=np.uint64)
        h = idx * np.uint64(_MIX_INDEX) + np.uint64((rank * _MIX_RANK + self.seed * _MIX_SEED) & 0xFFFFFFFF)
        return (h ^ (h >> np.uint64(29))).astype(np.uint64)

    def exact_values(self, rank: int, start: int, count: int) -> np.ndarray:
        """The values as exact integers (int64)."""
        if self.redop == "prod":
            pos = (np.arange(start, start + count, dtype=np.int64) + rank + self.seed) % self.nranks
            vals = np.where(pos < self.twos, 2, 1).astype(np.int64)
            if self.dtype.signed:
                sign = (self._mix(rank, start, count) % np.uint64(5)) == 0
                vals = np.where(sign, -vals, vals)
            return vals
        if self.one_hot:
            pos = (np.arange(start, start + count, dtype=np.int64) + rank + self.seed) % self.nranks
            vals = (pos == 0).astype(np.int64)
            return vals * self.nranks if self.redop == "avg" else vals
        bound = self.bound
        h = self._mix(rank, start, count)
        if self.dtype.signed:
            vals = (h % np.uint64(2 * bound + 1)).astype(np.int64) - bound
        else:
            vals = (h % np.uint64(bound + 1)).astype(np.int64)
        if self.redop in ("max", "min"):
            # Make values at one index differ between ranks: rank r owns residue r mod nranks.
            if bound >= self.nranks:
                vals = vals - (vals % self.nranks) + rank % self.nranks
                vals = np.clip(vals, -bound if self.dtype.signed else 0, bound)
        if self.redop == "avg":
            vals = vals * self.nranks
        return vals

    def values(self, rank: int, start: int, count: int) -> np.ndarray:
        """Rank `rank`'s input, as the host array whose bits go into the device buffer."""
        return self.dtype.to_host(self._as_type(self.exact_values(rank, start, count)))

    def _as_type(self, exact: np.ndarray) -> np.ndarray:
        return exact.astype(np.float64) if self.dtype.kind == "float" else exact

    # -- expected results ---------------------------------------------------------------------------------
    def reduced(self, start: int, count: int, ranks: range | None = None) -> np.ndarray:
        """The exact reduction over all ranks of their values at [start, start + count), as host bits."""
        ranks = range(self.nranks) if ranks is None else ranks
        acc: np.ndarray | None = None
        for r in ranks:
            vals = self.exact_values(r, start, count)
            if acc is None:
                acc = vals.copy()
            elif self.redop in ("sum", "avg"):
                acc += vals
            elif self.redop == "prod":
                acc *= vals
            elif self.redop == "max":
                np.maximum(acc, vals, out=acc)
            elif self.redop == "min":
                np.minimum(acc, vals, out=acc)
        assert acc is not None
        if self.redop == "avg":
            acc //= self.nranks  # exact: every input is a multiple of nranks
        return self.dtype.to_host(self._as_type(acc))

    @property
    def avg_ulps(self) -> int:
        """Tolerance for avg on floating types (see module docstring); 0 means bit-exact."""
        return self.nranks if (self.redop == "avg" and self.dtype.kind == "float") else 0


def count_wrong(got: np.ndarray, expected: np.ndarray, dtype: DType, ulps: int = 0) -> int:
    """Elements whose bits differ from the expected ones (or, with ulps > 0, that are more than ulps apart)."""
    if got.shape != expected.shape:
        return int(max(got.size, expected.size))
    got_bits = np.ascontiguousarray(got).view(dtype.bits)
    exp_bits = np.ascontiguousarray(expected).view(dtype.bits)
    if ulps == 0:
        return int(np.count_nonzero(got_bits != exp_bits))
    # Map float bit patterns to a monotonic integer line so that the distance counts representable steps.
    width = dtype.itemsize * 8
    sign = np.uint64(1) << np.uint64(width - 1)

    def ordered(bits: np.ndarray) -> np.ndarray:
        b = bits.astype(np.uint64)
        neg = (b & sign) != 0
        mag = (b & (sign - np.uint64(1))).astype(np.int64)
        return np.where(neg, -mag, mag)

    return int(np.count_nonzero(np.abs(ordered(got_bits) - ordered(exp_bits)) > ulps))
