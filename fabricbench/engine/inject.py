"""Fault injection for self-tests: FABRICBENCH_INJECT makes one rank misbehave, so that the checks, the
launcher's failure handling and the timeout can be shown to work (tests use it; so can an operator who
wants to see what a failure looks like before trusting a green run).

Syntax: `KIND@RANK[:after=N]`, several separated by commas.
- `corrupt@R`: after every communication call on rank R, flip the bits of the first received element.
- `die@R:after=N`: rank R kills itself with SIGKILL before its (N+1)-th operation call.
- `hang@R:after=N`: rank R stops making progress (sleeps) before its (N+1)-th operation call, as a rank stuck
  in host code or on a hung GPU would; its peers wait for it inside the collective.
- `slow@R:us=N`: rank R sleeps N microseconds before every operation call (a slow configuration, for tests of
  the tuner's search: the others wait for it inside the collective, so every rank's time grows).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from fabricbench.errors import UsageError

ENV = "FABRICBENCH_INJECT"
_CALLS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all", "sendrecv",
          "send", "recv")
_RECV_ARG = {"all_reduce": 1, "all_gather": 1, "reduce_scatter": 1, "broadcast": 1, "reduce": 1,
             "all_to_all": 1, "sendrecv": 1, "recv": 0}


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int
    after: int = 0
    us: int = 0


def parse(spec: str) -> list[Fault]:
    faults = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            head, *opts = item.split(":")
            kind, rank = head.split("@")
            after, us = 0, 0
            for opt in opts:
                key, value = opt.split("=")
                if key == "after":
                    after = int(value)
                elif key == "us" and kind == "slow":
                    us = int(value)
                else:
                    raise ValueError(key)
            if kind not in ("corrupt", "die", "hang", "slow") or (kind == "slow" and us <= 0):
                raise ValueError(kind)
            faults.append(Fault(kind, int(rank), after, us))
        except ValueError:
            raise UsageError(f"{ENV}='{spec}': expected KIND@RANK[:after=N] with KIND corrupt, die or hang, "
                             "or slow@RANK:us=N") from None
    return faults


class _Faulty:
    """Delegates everything to the real backend; damages what communication calls deliver."""

    def __init__(self, inner, faults: list[Fault]):
        self._inner, self._faults = inner, faults

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in _CALLS:
            return attr

        def call(*args, **kwargs):
            result = attr(*args, **kwargs)
            if name in _RECV_ARG:
                self._flip_first(args[_RECV_ARG[name]])
            return result

        return call

    def _flip_first(self, buf) -> None:
        inner = self._inner
        head = inner.view(buf, 0, 1)
        bits = inner.read(head)
        flipped = (bits.view(np.uint8) ^ np.uint8(0x01)).view(bits.dtype)
        inner.write(head, flipped)


def check_world(world: int, env=None) -> None:
    """Refuse a fault aimed at a rank the run does not have (die@7 on 4 ranks would silently test nothing)."""
    spec = (os.environ if env is None else env).get(ENV, "")
    for f in parse(spec) if spec else []:
        if not 0 <= f.rank < world:
            raise UsageError(f"{ENV}='{spec}': rank {f.rank} is not a rank of this {world}-rank run "
                             f"(0..{world - 1}); nothing would be injected")


def faults_for(rank: int, env=None) -> list[Fault]:
    spec = (os.environ if env is None else env).get(ENV, "")
    return [f for f in parse(spec) if f.rank == rank] if spec else []


def wrap_with_injected_faults(backend, env=None, world_rank: int | None = None):
    """Corruption happens in the data path: wrap the backend so received buffers come back damaged.
    `world_rank`: for a split backend, whose own rank is its position in the group."""
    rank = backend.rank if world_rank is None else world_rank
    faults = [f for f in faults_for(rank, env) if f.kind == "corrupt"]
    return _Faulty(backend, faults) if faults else backend


class FaultPoint:
    """Called by the driver before every operation call: dies or hangs there when asked to."""

    def __init__(self, rank: int, env=None):
        self._faults = [f for f in faults_for(rank, env) if f.kind in ("die", "hang", "slow")]
        self._calls = 0

    def __call__(self) -> None:
        if not self._faults:
            return
        for f in self._faults:
            if self._calls >= f.after:
                if f.kind == "slow":
                    time.sleep(f.us / 1e6)
                    continue
                if f.kind == "die":
                    os.kill(os.getpid(), signal.SIGKILL)
                deadline = time.monotonic() + 3600  # bounded: a forgotten hung rank still ends
                while time.monotonic() < deadline:
                    time.sleep(1)
        self._calls += 1
