"""The common driver: for every op and size, allocate, warm up, time, check, reduce across ranks, report.

Runs on every rank. Rank 0 prints the table and writes the results after every size, so a run that dies
part-way keeps what it measured. Ops only declare accounting and data (fabricbench.ops); backends only move
bytes (fabricbench.backends).
"""

from __future__ import annotations

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
from fabricbench.engine.dtypes import DType, get_dtype
from fabricbench.engine.inject import FaultPoint, wrap_with_injected_faults
from fabricbench.engine.patterns import Pattern, count_wrong
from fabricbench.engine.provenance import now_iso, rank_info, run_record
from fabricbench.engine.report import TablePrinter
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
        # Reused across sizes and ops (and across Drivers when a caller passes its own pool).
        self.pool = pool if pool is not None and pool.dtype == self.dtype else BufferPool(backend, self.dtype)
        self.is_root = self.world_rank == 0
        self.rows: list[dict] = []
        self.printer = TablePrinter(per_iter=cfg.timing == "per-iter", groups=bool(cfg.split))
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        self._fault_point = FaultPoint(self.world_rank)
        self.calls = 0  # operation calls entered; a rank behind the others at a timeout is the one stuck
        self.phase = "init"
        self._heartbeat = Heartbeat(self, os.environ.get(PROGRESS_ENV))
        self._hosts: list[str] = []
        self._record: dict = {}

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
        infos = self.backend.gather_object({**rank_info(self.ranks, self.backend), "cpu_binding": binding})
        if self.is_root:
            self._hosts = [i["host"] for i in infos]
            self._record = run_record(cfg, infos, self.backend, started)
            self._record.update(status="running")
            self._save(final=False)
            self._print_run_header(infos)
        sizes = size_sweep(cfg.min_bytes, cfg.max_bytes, cfg.step_factor, cfg.step_bytes)
        for op in ops:
            op_rows: list[dict] = []
            placement = self._placement(op)
            self._reserve(op, sizes, placement)
            if self.is_root and not cfg.quiet:
                self.printer.op_header(op.name, self._op_note(op, placement))
            for size in sizes:
                lay = op.layout(size, self.dtype.itemsize, self.n, self.rank)
                if lay.count == 0:
                    if self.is_root and not cfg.quiet:
                        self.printer.note(f"{format_size(size)} is too small for {op.name} on {self.n} ranks "
                                          f"(less than one {self.dtype.name} per rank); skipped")
                    continue
                self._mark_progress(op.name, size, "start")
                m = self._measure(op, lay, placement)
                gathered = self.backend.gather_object(m)
                if self.is_root:
                    self._record_size(op, lay, placement, gathered, op_rows)
            self._mark_progress(op.name, -1, "done")
            if self.is_root and not cfg.quiet and op_rows:
                self.printer.op_footer(op_rows)
        total_wrong = sum(int(r["nwrong"]) for r in self.rows if r["row_kind"] == "op")
        if self.is_root:
            self._record.update(status="ok" if total_wrong == 0 else "wrong-data", nwrong=total_wrong)
            self._save(final=True)
            if cfg.json_path:
                from fabricbench.engine.nccl_json import write_nccl_tests_json

                for path in write_nccl_tests_json(cfg.json_path, self.rows, self._record):
                    if not cfg.quiet:
                        self.printer.note(f"nccl-tests JSON: {path}")
            if not cfg.quiet:
                self.printer.note(f"results: {self.out_dir}")
        self.backend.barrier()
        if total_wrong and self.is_root:
            raise RunFailed(f"{total_wrong} wrong values found by the data checks (#wrong column); "
                            f"the fabric or library corrupted data. Results: {self.out_dir}")
        return 0

    def _record_size(self, op: Op, lay: Layout, placement: str, gathered: list, op_rows: list[dict]) -> None:
        """Rank 0: rows for one size (one per group), printed and saved; a SIGTERM waits until they are on disk."""
        with _SAVE_GUARD:
            for group in sorted({g.group for g in gathered}):
                row = self._rows_for(op, lay, placement, [g for g in gathered if g.group == group])
                op_rows.append(row)
                if not self.cfg.quiet:
                    self.printer.row(row)
            self._save(final=False)

    def _validate(self, ops: list[Op]) -> None:
        cfg = self.cfg
        if len({len(m) for m in self.groups.values()}) != 1:
            sizes = ", ".join(f"group {i}: {len(m)}" for i, m in enumerate(self.groups.values()))
            raise UsageError(f"--split '{cfg.split}' makes groups of different sizes ({sizes}); choose a split "
                             f"that divides the {self.world_n} ranks evenly")
        if not (0 <= cfg.root < self.n):
            raise UsageError(f"--root {cfg.root} is not a rank of this {self.n}-rank group (0..{self.n - 1})")
        for op in ops:
            why = op.check_nranks(self.n)
            if why:
                raise UsageError(f"{why}; run it with --nprocs {op.exact_ranks or op.min_ranks}")
            if op.primitive not in self.backend.primitives:
                raise UsageError(f"backend {self.backend.name} has no {op.primitive}, needed by {op.name}")
            why = self.backend.unsupported(self.dtype, cfg.redop if op.reduces else None)
            if why:
                raise UsageError(why)

    def _placement(self, op: Op) -> str:
        if not op.in_place_supported:
            return "out-of-place"
        if self.cfg.in_place or op.primitive not in self.backend.out_of_place:
            return "in-place"
        return "out-of-place"

    # -- one (op, size) ------------------------------------------------------------------------------------
    def _buffers(self, lay: Layout, placement: str):
        b, pool = self.backend, self.pool
        if placement == "in-place":
            whole = pool.view("whole", max(lay.send_count, lay.recv_count))
            send = b.view(whole, lay.send_inplace_offset, lay.send_count)
            recv = b.view(whole, lay.recv_inplace_offset, lay.recv_count)
            return whole, send, recv
        return None, pool.view("send", lay.send_count), pool.view("recv", lay.recv_count)

    def _reserve(self, op: Op, sizes: list[int], placement: str) -> None:
        """Allocate once for the largest size of this op, as nccl-tests does; every size uses a view."""
        lays = [op.layout(size, self.dtype.itemsize, self.n, self.rank) for size in sizes]
        if placement == "in-place":
            self.pool.reserve("whole", max(max(x.send_count, x.recv_count) for x in lays))
        else:
            self.pool.reserve("send", max(x.send_count for x in lays))
            self.pool.reserve("recv", max(x.recv_count for x in lays))

    def _measure(self, op: Op, lay: Layout, placement: str) -> Measurement:
        cfg, b = self.cfg, self.backend
        whole, send, recv = self._buffers(lay, placement)
        call = Call(self.comm, send, recv, cfg.redop, cfg.root, self.rank, self.n, scratch=self.pool.view("scratch", 1))
        # Timed iterations move real numbers (no NaN or denormal slow paths): the check pattern, seed 0.
        pattern = Pattern(self.dtype, cfg.redop if op.reduces else "none", self.n, seed=0)
        data = op.input(pattern, lay, self.rank, self.n, cfg.root)
        b.write(send, data if data is not None else np.zeros(lay.send_count, self.dtype.host_dtype))
        if placement == "out-of-place":
            b.write(recv, np.zeros(lay.recv_count, self.dtype.host_dtype))
        b.write(call.scratch, np.zeros(1, self.dtype.host_dtype))

        self._mark_progress(op.name, lay.size_bytes(self.dtype.itemsize), "warmup")
        for _ in range(cfg.warmup):
            self._call(op, call)
        if cfg.warmup:
            op.finish(call)
        b.synchronize()
        self._mark_progress(op.name, lay.size_bytes(self.dtype.itemsize), "timed")
        if cfg.timing == "per-iter":
            total_ns, iter_ns, waits, t0, t1 = self._time_per_iter(op, call)
        else:
            total_ns, iter_ns, waits, t0, t1 = self._time_aggregate(op, call)
        self._mark_progress(op.name, lay.size_bytes(self.dtype.itemsize), "check")
        nwrong = self._check(op, lay, call, whole)
        return Measurement(self.world_rank, self.ranks.host, self.ranks.local_rank, b.gpu, total_ns, iter_ns, waits,
                           nwrong, t0, t1, self.group)

    def _time_aggregate(self, op: Op, call: Call):
        """nccl-tests' default: iterations back to back, one sync at the end, wall clock around all of it."""
        b, iters = self.backend, self.cfg.iters
        b.barrier()
        b.synchronize()
        host_marks = b.device == "cpu"  # on CPU every call returns complete: each gap is one iteration
        marks = np.empty(iters + 1, dtype=np.int64)
        replay = None
        if self.cfg.cuda_graph:
            replay = b.capture(lambda: [self._call(op, call) for _ in range(iters)])
            b.barrier()
        t_wall0 = time.time_ns()
        t0 = time.perf_counter_ns()
        marks[0] = t0
        if replay is not None:
            replay()
        else:
            for i in range(iters):
                self._call(op, call)
                if host_marks:
                    marks[i + 1] = time.perf_counter_ns()
        op.finish(call)
        b.synchronize()
        t1 = time.perf_counter_ns()
        t_wall1 = time.time_ns()
        iter_ns = np.diff(marks).tolist() if host_marks else []
        return t1 - t0, iter_ns, [], t_wall0, t_wall1

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
            self._call(op, call)
            op.finish(call)
            timer.stop()
            b.synchronize()
            iter_ns.append(timer.elapsed_ns())
        t_wall1 = time.time_ns()
        return int(sum(iter_ns)), iter_ns, waits, t_wall0, t_wall1

    def _check(self, op: Op, lay: Layout, call: Call, whole) -> int:
        cfg, b = self.cfg, self.backend
        nwrong = 0
        for c in range(cfg.check_iters):
            pattern = Pattern(self.dtype, cfg.redop if op.reduces else "none", self.n, seed=c + 1)
            # Poison what the op must overwrite, so that an operation that did nothing cannot pass.
            b.poison(whole if whole is not None else call.recv)
            data = op.input(pattern, lay, self.rank, self.n, cfg.root)
            if data is not None:
                b.write(call.send, data)
            elif whole is None:
                b.poison(call.send)
            b.barrier()
            self._call(op, call)
            b.synchronize()
            expected = op.expected(pattern, lay, self.rank, self.n, cfg.root)
            if expected is not None:
                nwrong += count_wrong(b.read(call.recv), expected, self.dtype, pattern.avg_ulps)
        return nwrong

    # -- rank 0: rows, table, files --------------------------------------------------------------------------
    def _rows_for(self, op: Op, lay: Layout, placement: str, ms: list[Measurement]) -> dict:
        cfg, itemsize = self.cfg, self.dtype.itemsize
        div = op.time_divisor
        per_rank_us = np.array([m.total_ns / cfg.iters / 1e3 / div for m in ms])
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
            "redop": cfg.redop if op.reduces else "none", "root": cfg.root if op.rooted else -1,
            "placement": placement, "timing": cfg.timing, "time_reduce": cfg.time_reduce,
            "iters": cfg.iters, "warmup": cfg.warmup, "check_iters": cfg.check_iters,
        }
        iter_stats: dict = {}
        if all(m.iter_ns for m in ms):
            per_iter = np.array([m.iter_ns for m in ms], dtype=np.float64) / 1e3 / div
            iter_stats = stats.iteration_stats(np.asarray(stats.reduce_across_ranks(per_iter, cfg.time_reduce)))
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
            "t_start_ns": min(m.t_start_ns for m in ms), "t_end_ns": max(m.t_end_ns for m in ms),
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

    def _save(self, final: bool) -> None:
        if self.out_dir is None:
            return
        if final:
            self._record["end_time"] = now_iso()
        with _SAVE_GUARD:
            write_results(self.out_dir, self.rows, self._record)

    def _print_run_header(self, infos: list[dict]) -> None:
        if self.cfg.quiet:
            return
        cfg = self.cfg
        hosts = sorted(set(self._hosts))
        lines = [
            f"backend {self.backend.name} ({self.backend.device}){' ' + self.backend.placement_note if self.backend.placement_note else ''}, "
            f"{self.world_n} ranks on {len(hosts)} host{'s' if len(hosts) != 1 else ''}, launcher {self.ranks.source}"
            + (f", split '{cfg.split}' into {len(self.groups)} groups of {self.n}" if cfg.split else ""),
            f"sizes {format_size(cfg.min_bytes)} to {format_size(cfg.max_bytes)}, warmup {cfg.warmup}, iters {cfg.iters}, "
            f"check iters {cfg.check_iters}, timing {cfg.timing}, time = {cfg.time_reduce} across ranks "
            "(max = slowest rank)",
        ]
        for i in infos:
            dev = f"cuda:{i['gpu']}" if i["gpu"] is not None else "cpu"
            lines.append(f"Rank {i['rank']:>3} Pid {i['pid']:>7} on {i['host']} device {dev} cpus {i['cpu_affinity']}")
        from fabricbench import __version__

        self.printer.run_header(f"fabricbench {__version__} run {cfg.run_id}", lines)

    def _op_note(self, op: Op, placement: str) -> str:
        return f"{placement}, busbw factor {op.busbw_factor(self.n):.4g}" + (
            ", time = one way (half the round trip)" if op.time_divisor == 2 else "")

    def _mark_progress(self, op: str, size: int, phase: str) -> None:
        self.phase = f"{op} {format_size(size) if size > 0 else ''} {phase}".replace("  ", " ")

    def _call(self, op: Op, call: Call) -> None:
        self._fault_point()
        self.calls += 1
        op.run(call)


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
        try:  # temp + rename: the launcher never reads half a line (no fsync: a heartbeat is transient)
            path = Path(self.directory, f"rank{d.rank}")
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(f"{d.calls}\t{d.phase}\n")
            os.replace(tmp, path)
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
