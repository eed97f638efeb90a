"""The interface every backend implements; the driver and the ops see nothing else.

A backend owns its communicator, its buffers (torch tensors, numpy or CuPy arrays), a control plane for
small Python objects (gathering results to rank 0), and a timer that matches its device (perf_counter_ns
on CPU, CUDA events on GPU).
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from fabricbench.engine.dtypes import DType


class Timer:
    """Host timer: valid for backends whose calls return when the operation is complete (gloo, MPI on host)."""

    def __init__(self) -> None:
        self._start = self._stop = 0

    def start(self) -> None:
        self._start = time.perf_counter_ns()

    def stop(self) -> None:
        self._stop = time.perf_counter_ns()

    def elapsed_ns(self) -> int:
        return self._stop - self._start


class Backend(ABC):
    name: str = ""  # nccl | gloo | mpi
    device: str = "cpu"  # cpu | cuda
    # Primitives that can take a distinct send and receive buffer; the others run in place.
    out_of_place: frozenset[str] = frozenset()
    # Primitives this backend has at all.
    primitives: frozenset[str] = frozenset()

    rank: int
    world_size: int
    gpu: int | None = None
    placement_note: str = ""  # e.g. 'host-staged' for GPU buffers through a non-CUDA-aware MPI

    # -- capabilities -------------------------------------------------------------------------------------
    @abstractmethod
    def unsupported(self, dtype: DType, redop: str | None) -> str | None:
        """Why this backend cannot run `dtype` (reduced with `redop`, or just moved when None), or None."""

    # -- buffers ------------------------------------------------------------------------------------------
    @abstractmethod
    def alloc(self, count: int, dtype: DType) -> Any: ...

    @abstractmethod
    def view(self, buf: Any, offset: int, count: int) -> Any:
        """A view of `count` elements of `buf` from `offset`, sharing memory (in-place layouts)."""

    @abstractmethod
    def write(self, buf: Any, host: np.ndarray) -> None:
        """Copy host bits (dtype.host layout) into `buf`."""

    @abstractmethod
    def read(self, buf: Any) -> np.ndarray:
        """Copy `buf` to a host array (dtype.host layout) for checking."""

    @abstractmethod
    def poison(self, buf: Any) -> None:
        """Fill with a byte pattern no check value can equal, so an operation that did nothing fails its check."""

    # -- communication ------------------------------------------------------------------------------------
    def all_reduce(self, send: Any, recv: Any, redop: str) -> None: raise NotImplementedError
    def all_gather(self, send: Any, recv: Any) -> None: raise NotImplementedError
    def reduce_scatter(self, send: Any, recv: Any, redop: str) -> None: raise NotImplementedError
    def broadcast(self, send: Any, recv: Any, root: int) -> None: raise NotImplementedError
    def reduce(self, send: Any, recv: Any, redop: str, root: int) -> None: raise NotImplementedError
    def all_to_all(self, send: Any, recv: Any) -> None: raise NotImplementedError
    def sendrecv(self, send: Any, recv: Any, dst: int, src: int) -> None: raise NotImplementedError
    def send(self, buf: Any, dst: int) -> None: raise NotImplementedError
    def recv(self, buf: Any, src: int) -> None: raise NotImplementedError

    # OSU's window (osu_bw, osu_bibw): `n` non-blocking transfers of the same buffer in flight, then wait for
    # all. A library without non-blocking calls falls back to blocking ones (said in the op note).
    nonblocking_window = False

    def send_window(self, buf: Any, dst: int, n: int) -> None:
        for _ in range(n):
            self.send(buf, dst)

    def recv_window(self, buf: Any, src: int, n: int) -> None:
        for _ in range(n):
            self.recv(buf, src)

    def exchange_window(self, send: Any, recv: Any, peer: int, n: int) -> None:
        """osu_bibw: `n` receives and `n` sends posted to/from `peer`, then all waited for."""
        for _ in range(n):
            self.sendrecv(send, recv, peer, peer)

    # -- control plane and timing -------------------------------------------------------------------------
    @abstractmethod
    def barrier(self) -> None:
        """A host-side barrier across all ranks (returns when every rank has entered it)."""

    def synchronize(self) -> None:
        """Wait until every operation this rank issued has completed (GPU: the stream)."""

    @abstractmethod
    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` on rank 0 (None elsewhere)."""

    @abstractmethod
    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""

    def timer(self) -> Timer:
        return Timer()

    def gpu_bus_id(self) -> str | None:
        """PCI bus id of this rank's GPU ('0000:1b:00.0'), for NUMA binding; None on CPU."""
        return None

    def group(self):
        """A context whose calls the library launches together (NCCL's ncclGroupStart/End), as nccl-tests does
        around the -m aggregated calls of one iteration. Libraries without groups issue them back to back."""
        return contextlib.nullcontext()

    def capture(self, fn):
        """Record `fn` (a loop of operation calls) once as a CUDA graph; return a callable that replays it."""
        from fabricbench.errors import UsageError

        raise UsageError(f"--cuda-graph needs the nccl backend on GPUs (this run uses {self.name} on {self.device})")

    def split(self, members: list[int], all_groups: list[list[int]]) -> Backend:
        """A backend for the data path of the group `members` (world ranks, this rank among them).

        Every rank passes the same `all_groups` in the same order (some libraries need every rank to take
        part in creating every group). The control plane (barrier, objects) stays on the whole world."""
        from fabricbench.errors import UsageError

        raise UsageError(f"backend {self.name} cannot split its communicator (--split)")

    def versions(self) -> dict[str, Any]:
        """Library versions for run.json (torch, NCCL, MPI, CUDA, driver, GPU model)."""
        return {}

    def close(self) -> None:
        """Tear down the communicator."""
