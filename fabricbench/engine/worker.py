"""One rank of a run: find rank and world from the launcher, open the backend, drive the benchmark.

With NCCL, each rank also records what NCCL actually did (transport per peer, network and plugin, channels,
algorithm): NCCL's INFO output goes to `<out>/logs/nccl-rank<N>.log` (unless the user set NCCL_DEBUG), and
after the run rank 0 adds the summaries to run.json under "nccl" and warns about a fall-back to TCP sockets.
"""

from __future__ import annotations

import os
import sys

from fabricbench.backends import open_backend, resolve_backend
from fabricbench.engine import nccl_log
from fabricbench.engine.config import RunConfig
from fabricbench.engine.driver import Driver
from fabricbench.engine.ranks import discover
from fabricbench.errors import FabricbenchError, RunFailed


GPU_BACKENDS = ("nccl", "nccl-direct")


def bind_before_backend(cfg: RunConfig, ranks) -> str | None:
    """CPU/NUMA binding before torch is imported and NCCL starts its threads (threads inherit the mask), for
    GPU runs; the driver checks it against the GPU the backend really opened (engine.binding.bind_to_gpu)."""
    if cfg.cpu_bind != "auto":
        return None
    from fabricbench.engine import binding, gpu_inventory

    if cfg.backend in GPU_BACKENDS or (cfg.backend == "auto" and gpu_inventory.physical_gpus()):
        return binding.bind_early(ranks.local_rank)
    return None


def run_as_rank(cfg: RunConfig) -> int:
    bind_before_backend(cfg, discover(rendezvous=False))  # first: resolving the backend imports torch
    name = resolve_backend(cfg.backend)
    ranks = discover(rendezvous=name != "mpi")  # MPI connects its own ranks: no MASTER_ADDR across hosts
    capture = NcclCapture(cfg, ranks.rank, ranks.host) if name in ("nccl", "nccl-direct") else None  # before NCCL
    # starts
    try:
        return _run(cfg, ranks, name, capture)
    except FabricbenchError as err:
        raise _located(err, ranks) from None
    except Exception as err:  # noqa: BLE001 - a library failure on one rank: say which rank and host
        if ranks.world_size <= 1:
            raise
        raise RunFailed(f"rank {ranks.rank} on {ranks.host}: {type(err).__name__}: {err}") from err


def _located(err: FabricbenchError, ranks) -> FabricbenchError:
    """Under mpirun/srun every rank prints its own error: prefix it with the rank and host it comes from."""
    text = str(err)
    if ranks.world_size <= 1 or text.startswith("rank "):
        return err
    return type(err)(f"rank {ranks.rank} on {ranks.host}: {text}")


def _run(cfg: RunConfig, ranks, name: str, capture) -> int:
    backend = None
    gather_safe = False
    try:
        backend = open_backend(name, ranks, cfg.timeout_s)
        try:
            rc = Driver(cfg, backend, ranks).run()
            gather_safe = True
            return rc
        except RunFailed:
            # Raised by rank 0 alone, after the driver's final barrier (wrong data): every other rank returned
            # normally, so all of them reach the gather below.
            gather_safe = True
            raise
    finally:
        try:
            if capture is not None:
                capture.finish(backend if gather_safe else None)
        finally:
            if backend is not None:
                backend.close()


def fill_algorithms(out_dir, summary) -> int:
    """Rank 0: the results' rows get NCCL's transport (and, with TUNING on, algorithm/protocol per size)."""
    from fabricbench.engine.algo_report import fill
    from fabricbench.results.io import read_results, write_results

    frame = read_results(out_dir)
    rows = frame.to_dict("records")
    filled = fill(rows, summary)
    write_results(out_dir, rows)
    return filled


class NcclCapture:
    """NCCL's own account of the run: prepared before the backend opens, read and merged after the run."""

    def __init__(self, cfg: RunConfig, rank: int, host: str | None = None):
        self.cfg, self.rank, self.host = cfg, rank, host
        user_set = bool(os.environ.get("NCCL_DEBUG"))
        self.path = nccl_log.prepare_debug_env(os.environ, cfg.out_dir, rank)
        self.set_by_us = self.path is not None and not user_set

    def finish(self, backend) -> None:
        """`backend` is None when the run failed: no collective is safe then, so each rank reports its own
        NCCL warnings (NCCL's log file took them off the console) and rank 0 reads the logs it can reach.
        Never raises: the run's own outcome is what the caller reports."""
        try:
            self._finish(backend)
        except Exception as err:  # noqa: BLE001 - a report about NCCL must not turn a result into a failure
            print(f"fabricbench: warning: could not summarize NCCL's log: {err}", file=sys.stderr)

    def _fill_rows(self, summary) -> None:
        if summary is None or not self.cfg.out_dir:
            return
        try:
            fill_algorithms(self.cfg.out_dir, summary)
        except Exception as err:  # noqa: BLE001 - the measurements are already safe on disk
            print(f"fabricbench: warning: could not add NCCL's algorithms to the results: {err}", file=sys.stderr)

    def _finish(self, backend) -> None:
        summary = nccl_log.parse_rank_log(self.path, self.rank, self.host)
        if backend is not None:
            # Every NCCL rank gathers (even one without a log: its None) so that the collective is symmetric.
            try:
                gathered = backend.gather_object(summary)
            except Exception:  # noqa: BLE001 - the benchmark itself succeeded; keep what this rank has
                gathered = None
            if self.rank != 0:
                return
            if gathered is not None:
                per_rank, complete = list(gathered), all(s is not None for s in gathered)
            else:
                per_rank, complete = [summary], False
        else:
            if summary and summary.get("warnings"):
                for line in summary["warnings"][:10]:
                    print(f"fabricbench: rank {self.rank}: NCCL WARN {line}", file=sys.stderr)
            if self.rank != 0:
                return
            others = nccl_log.local_summaries(self.cfg.out_dir, skip=[self.rank]) if self.cfg.out_dir else []
            per_rank, complete = [summary, *others], False
        if not any(per_rank) or not self.cfg.out_dir:
            return
        record = nccl_log.merge_into_run_json(self.cfg.out_dir, per_rank, complete=complete,
                                              set_by_fabricbench=self.set_by_us)
        if record is None:
            return
        self._fill_rows(per_rank[0])
        if not self.cfg.quiet:
            print(f"# {nccl_log.note_line(record)}", flush=True)
        if record.get("socket_fallback"):
            print(f"# WARNING: {record['socket_fallback']}", flush=True)
