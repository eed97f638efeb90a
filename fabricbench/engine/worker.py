"""One rank of a run: find rank and world from the launcher, open the backend, drive the benchmark."""

from __future__ import annotations

from fabricbench.backends import open_backend, resolve_backend
from fabricbench.engine.config import RunConfig
from fabricbench.engine.driver import Driver
from fabricbench.engine.ranks import discover


def run_as_rank(cfg: RunConfig) -> int:
    ranks = discover()
    backend = open_backend(resolve_backend(cfg.backend), ranks, cfg.timeout_s)
    try:
        return Driver(cfg, backend, ranks).run()
    finally:
        backend.close()
