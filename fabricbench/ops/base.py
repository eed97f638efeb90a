"""What an operation declares (nccl-tests style): byte accounting, busbw factor, inputs, exact expected output.

The driver (fabricbench.engine.driver) owns allocation, timing, checking and reporting; an op only says
how big its buffers are for a given 'size', which backend primitive it calls, and what each rank must hold
afterwards. Accounting follows nccl-tests (shared REFERENCE.md, 'Bandwidth accounting').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fabricbench.backends.base import Backend
    from fabricbench.engine.patterns import Pattern


@dataclass(frozen=True)
class Layout:
    """Buffers of one rank for one size, in elements (nccl-tests' sendcount/recvcount/paramcount)."""

    send_count: int
    recv_count: int
    count: int  # the 'count' column: elements per operation argument
    algbw_bytes: int  # bytes that algbw divides by the time
    send_inplace_offset: int = 0  # in-place: where the send view starts inside the one buffer
    recv_inplace_offset: int = 0

    def size_bytes(self, itemsize: int) -> int:
        """nccl-tests' 'size' column: max(send bytes, recv bytes)."""
        return max(self.send_count, self.recv_count) * itemsize


@dataclass
class Call:
    """Everything an op's `run` needs for one call."""

    backend: Backend
    send: Any
    recv: Any
    redop: str
    root: int
    rank: int
    nranks: int
    scratch: Any = None
    window: int = 1  # P2P bandwidth tests: messages in flight per call (OSU's window size)


class Op:
    """Base class; subclasses are the single-file entries in fabricbench/ops/."""

    name: str = ""
    primitive: str = ""  # the backend method called; backends list the ones they support
    reduces: bool = False  # takes --redop
    rooted: bool = False  # takes --root
    min_ranks: int = 1
    exact_ranks: int | None = None  # P2P tests need exactly 2
    time_divisor: int = 1  # ping-pong: one timed iteration is a round trip, reported one way
    in_place_supported: bool = True
    description: str = ""

    def layout(self, size_bytes: int, itemsize: int, nranks: int, rank: int) -> Layout:
        count = size_bytes // itemsize
        return Layout(count, count, count, count * itemsize)

    def messages_per_call(self, window: int) -> int:
        """Messages one call moves: the reported time is per message (osu_bw: a window of them per call)."""
        return 1

    def busbw_factor(self, nranks: int) -> float:
        return 1.0

    def run(self, call: Call) -> None:
        raise NotImplementedError

    def finish(self, call: Call) -> None:
        """Called once after a timed loop, before the final sync (p2p_uni: the receiver's acknowledgement)."""

    def input(self, pattern: Pattern, lay: Layout, rank: int, nranks: int, root: int) -> np.ndarray | None:
        """This rank's send buffer contents; None when the rank sends nothing (its buffer stays poisoned)."""
        return pattern.values(rank, 0, lay.send_count)

    def expected(self, pattern: Pattern, lay: Layout, rank: int, nranks: int, root: int) -> np.ndarray | None:
        """Exact contents of this rank's receive buffer afterwards; None when nothing is defined there."""
        raise NotImplementedError

    def check_nranks(self, nranks: int) -> str | None:
        """Why this op cannot run on `nranks` ranks, or None."""
        if self.exact_ranks is not None and nranks != self.exact_ranks:
            return f"{self.name} needs exactly {self.exact_ranks} ranks, got {nranks}"
        if nranks < self.min_ranks:
            return f"{self.name} needs at least {self.min_ranks} ranks, got {nranks}"
        return None


def aligned_block(size_bytes: int, itemsize: int, nranks: int) -> int:
    """Per-rank block in elements, rounded down to 16 bytes as nccl-tests does for gather/scatter-like ops."""
    align = max(1, 16 // itemsize)
    block = size_bytes // itemsize // nranks
    return (block // align) * align
