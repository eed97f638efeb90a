"""A one-rank, numpy-backed Backend that records what the driver asks of it (calls, barriers, syncs, graph
captures), so that the driver's nccl-tests semantics (-w 0, -m, -z, -G, -N, -d all, checks) are tested in
process, in milliseconds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from fabricbench.backends.base import Backend

PRIMS = frozenset({"all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all"})


class FakeBackend(Backend):
    name, device = "fake", "cpu"
    primitives = PRIMS
    out_of_place = PRIMS

    def __init__(self, lazy: bool = False):
        self.rank, self.world_size = 0, 1
        self.events: list[str] = []
        self.lazy = lazy  # an op that does nothing: the checks must catch it
        self._capturing = False

    def unsupported(self, dtype, redop):
        return None

    def alloc(self, count, dtype):
        return np.zeros(count, dtype.host_dtype)

    def view(self, buf, offset, count):
        return buf[offset:offset + count]

    def write(self, buf, host):
        buf[...] = host

    def read(self, buf):
        return buf.copy()

    def poison(self, buf):
        buf.view(np.uint8)[...] = 0xA5

    def _move(self, name, send, recv):
        self.events.append(f"call:{name}")
        if not self.lazy and recv is not send:
            recv[...] = send

    def all_reduce(self, send, recv, redop): self._move("all_reduce", send, recv)
    def all_gather(self, send, recv): self._move("all_gather", send, recv)
    def reduce_scatter(self, send, recv, redop): self._move("reduce_scatter", send, recv)
    def broadcast(self, send, recv, root): self._move("broadcast", send, recv)
    def reduce(self, send, recv, redop, root): self._move("reduce", send, recv)
    def all_to_all(self, send, recv): self._move("all_to_all", send, recv)

    def barrier(self):
        self.events.append("barrier")

    def synchronize(self):
        self.events.append("sync")

    def gather_object(self, obj):
        return [obj]

    def broadcast_object(self, obj):
        return obj

    def capture(self, fn):
        self.events.append("capture")
        return lambda: (self.events.append("replay"), fn())


def ranks():
    return SimpleNamespace(rank=0, world_size=1, local_rank=0, local_world_size=1, host="fakehost",
                           source="single", master_addr="127.0.0.1", master_port=29500)
