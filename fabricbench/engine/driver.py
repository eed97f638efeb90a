"""The common driver: for every op and size, allocate, warm up, time, check, reduce across ranks, report.

Runs on every rank. Rank 0 prints the table and writes the results after every size, so a run that dies
part-way keeps what it measured. Ops only declare accounting and data (fabricbench.ops); backends only move
bytes (fabricbench.backends).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fabricbench.engine import stats
from fabricbench.engine.binding import bind_to_gpu
from fabricbench.engine.config import RunConfig
from fabricbench.engine.dtypes import DTYPES, REDOPS, DType, get_dtype
from fabricbench.engine.inject import FaultPoint, wrap_with_injected_faults
from fabricbench.engine.patterns import Pattern, count_wrong
from fabricbench.engine.provenance import now_iso, rank_info, run_record
from fabricbench.engine.nccl_json import (NcclTestsJson, config_block, device_entry, device_hex, path_for_op,
                                          result_item)
from fabricbench.engine.nccl_json import header as nccl_header
from fabricbench.engine.report import TablePrinter, average_busbw, min_bw_verdict
from fabricbench.engine.sizes import format_size, size_sweep
from fabricbench.engine.split import groups_of
from fabricbench.errors import RunFailed, UsageError
from fabricbench.ops import Call, Layout, Op, resolve_ops
from fabricbench.results.io import RUN_FILE, atomic_write_json, write_results

PROGRESS_ENV = "FABRICBENCH_PROGRESS_DIR"  # the local launcher reads each rank's last step from here


@dataclass
class Measurement:
    """One rank's raw numbers for one (op, size), sent to rank 0."""

    rank: int
    host: str
    local_rank: int
    gpu: int | None
    total_ns: int  # aggregate: the whole timed loop
    iter_ns: list[int]  # per-iteration times (empty when not measured)
    barrier_wait_ns: list[int]  # per-iter mode: time spent in the barrier before each iteration
    nwrong: int
    t_start_ns: int
    t_end_ns: int
    group: int = 0


class Driver:
    def __init__(self, cfg: RunConfig, backend, ranks, pool: BufferPool | None = None):
        self.cfg, self.backend, self.ranks = cfg, backend, ranks
        # `backend` is the whole world (control plane: barriers, results to rank 0); `comm` moves the data, and
        # is this rank's group when the communicator is split. `rank`/`n` are positions in the data group.
        self.world_rank, self.world_n = backend.rank, backend.world_size
        self.groups = groups_of(self.world_n, cfg.split) if cfg.split else {0: list(range(self.world_n))}
        self.group = next(i for i, members in enumerate(self.groups.values()) if self.world_rank in members)
        self.members = list(self.groups.values())[self.group]
        self.comm = backend
        self.rank, self.n = self.members.index(self.world_rank), len(self.members)
        self.dtype: DType = get_dtype(cfg.dtype)
        self.redop, self.root = cfg.redop, max(cfg.root, 0)
        # Reused across sizes and ops (and across Drivers when a caller passes its own pool).
        self.pool = pool if pool is not None and pool.dtype == self.dtype else BufferPool(backend, self.dtype)
        self.is_root = self.world_rank == 0
        self.rows: list[dict] = []
        self.printer = TablePrinter(per_iter=cfg.timing == "per-iter", groups=bool(cfg.split))
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        self._fault_point = FaultPoint(self.world_rank)
        self.calls = 0  # operation calls entered; a rank behind the others at a timeout is the one stuck
        self.done_calls = 0  # operation calls returned: the launcher's no-progress detector watches these
        self.phase = "init"
        self._heartbeat = Heartbeat(self, os.environ.get(PROGRESS_ENV))
        self._hosts: list[str] = []
        self._record: dict = {}
        self._infos: list[dict] = []
        self._json: NcclTestsJson | None = None

    # -- the run --------------------------------------------------------------------------------------------
    def run(self) -> int:
        _SAVE_GUARD.install()
        with self._heartbeat:
            return self._run()

    def _run(self) -> int:
        cfg = self.cfg
        ops = resolve_ops(cfg.ops, self.n)
        self._validate(ops)
        if cfg.split:
            sub = self.backend.split(self.members, list(self.groups.values()))
            self.comm = wrap_with_injected_faults(sub, world_rank=self.world_rank)
        started = now_iso()
        binding = "not bound (--cpu-bind none)"
        if cfg.cpu_bind == "auto":
            binding = bind_to_gpu(self.backend.gpu_bus_id())
        infos = self.backend.gather_object({**rank_info(self.ranks, self.backend), "cpu_binding": binding,
                                            "bus_id": self.backend.gpu_bus_id(), "group": self.group})
        if self.is_root:
            self._infos = infos
            self._hosts = [i["host"] for i in infos]
            self._record = run_record(cfg, infos, self.backend, started)
            self._record.update(status="running")
            self._save(final=False)
            self._print_run_header(infos)
        sizes = size_sweep(cfg.min_bytes, cfg.max_bytes, cfg.step_factor, cfg.step_bytes)
        several = len(ops) > 1
        failed_min_bw: list[str] = []
        for op in ops:
            op_rows: list[dict] = []
            if self.is_root:
                self._open_json(op, several)
                if not cfg.quiet:
                    self._print_test_header(op)
            for dtype in self._dtypes():
                self._use_dtype(dtype)
                for redop in self._redops(op):
                    for root in self._roots(op):
                        self.redop, self.root = redop, root
                        self._run_table(op, sizes, op_rows)
            self._mark_progress(op.name, -1, "done")
            if self.is_root:
                avg = average_busbw(op_rows)
                if cfg.min_bw is not None and min_bw_verdict(avg, cfg.min_bw) == "FAILED":
                    failed_min_bw.append(f"{op.name} {avg:g} GB/s")
                if self._json is not None:
                    self._json.flush(final=True, min_bw=cfg.min_bw)
                if not cfg.quiet and op_rows:
                    self.printer.op_footer(op_rows, op=op.name, min_bw=cfg.min_bw)
        total_wrong = sum(int(r["nwrong"] or 0) for r in self.rows if r["row_kind"] == "op")
        if self.is_root:
            status = "ok" if total_wrong == 0 else "wrong-data"
            if failed_min_bw and status == "ok":
                status = "below-min-bw"
            self._record.update(status=status, nwrong=total_wrong)
            self._save(final=True)
            if not cfg.quiet:
                self.printer.note(f"results: {self.out_dir}")
        self.backend.barrier()
        if total_wrong and self.is_root:
            raise RunFailed(f"{total_wrong} wrong values found by the data checks (#wrong column); "
                            f"the fabric or library corrupted data. Results: {self.out_dir}")
        if failed_min_bw and self.is_root:
            raise RunFailed(f"average bus bandwidth below 0.9 x NCCL_TESTS_MIN_BW={cfg.min_bw:g} (nccl-tests' "
                            f"rule): {', '.join(failed_min_bw)}. Results: {self.out_dir}")
        return 0

    def _run_table(self, op: Op, sizes: list[int], op_rows: list[dict]) -> None:
        """One (op, dtype, redop, root): every size, both placements, -N cycles (0: until interrupted)."""
        cfg = self.cfg
        placements = self._placements(op)
        self._reserve(op, sizes, placements)
        cycle = 0
        while True:
            for size in sizes:
                lay = op.layout(size, self.dtype.itemsize, self.n, self.rank)
                if lay.count == 0:
                    if self.is_root and not cfg.quiet and cycle == 0:
                        self.printer.note(f"{format_size(size)} is too small for {op.name} on {self.n} ranks "
                                          f"(less than one {self.dtype.name} per rank); skipped")
                    continue
                self._mark_progress(op.name, size, "start")
                per_placement = {}
                for placement in placements:
                    m = self._measure(op, lay, placement)
                    per_placement[placement] = self.backend.gather_object(m)
                if self.is_root:
                    self._record_size(op, lay, per_placement, op_rows, cycle)
            cycle += 1
            if cfg.cycles and cycle >= cfg.cycles:
                return

    def _record_size(self, op: Op, lay: Layout, per_placement: dict, op_rows: list[dict], cycle: int) -> None:
        """Rank 0: rows for one size (one per group and placement), printed and saved; a SIGTERM waits until
        they are on disk."""
        with _SAVE_GUARD:
            groups = sorted({g.group for ms in per_placement.values() for g in ms})
            for group in groups:
                pair: dict[str, dict] = {}
                for placement, gathered in per_placement.items():
                    row = self._rows_for(op, lay, placement, [g for g in gathered if g.group == group])
                    row["cycle"] = cycle
                    pair[placement] = row
                    op_rows.append(row)
                if not self.cfg.quiet:
                    self.printer.row_pair(pair.get("out-of-place"), pair.get("in-place"))
                if self._json is not None and group == groups[0]:
                    # nccl-tests' file holds what its rank 0 printed: the first group's rows.
                    self._json.add(result_item(pair.get("out-of-place"), pair.get("in-place"),
                                               self.cfg.check_iters > 0, self.cfg.iters))
            self._save(final=False)

    def _validate(self, ops: list[Op]) -> None:
        cfg = self.cfg
        if len({len(m) for m in self.groups.values()}) != 1:
            sizes = ", ".join(f"group {i}: {len(m)}" for i, m in enumerate(self.groups.values()))
            raise UsageError(f"--split '{cfg.split}' makes groups of different sizes ({sizes}); choose a split "
                             f"that divides the {self.world_n} ranks evenly")
        if not (-1 <= cfg.root < self.n):
            raise UsageError(f"--root {cfg.root} is not a rank of this {self.n}-rank group (0..{self.n - 1}, "
                             "or -1 for every root)")
        for op in ops:
            why = op.check_nranks(self.n)
            if why:
                raise UsageError(f"{why}; run it with --nprocs {op.exact_ranks or op.min_ranks}")
            if op.primitive not in self.backend.primitives:
                raise UsageError(f"backend {self.backend.name} has no {op.primitive}, needed by {op.name}")
            if not cfg.all_dtypes and not cfg.all_redops:
                why = self.backend.unsupported(self.dtype, cfg.redop if op.reduces else None)
                if why:
                    raise UsageError(why)

    # -- what one op's table covers: -d all, -o all, -r -1 -----------------------------------------------------
    def _dtypes(self) -> list[DType]:
        if not self.cfg.all_dtypes:
            return [get_dtype(self.cfg.dtype)]
        keep = [DTYPES[name] for name in DTYPES if not self.backend.unsupported(DTYPES[name], None)]
        skipped = [name for name in DTYPES if DTYPES[name] not in keep]
        if skipped and self.is_root and not self.cfg.quiet:
            self.printer.note(f"-d all: {', '.join(skipped)} skipped ({self.backend.name} cannot move them)")
        return keep

    def _use_dtype(self, dtype: DType) -> None:
        if dtype != self.dtype:
            self.dtype = dtype
            self.pool = BufferPool(self.backend, dtype)

    def _redops(self, op: Op) -> list[str]:
        if not op.reduces:
            return ["none"]
        wanted = list(REDOPS) if self.cfg.all_redops else [self.cfg.redop]
        keep = [r for r in wanted if not self.backend.unsupported(self.dtype, r)]
        skipped = [r for r in wanted if r not in keep]
        if skipped and self.is_root and not self.cfg.quiet:
            self.printer.note(f"{op.name} {self.dtype.name}: {', '.join(skipped)} skipped "
                              f"({self.backend.unsupported(self.dtype, skipped[0])})")
        return keep

    def _roots(self, op: Op) -> list[int]:
        if not op.rooted:
            return [-1]
        return list(range(self.n)) if self.cfg.root == -1 else [self.cfg.root]

    def _placements(self, op: Op) -> list[str]:
        """nccl-tests measures out-of-place then in-place for every size; so do we, where the library has both."""
        if not op.in_place_supported:
            return ["out-of-place"]
        if self.cfg.in_place:
            return ["in-place"]
        if op.primitive not in self.backend.out_of_place:
            return ["in-place"]  # the library's call is in place only (torch.distributed's all_reduce, ...)
        return ["out-of-place", "in-place"]

    # -- one (op, size) ------------------------------------------------------------------------------------
    def _buffers(self, lay: Layout, placement: str):
        b, pool = self.backend, self.pool
        if placement == "in-place":
            whole = pool.view("whole", max(lay.send_count, lay.recv_count))
            send = b.view(whole, lay.send_inplace_offset, lay.send_count)
            recv = b.view(whole, lay.recv_inplace_offset, lay.recv_count)
            return whole, send, recv
        return None, pool.view("send", lay.send_count), pool.view("recv", lay.recv_count)

    def _reserve(self, op: Op, sizes: list[int], placements: list[str]) -> None:
        """Allocate once for the largest size of this op, as nccl-tests does; every size uses a view."""
        lays = [op.layout(size, self.dtype.itemsize, self.n, self.rank) for size in sizes]
        if "in-place" in placements:
            self.pool.reserve("whole", max(max(x.send_count, x.recv_count) for x in lays))
        if "out-of-place" in placements:
            self.pool.reserve("send", max(x.send_count for x in lays))
            self.pool.reserve("recv", max(x.recv_count for x in lays))

    def _call_root(self, op: Op) -> int:
        return self.root if op.rooted else 0

    def _measure(self, op: Op, lay: Layout, placement: str) -> Measurement:
        cfg, b = self.cfg, self.backend
        whole, send, recv = self._buffers(lay, placement)
        root = self._call_root(op)
        call = Call(self.comm, send, recv, self.redop, root, self.rank, self.n, scratch=self.pool.view("scratch", 1),
                    window=cfg.window)
        # Timed iterations move real numbers (no NaN or denormal slow paths): the check pattern, seed 0.
        pattern = Pattern(self.dtype, self.redop if op.reduces else "none", self.n, seed=0)
        data = op.input(pattern, lay, self.rank, self.n, root)
        b.write(send, data if data is not None else np.zeros(lay.send_count, self.dtype.host_dtype))
        if placement == "out-of-place":
            b.write(recv, np.zeros(lay.recv_count, self.dtype.host_dtype))
        b.write(call.scratch, np.zeros(1, self.dtype.host_dtype))

        self._mark_progress(op.name, lay.size_bytes(self.dtype.itemsize), "warmup")
        for _ in range(cfg.warmup):
            self._call(op, call)
        # nccl-tests' "Sync" before timing, even with -w 0: one untimed call completed, then a barrier, so
        # connection setup is never timed.
        self._call(op, call)
        op.finish(call)
        b.synchronize()
        b.barrier()
        self._mark_progress(op.name, lay.size_bytes(self.dtype.itemsize), "timed")
        if cfg.timing == "per-iter":
            total_ns, iter_ns, waits, t0, t1 = self._time_per_iter(op, call)
        else:
            total_ns, iter_ns, waits, t0, t1 = self._time_aggregate(op, call)
        self._mark_progress(op.name, lay.size_bytes(self.dtype.itemsize), "check")
        nwrong = self._check(op, lay, call, whole)
        return Measurement(self.world_rank, self.ranks.host, self.ranks.local_rank, b.gpu, total_ns, iter_ns, waits,
                           nwrong, t0, t1, self.group)

    def _ops_per_measure(self) -> int:
        """Operations the timed region's time is divided by: iters x aggregated (-m) x graph launches (-G)."""
        return self.cfg.iters * self.cfg.agg_iters * max(1, self.cfg.graph_launches)

    def _outer_iteration(self, op: Op, call: Call) -> None:
        """One of nccl-tests' outer iterations: -m calls in one library group (ncclGroupStart/End, as nccl-tests'
        common.cu does when -m > 1), or, with -z, each completed before the next (no group: a call cannot
        complete before its group ends)."""
        b, z = self.backend, self.cfg.blocking
        with b.group() if self.cfg.agg_iters > 1 and not z else contextlib.nullcontext():
            for _ in range(self.cfg.agg_iters):
                self._call(op, call)
                if z:
                    op.finish(call)
                    b.synchronize()
                    if z == 1:
                        b.barrier()

    def _time_aggregate(self, op: Op, call: Call):
        """nccl-tests' default: iterations back to back, one sync at the end, wall clock around all of it.
        With -z 3 each outer iteration is completed and followed by a barrier that is not timed."""
        b, iters, cfg = self.backend, self.cfg.iters, self.cfg
        b.barrier()
        b.synchronize()
        host_marks = b.device == "cpu" and cfg.agg_iters == 1  # on CPU each gap is one (completed) iteration
        marks = np.empty(iters + 1, dtype=np.int64)
        replay = None
        if cfg.graph_launches:
            replay = b.capture(lambda: [self._outer_iteration(op, call) for _ in range(iters)])
            b.barrier()
        t_wall0 = time.time_ns()
        t0 = time.perf_counter_ns()
        marks[0] = t0
        excluded = 0
        if replay is not None:
            for _ in range(cfg.graph_launches):
                replay()
        else:
            for i in range(iters):
                self._outer_iteration(op, call)
                if cfg.blocking == 3:
                    op.finish(call)
                    b.synchronize()
                    a = time.perf_counter_ns()
                    b.barrier()
                    excluded += time.perf_counter_ns() - a
                if host_marks:
                    marks[i + 1] = time.perf_counter_ns()
        op.finish(call)
        b.synchronize()
        t1 = time.perf_counter_ns()
        t_wall1 = time.time_ns()
        iter_ns = np.diff(marks).tolist() if host_marks and not cfg.blocking == 3 else []
        return t1 - t0 - excluded, iter_ns, [], t_wall0, t_wall1

    def _time_per_iter(self, op: Op, call: Call):
        """Each iteration on its own: a host barrier, then the op timed with the backend's timer (on GPUs:
        CUDA events behind a device-side stream hold, so torch dispatch and NCCL enqueue are outside the
        time; backends/torch_dist.StreamHold).

        The barrier wait is kept: the rank that arrives last waits least, which names a straggler (in a
        collective the late rank itself shows the shortest op time, since the others wait for it).
        """
        b, iters = self.backend, self.cfg.iters
        iter_ns, waits = [], []
        t_wall0 = time.time_ns()
        for _ in range(iters):
            timer = b.timer()
            a = time.perf_counter_ns()
            b.barrier()
            waits.append(time.perf_counter_ns() - a)
            timer.start()
            self._outer_iteration(op, call)
            op.finish(call)
            timer.stop()
            b.synchronize()
            iter_ns.append(timer.elapsed_ns() // self.cfg.agg_iters)
        t_wall1 = time.time_ns()
        return int(sum(iter_ns)) * self.cfg.agg_iters, iter_ns, waits, t_wall0, t_wall1

    def _check(self, op: Op, lay: Layout, call: Call, whole) -> int:
        cfg, b = self.cfg, self.backend
        nwrong = 0
        root = self._call_root(op)
        for c in range(cfg.check_iters):
            pattern = Pattern(self.dtype, self.redop if op.reduces else "none", self.n, seed=c + 1)
            expected = op.expected(pattern, lay, self.rank, self.n, root)
            # Poison what the op must overwrite, so that an operation that did nothing cannot pass: the
            # receive buffer holds the bitwise complement of the expected result (no value can equal its own
            # complement, whatever the type), the rest a byte pattern.
            b.poison(whole if whole is not None else call.recv)
            if expected is not None:
                b.write(call.recv, complement(expected, self.dtype))
            data = op.input(pattern, lay, self.rank, self.n, root)
            if data is not None:
                b.write(call.send, data)
            elif whole is None:
                b.poison(call.send)
            b.barrier()
            self._call(op, call)
            op.finish(call)
            b.synchronize()
            if expected is not None:
                nwrong += count_wrong(b.read(call.recv), expected, self.dtype, pattern.avg_ulps)
        return nwrong

    # -- rank 0: rows, table, files --------------------------------------------------------------------------
    def _rows_for(self, op: Op, lay: Layout, placement: str, ms: list[Measurement]) -> dict:
        cfg, itemsize = self.cfg, self.dtype.itemsize
        div = op.time_divisor * op.messages_per_call(cfg.window)
        per_rank_us = np.array([m.total_ns / self._ops_per_measure() / 1e3 / div for m in ms])
        time_us = float(stats.reduce_across_ranks(per_rank_us, cfg.time_reduce))
        factor = op.busbw_factor(self.n)
        hosts = [m.host for m in ms]

        def bw(t_us: float) -> tuple[float, float]:
            algbw = lay.algbw_bytes / (t_us * 1e3) if t_us > 0 else float("nan")
            return algbw, algbw * factor

        algbw, busbw = bw(time_us)
        base = {
            "run_id": cfg.run_id, "op": op.name, "backend": self.backend.name, "device": self.backend.device,
            "nranks": self.n, "nnodes": len(set(hosts)), "group": ms[0].group,
            "size_bytes": lay.size_bytes(itemsize), "count": lay.count, "dtype": self.dtype.name,
            "redop": self.redop if op.reduces else "none", "root": self.root if op.rooted else -1,
            "placement": placement, "timing": cfg.timing, "time_reduce": cfg.time_reduce,
            "iters": cfg.iters, "warmup": cfg.warmup, "check_iters": cfg.check_iters,
            "algo": None, "proto": None, "transport": None, "algo_note": self._algo_note(),
        }
        iter_stats: dict = {}
        extra: dict = {}
        if all(m.iter_ns for m in ms):
            per_iter = np.array([m.iter_ns for m in ms], dtype=np.float64) / 1e3 / div
            iter_stats = stats.iteration_stats(np.asarray(stats.reduce_across_ranks(per_iter, cfg.time_reduce)))
            if cfg.timing == "per-iter":
                # nccl-tests -I: times_us is the max over processes per iteration; one row per process.
                extra = {"_times_us": per_iter.max(axis=0).tolist(), "_per_process_us": per_iter.tolist()}
        strag = None
        if cfg.timing == "per-iter":
            strag = stats.straggler(np.array([m.barrier_wait_ns for m in ms], dtype=np.float64) / 1e3)
        nwrong = sum(m.nwrong for m in ms)
        row = {
            **base, "row_kind": "op", "time_us": time_us, "time_max_us": float(per_rank_us.max()),
            "time_min_us": float(per_rank_us.min()), "algbw_gbps": algbw, "busbw_gbps": busbw,
            "nwrong": nwrong, **iter_stats,
            "latency_us": time_us if op.time_divisor == 2 else None,
            "straggler_rank": strag[0] if strag else None,
            "straggler_host": hosts[strag[0]] if strag else None,
            "straggler_late_us": strag[1] if strag else None,
            "host": hosts[0], "rank": -1, "status": "ok" if nwrong == 0 else "wrong-data",
            "t_start_ns": min(m.t_start_ns for m in ms), "t_end_ns": max(m.t_end_ns for m in ms), **extra,
        }
        self.rows.append(row)
        for m, t_us in zip(ms, per_rank_us):
            r_algbw, r_busbw = bw(float(t_us))
            own = stats.iteration_stats(np.array(m.iter_ns, dtype=np.float64) / 1e3 / div) if m.iter_ns else {}
            self.rows.append({
                **base, "row_kind": "rank", "time_us": float(t_us), "time_max_us": float(t_us),
                "time_min_us": float(t_us), "algbw_gbps": r_algbw, "busbw_gbps": r_busbw, "nwrong": m.nwrong,
                **own, "host": m.host, "rank": m.rank, "local_rank": m.local_rank, "gpu": m.gpu,
                "t_start_ns": m.t_start_ns, "t_end_ns": m.t_end_ns,
                "status": "ok" if m.nwrong == 0 else "wrong-data",
            })
        return row

    def _algo_note(self) -> str:
        """Why the algo/proto/transport columns are empty (filled only from NCCL's own report)."""
        if self.backend.name not in ("nccl", "nccl-direct"):
            return (f"{self.backend.name} on {self.backend.device} is not NCCL: no algorithm/protocol report "
                    "exists (the library does not tell)")
        return ("NCCL's per-call TUNING log is off (it would slow small sizes); the run's transports and "
                "algorithms are summarized in run.json 'nccl'")

    def _save(self, final: bool) -> None:
        if self.out_dir is None:
            return
        if final:
            self._record["end_time"] = now_iso()
        with _SAVE_GUARD:
            rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.rows]
            write_results(self.out_dir, rows, self._record)

    def _open_json(self, op: Op, several: bool) -> None:
        cfg = self.cfg
        self._json = None
        if not cfg.json_path:
            return
        versions = self._record.get("versions", {})
        devices = [device_entry(i, i.get("group", 0), self._device_info(i)) for i in self._infos]
        self._json = NcclTestsJson(path_for_op(cfg.json_path, op.name, several), op.name,
                                   nccl_header(self._record.get("command_line", []), versions.get("nccl")),
                                   config_block(cfg, devices))
        if not cfg.quiet:
            self.printer.note(f"Writing JSON output to {self._json.path}")

    def _device_info(self, info: dict) -> str:
        if info.get("gpu") is None:
            return f"CPU rank ({self.backend.name}, no GPU)"
        return str(self._record.get("versions", {}).get("gpu_model") or "GPU")

    def _print_run_header(self, infos: list[dict]) -> None:
        if self.cfg.quiet:
            return
        cfg = self.cfg
        hosts = sorted(set(self._hosts))
        lines = [
            f"backend {self.backend.name} ({self.backend.device}){' ' + self.backend.placement_note if self.backend.placement_note else ''}, "
            f"{self.world_n} ranks on {len(hosts)} host{'s' if len(hosts) != 1 else ''}, launcher {self.ranks.source}"
            + (f", split '{cfg.split}' into {len(self.groups)} groups of {self.n}" if cfg.split else ""),
            f"timing {cfg.timing}, time = {cfg.time_reduce} across ranks (max = slowest rank); "
            "bandwidth in decimal GB/s; CPU affinity per rank in results run.json",
        ]
        from fabricbench import __version__

        self.printer.run_header(f"fabricbench {__version__} run {cfg.run_id}", lines)

    def _print_test_header(self, op: Op) -> None:
        cfg = self.cfg
        step = (f"{cfg.step_factor}(factor)" if cfg.step_factor and cfg.step_factor > 1
                else f"{cfg.step_bytes or (1 << 20)}(bytes)")
        params = (f"nThread 1 nGpus 1 minBytes {cfg.min_bytes} maxBytes {cfg.max_bytes} step: {step} "
                  f"warmup iters: {cfg.warmup} iters: {cfg.iters} agg iters: {cfg.agg_iters} "
                  f"validation: {cfg.check_iters} graph: {cfg.graph_launches} unalign: 0")
        blocking = {1: "Blocking Enabled: wait and barrier after each inner iteration (-m)",
                    2: "Blocking Enabled: wait after each inner iteration (-m), no barrier",
                    3: "Blocking Enabled: wait and barrier after each outer iteration (-n); time excludes barrier",
                    }.get(cfg.blocking)
        devices = []
        for i in self._infos:
            dev = i["gpu"] if i.get("gpu") is not None else -1
            devices.append(f"#  Rank {i['rank']:2d} Group {i.get('group', 0):2d} Pid {i['pid']:6d} on "
                           f"{i['host']:>10} device {dev:2d} [{device_hex(i.get('bus_id'))}] {self._device_info(i)}")
        self.printer.test_header(op.name, params, devices, blocking)
        self.printer.op_header(op.name, self._op_note(op), checked=cfg.check_iters > 0)

    def _op_note(self, op: Op) -> str:
        placements = self._placements(op)
        if placements == ["in-place"] and not self.cfg.in_place:
            where = (f"in-place only ({self.backend.name}'s {op.primitive} has no separate output buffer; "
                     "the out-of-place columns are N/A)")
        elif placements == ["out-of-place"]:
            where = "out-of-place only (the op has no in-place form)"
        else:
            where = " and ".join(placements)
        window = op.messages_per_call(self.cfg.window)
        osu = ""
        if window > 1:
            kind = "non-blocking" if self.backend.nonblocking_window else "blocking (no non-blocking calls)"
            osu = f", window of {window} {kind} messages per call, time per message"
        return f"{where}, busbw factor {op.busbw_factor(self.n):.4g}" + (
            ", time = one way (half the round trip)" if op.time_divisor == 2 else "") + osu

    def _mark_progress(self, op: str, size: int, phase: str) -> None:
        self.phase = f"{op} {format_size(size) if size > 0 else ''} {phase}".replace("  ", " ")

    def _call(self, op: Op, call: Call) -> None:
        self._fault_point()
        self.calls += 1
        op.run(call)
        self.done_calls += 1


def complement(expected: np.ndarray, dtype: DType) -> np.ndarray:
    """Every bit of `expected` inverted, in its host layout: differs from the expected value in every element."""
    bits = np.ascontiguousarray(expected).view(dtype.bits)
    return np.invert(bits).view(expected.dtype)


class BufferPool:
    """Device buffers that live as long as the run, grown when a larger size needs more.

    Fresh memory for every size would measure the allocator, page faults and small pages rather than the
    fabric: on our 2-core test machine a 64 MiB gloo all_reduce ran about 10% slower in freshly allocated
    tensors than in one reused for the whole run (benchmarks/fidelity.py)."""

    def __init__(self, backend, dtype: DType):
        self.backend, self.dtype = backend, dtype
        self._bufs: dict[str, tuple[object, int]] = {}

    def reserve(self, name: str, count: int) -> None:
        count = max(count, 1)
        held = self._bufs.get(name)
        if held is None or held[1] < count:
            self._bufs.pop(name, None)  # free the smaller one first: peak memory stays at the largest size
            self._bufs[name] = (self.backend.alloc(count, self.dtype), count)

    def view(self, name: str, count: int):
        self.reserve(name, count)
        return self.backend.view(self._bufs[name][0], 0, count)


class _SaveGuard:
    """SIGTERM (how the launcher stops the surviving ranks when one dies) waits for a results write in
    progress, so the last measured size is on disk before the rank exits."""

    def __init__(self):
        self._depth = 0  # re-entrant: a size's rows and the file write nest
        self._pending: int | None = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self._depth:
            self._pending = signum
            return
        raise SystemExit(128 + signum)

    def __enter__(self):
        self._depth += 1

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0 and self._pending is not None:
            raise SystemExit(128 + self._pending)
        return False


_SAVE_GUARD = _SaveGuard()


class Heartbeat:
    """A thread that writes this rank's call count and phase to the launcher's progress directory twice a
    second, so that at a timeout the launcher can name the rank that stopped (it is the one behind)."""

    def __init__(self, driver: Driver, directory: str | None):
        self.driver, self.directory = driver, directory
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self.directory:
            self._thread = threading.Thread(target=self._loop, name="fabricbench-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self._write()
        return False

    def _write(self) -> None:
        if not self.directory:
            return
        d = self.driver
        try:
            # Named by WORLD rank: with --split, group ranks repeat across groups. Fields: calls entered,
            # calls returned, host, what the rank is in.
            # Written beside and renamed over, so the launcher never reads a half-written file.
            final = Path(self.directory, f"rank{d.world_rank}")
            tmp = final.with_name(f".{final.name}.tmp")
            tmp.write_text(f"{d.calls}\t{d.done_calls}\t{d.ranks.host}\t{d.phase}\n")
            os.replace(tmp, final)
        except OSError:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._write()


def finalize_failed_run(out_dir: str | os.PathLike, error: str, status: str = "failed") -> None:
    """Mark run.json of a run that died part-way (its results.parquet keeps every completed size)."""
    import json

    path = Path(out_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    record.update(status=status, error=error, end_time=now_iso())
    atomic_write_json(path, record)
