"""`fabricbench run` as a drop-in for nccl-tests 2.19.6: the -J file, the table, the flags' meanings.

Expectations come from nccl-tests' sources (src/util.cu's JSON writer and table printer, src/common.cu's
options and timing loop, tools/analyze_perf_json.py's reader), restated here key by key.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fabricbench.engine.config import RunConfig
from fabricbench.engine.driver import Driver, complement
from fabricbench.engine.dtypes import DTYPES
from fabricbench.engine.nccl_json import NcclTestsJson, free_path, nccl_version_code
from fabricbench.engine.report import average_busbw, min_bw_verdict
from fabricbench.engine.split import groups_of, split_from_env
from fabricbench.errors import UsageError
from fabricbench.results import read_results
from tests.conftest import run_cli
from tests.fake_backend import FakeBackend, ranks

TIME_FORMAT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
# src/util.cu, in the order the writer emits them.
TOP_KEYS = ["version", "start_time", "args", "env", "nccl_version", "config", "results", "out_of_bounds",
            "average_bus_bandwidth", "errors", "end_time"]
CONFIG_INT = ["nthreads", "ngpus", "minimum_bytes", "maximum_bytes", "warmup_iters", "iterations",
              "aggregated_iterations", "validation", "graph", "per_iter_skip"]
CONFIG_BOOL_STR = ["blocking_collectives", "per_iter_timing", "parallel_init"]
DEVICE_KEYS = {"rank": int, "group": int, "pid": int, "hostname": str, "device": int, "device_hex": str,
               "device_info": str}
PER_ITER_DOUBLES = ["min_us", "max_us", "avg_us", "p50_us", "p95_us", "p99_us", "stdev_us", "cv_pct"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_double(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def assert_nccl_tests_layout(doc: dict, nprocs: int, iters: int, per_iter: bool, checked: bool = True) -> None:
    assert list(doc) == TOP_KEYS
    assert doc["version"] == 3 and _is_int(doc["version"])
    assert TIME_FORMAT.match(doc["start_time"]) and TIME_FORMAT.match(doc["end_time"])
    assert isinstance(doc["args"], list) and all(isinstance(a, str) for a in doc["args"])
    assert isinstance(doc["env"], list) and all(isinstance(e, str) and "=" in e for e in doc["env"])
    assert _is_int(doc["nccl_version"])
    cfg = doc["config"]
    for key in CONFIG_INT:
        assert _is_int(cfg[key]), key
    assert ("step_factor" in cfg) != ("step_bytes" in cfg)
    for key in CONFIG_BOOL_STR:
        assert cfg[key] in ("true", "false"), key
    assert cfg["per_iter_timing"] == ("true" if per_iter else "false")
    assert cfg["iterations"] == iters
    assert len(cfg["devices"]) == nprocs
    for dev in cfg["devices"]:
        assert {k: type(v) for k, v in dev.items()} == DEVICE_KEYS
    for item in doc["results"]:
        keys = list(item)
        assert keys[:5] == ["size", "count", "type", "redop", "root"]
        assert keys[-2:] == ["actual_iterations", "experiment_name"]
        assert _is_int(item["size"]) and _is_int(item["count"]) and _is_int(item["actual_iterations"])
        assert isinstance(item["type"], str) and isinstance(item["redop"], str)
        assert isinstance(item["root"], str) and len(item["root"]) == 6 and int(item["root"]) >= -1  # "%6i"
        assert "out_of_place" in item and "in_place" in item
        for place in ("out_of_place", "in_place"):
            entry = item[place]
            if entry is None:
                continue
            assert list(entry) == ["time", "alg_bw", "bus_bw", "nwrong"]
            assert all(_is_double(entry[k]) for k in ("time", "alg_bw", "bus_bw"))
            assert (_is_double(entry["nwrong"]) if checked else entry["nwrong"] is None)
            per = item.get(f"{place}_per_iter")
            assert (per is not None) == per_iter
            if per:
                # What tools/analyze_perf_json.py reads from each per-iteration object.
                assert _is_int(per["skipped_iterations"])
                assert all(_is_double(per[k]) for k in PER_ITER_DOUBLES)
                assert len(per["times_us"]) == iters
                rows = per.get("per_process_max_times_us", [])
                assert len(rows) == (nprocs if nprocs > 1 else 0)
                if rows:
                    # its consistency check: times_us == max over process rows, per iteration
                    maxes = [max(r[i] for r in rows) for i in range(min(len(r) for r in rows))]
                    assert all(abs(a - b) < 0.001 for a, b in zip(per["times_us"], maxes))
                if per["avg_us"] > 0:
                    per["max_us"] / per["avg_us"]  # its spike ratio
    assert _is_int(doc["out_of_bounds"]["count"]) and doc["out_of_bounds"]["okay"] in ("true", "false")
    assert _is_double(doc["average_bus_bandwidth"]["bandwidth"])
    assert doc["average_bus_bandwidth"]["okay"] in ("unchecked", "true", "false")
    assert isinstance(doc["errors"], list)


def _data_rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line and not line.startswith("#")
            and re.match(r"^\s*\d+\s+\d+\s", line)]


# -- end to end: one real 2-rank gloo run, read as nccl-tests' users read it --------------------------------------
@pytest.fixture(scope="module")
def gloo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ncclcompat")
    js = tmp / "perf.json"
    res = run_cli("run", "all_gather", "-P", "2", "--backend", "gloo", "-b", "1K", "-e", "16K", "-f", "4",
                  "-n", "4", "-w", "1", "-I", "1", "--out", str(tmp / "run"), "-J", str(js))
    assert res.returncode == 0, res.stderr
    return tmp, res, js


def test_json_has_nccl_tests_layout_and_round_trips(gloo_run):
    tmp, res, js = gloo_run
    raw = js.read_text()
    assert not re.search(r":\s*(true|false)\b", raw)  # booleans are strings in nccl-tests' writer
    doc = json.loads(raw)
    assert_nccl_tests_layout(doc, nprocs=2, iters=4, per_iter=True)
    assert [r["size"] for r in doc["results"]] == [1024, 4096, 16384]
    assert doc["results"][0]["root"] == "    -1" and doc["results"][0]["redop"] == "none"
    assert doc["config"]["step_factor"] == 4 and doc["out_of_bounds"] == {"count": 0, "okay": "true"}
    # nccl-tests' footer average: the mean busbw over both placements of every size
    bws = [r[p]["bus_bw"] for r in doc["results"] for p in ("out_of_place", "in_place")]
    assert doc["average_bus_bandwidth"]["bandwidth"] == pytest.approx(sum(bws) / len(bws), abs=2e-6)  # %f
    # our importer reads it back: one measurement per size and placement, same busbw
    from fabricbench.analyze.importers import load

    ds = load(js)
    assert sorted(ds.groups.busbw) == pytest.approx(sorted(bws), rel=1e-5)
    assert set(ds.groups.op) == {"all_gather"}
    # NVIDIA's reader runs on it (when its source is at hand: a fetched nccl-tests mirror)
    tool = Path("/work/.mirror/NVIDIA+nccl-tests/repo")
    if tool.exists():
        src = subprocess.run(["git", "-C", str(tool), "show", "HEAD:tools/analyze_perf_json.py"],
                             capture_output=True, text=True).stdout
        if src:
            script = tmp / "analyze_perf_json.py"
            script.write_text(src)
            out = subprocess.run(["python3", str(script), str(js), "--all"], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            assert "Consistency (times_us == max over process rows, OOP): PASS" in out.stdout


def test_table_fields_are_at_nccl_tests_positions(gloo_run):
    tmp, res, js = gloo_run
    doc = json.loads(js.read_text())
    rows = _data_rows(res.stdout)
    assert len(rows) == 3
    for fields, item in zip(rows, doc["results"]):
        size, count, dtype, redop, root = fields[:5]
        assert (int(size), int(count), dtype, redop, int(root)) == (item["size"], item["count"], "float", "none", -1)
        oop, ip = item["out_of_place"], item["in_place"]
        # $7/$8 (1-based) are out-of-place algbw/busbw, $11/$12 in-place: as nccl-tests prints them
        assert float(fields[6]) == pytest.approx(oop["alg_bw"], abs=0.006)
        assert float(fields[7]) == pytest.approx(oop["bus_bw"], abs=0.006)
        assert fields[8] == "0" and fields[12] == "0"
        assert float(fields[11]) == pytest.approx(ip["bus_bw"], abs=0.006)
    lines = res.stdout.splitlines()
    assert any(line.startswith("# nThread 1 nGpus 1 minBytes 1024 maxBytes 16384 step: 4(factor)") for line in lines)
    assert any(re.match(r"^#  Rank  1 Group  0 Pid +\d+ on +\S+ device -1 \[cpu\]", line) for line in lines)
    footer = [line for line in lines if line.startswith("# Avg bus bandwidth")]
    assert len(footer) == 1 and footer[0].startswith("# Avg bus bandwidth    : ")
    assert float(footer[0].split()[-1]) == pytest.approx(doc["average_bus_bandwidth"]["bandwidth"], rel=1e-4, abs=2e-6)
    assert "# Out of bounds values : 0 OK" in lines


def test_analyze_reads_our_text_output_as_nccl_tests(gloo_run):
    tmp, res, js = gloo_run
    log = tmp / "run.log"
    log.write_text(res.stdout)
    from fabricbench.analyze.importers import load, sniff

    assert sniff(log) == "nccl-tests"
    ds = load(log)
    doc = json.loads(js.read_text())
    assert set(ds.groups.op) == {"all_gather"} and len(ds.groups) == 6
    expected = [round(r[p]["bus_bw"], 2) for r in doc["results"] for p in ("out_of_place", "in_place")]
    assert sorted(ds.groups.busbw) == pytest.approx(sorted(expected), abs=0.006)


def test_unchecked_runs_print_na_and_write_null(tmp_path):
    js = tmp_path / "x.json"
    res = run_cli("run", "all_reduce", "-P", "2", "--backend", "gloo", "-b", "1K", "-e", "1K", "-n", "2", "-w", "0",
                  "-c", "0", "--out", str(tmp_path / "r"), "-J", str(js))
    assert res.returncode == 0, res.stderr
    (fields,) = _data_rows(res.stdout)
    # gloo's all_reduce is in place only: the out-of-place half is N/A, labelled in the op note
    assert fields[5:9] == ["N/A"] * 4 and fields[12] == "N/A"
    assert "in-place only" in res.stdout
    doc = json.loads(js.read_text())
    assert_nccl_tests_layout(doc, nprocs=2, iters=2, per_iter=False, checked=False)
    assert doc["results"][0]["out_of_place"] is None and doc["results"][0]["in_place"]["nwrong"] is None
    # nccl-tests never overwrites a -J file: the next run writes x.json.0
    again = run_cli("run", "all_reduce", "-P", "2", "--backend", "gloo", "-b", "1K", "-e", "1K", "-n", "2",
                    "--out", str(tmp_path / "r2"), "-J", str(js))
    assert again.returncode == 0 and (tmp_path / "x.json.0").exists() and f"{js}.0" in again.stdout


# -- the JSON file itself ------------------------------------------------------------------------------------
def test_json_is_valid_after_every_size_and_never_overwrites(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("keep me")
    f = NcclTestsJson(path, "all_reduce", {"version": 3}, {"nthreads": 1})
    assert f.path == tmp_path / "p.json.0" and path.read_text() == "keep me"
    assert json.loads(f.path.read_text())["results"] == []
    entry = {"time": 1.0, "alg_bw": float("nan"), "bus_bw": 2.0, "nwrong": 0.0}
    f.add({"size": 8, "out_of_place": entry, "in_place": None})
    partial = json.loads(f.path.read_text())  # a run that dies here leaves a readable file
    assert partial["results"][0]["out_of_place"]["alg_bw"] == "nan"  # jsonDouble writes NaN as "nan"
    assert "end_time" not in partial
    f.flush(final=True, min_bw=5.0)
    done = json.loads(f.path.read_text())
    assert done["average_bus_bandwidth"] == {"bandwidth": 2.0, "okay": "false"}
    assert free_path(path) == tmp_path / "p.json.1"


def test_nccl_version_is_nccls_integer_code():
    assert nccl_version_code("2.27.3") == 22703 and nccl_version_code("2.8.4") == 2804
    assert nccl_version_code(None) == 0 and nccl_version_code("2.21.5+cuda12.4") == 22105


# -- flags with nccl-tests' meaning ------------------------------------------------------------------------------
def _cfg(tmp_path, **kw) -> RunConfig:
    base = dict(ops=["all_reduce"], backend="fake", min_bytes=64, max_bytes=64, iters=3, warmup=0, check_iters=0,
                out_dir=str(tmp_path), run_id="t")
    base.update(kw)
    return RunConfig(**base)


def _timed_segment(events: list[str]) -> list[str]:
    """The events of the first measurement between the first pre-timing barrier and its end."""
    first_barrier = events.index("barrier")
    return events[first_barrier:]


def test_w0_still_runs_one_untimed_call_and_a_barrier(tmp_path):
    b = FakeBackend()
    Driver(_cfg(tmp_path, warmup=0, in_place=True), b, ranks()).run()
    assert b.events[:3] == ["call:all_reduce", "sync", "barrier"]  # before anything is timed
    assert b.events.count("call:all_reduce") == 1 + 3


def test_agg_iters_blocking_and_graph_launches(tmp_path):
    b = FakeBackend()
    Driver(_cfg(tmp_path, iters=2, agg_iters=3, in_place=True), b, ranks()).run()
    assert b.events.count("call:all_reduce") == 1 + 2 * 3  # -m: 3 ops per timed iteration
    b = FakeBackend()
    Driver(_cfg(tmp_path, iters=2, blocking=1, in_place=True), b, ranks()).run()
    timed = _timed_segment(b.events)
    # -z 1: every op waited for and followed by a barrier
    assert timed.count("call:all_reduce") == 2 and "call:all_reduce,sync,barrier" in ",".join(timed)
    b = FakeBackend()
    Driver(_cfg(tmp_path, iters=2, graph_launches=3, cuda_graph=True, in_place=True), b, ranks()).run()
    assert b.events.count("capture") == 1 and b.events.count("replay") == 3
    assert b.events.count("call:all_reduce") == 1 + 2 * 3


def test_both_placements_cycles_every_root_and_every_redop(tmp_path):
    b = FakeBackend()
    d = Driver(_cfg(tmp_path, ops=["all_reduce", "broadcast"], root=-1, all_redops=True, cycles=2,
                    min_bytes=64, max_bytes=128, step_factor=2), b, ranks())
    d.run()
    ops = read_results(tmp_path)
    ops = ops[ops.row_kind == "op"]
    ar = ops[ops.op == "all_reduce"]
    assert set(ar.placement) == {"out-of-place", "in-place"}
    assert set(ar.redop) == {"sum", "prod", "max", "min", "avg"}
    assert len(ar) == 5 * 2 * 2 * 2  # redops x sizes x placements x cycles
    assert set(ops[ops.op == "broadcast"].root) == {0}  # -r -1 on one rank: every root is rank 0
    assert set(ar.cycle) == {0, 1}


def test_every_dtype_on_a_one_rank_group_and_poison_never_passes(tmp_path):
    b = FakeBackend()
    Driver(_cfg(tmp_path, ops=["all_reduce", "all_gather"], all_dtypes=True, check_iters=1, min_bytes=1024,
                max_bytes=1024), b, ranks()).run()
    ops = read_results(tmp_path)
    ops = ops[ops.row_kind == "op"]
    assert set(ops.dtype) == set(DTYPES) and (ops.nwrong == 0).all()  # uint64 included
    # an operation that writes nothing: every element is wrong, whatever the type (8-bit types included)
    for name in ("uint8", "int8", "half", "uint64"):
        lazy = FakeBackend(lazy=True)
        out = tmp_path / name
        with pytest.raises(Exception):
            Driver(_cfg(out, ops=["all_gather"], dtype=name, check_iters=1, min_bytes=1024, max_bytes=1024),
                   lazy, ranks()).run()
        rows = read_results(out)
        rows = rows[(rows.row_kind == "op") & (rows.placement == "out-of-place")]
        assert int(rows.nwrong.iloc[0]) == int(rows["count"].iloc[0]), name


def test_complement_differs_from_every_8_bit_value():
    values = np.arange(256, dtype=np.uint8)
    assert (complement(values, DTYPES["uint8"]) != values).all()
    signed = np.arange(-128, 128, dtype=np.int8)
    assert (complement(signed, DTYPES["int8"]) != signed).all()


def test_min_bw_rule_and_average_are_nccl_tests():
    assert min_bw_verdict(9.0, 10.0) == "OK" and min_bw_verdict(8.99, 10.0) == "FAILED"  # 0.9 x the value
    assert min_bw_verdict(1.0, None) == ""
    assert average_busbw([{"busbw_gbps": 1.0}, {"busbw_gbps": 3.0}]) == 2.0


def test_min_bw_fails_the_run(tmp_path):
    res = run_cli("run", "all_gather", "-P", "2", "--backend", "gloo", "-b", "1K", "-e", "1K", "-n", "2",
                  "--out", str(tmp_path / "r"), env={"NCCL_TESTS_MIN_BW": "1000000"})
    assert res.returncode == 1 and "NCCL_TESTS_MIN_BW" in res.stderr and "Traceback" not in res.stderr
    footer = [line for line in res.stdout.splitlines() if line.startswith("# Avg bus bandwidth")]
    assert footer[0].split()[-1] == "FAILED"


def test_split_mask_is_hexadecimal():
    spec = split_from_env({"NCCL_TESTS_SPLIT_MASK": "10", "NCCL_TESTS_SPLIT": "MOD 2"})  # the mask wins
    assert spec == "AND 0x10"
    assert groups_of(32, spec) == {0: list(range(16)), 16: list(range(16, 32))}
    assert split_from_env({"NCCL_TESTS_SPLIT_MASK": "0x3"}) == "AND 0x3"
    with pytest.raises(UsageError):
        split_from_env({"NCCL_TESTS_SPLIT_MASK": "zz"})


def test_default_step_without_f_or_i_is_one_mib(tmp_path):
    from fabricbench.run_cli import build_config

    cfg = build_config(["all_reduce"], "gloo", "1M", "4M", None, None, 20, 1, "float", "sum", 0, 1, "aggregate",
                       "avg", False, str(tmp_path), None, 600, True, env={})
    from fabricbench.engine.sizes import size_sweep

    assert size_sweep(cfg.min_bytes, cfg.max_bytes, cfg.step_factor, cfg.step_bytes) == [1 << 20, 2 << 20, 3 << 20,
                                                                                           4 << 20]


def test_short_flags_mean_what_they_mean_in_nccl_tests(tmp_path):
    res = run_cli("run", "all_gather", "-P", "2", "--backend", "gloo", "-b", "1K", "-e", "1K", "-n", "2", "-w", "0",
                  "-N", "2", "-m", "2", "-z", "2", "-T", "0", "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert len(_data_rows(res.stdout)) == 2  # -N 2: the sizes twice
    assert "agg iters: 2" in res.stdout and "Blocking Enabled: wait after each inner iteration" in res.stdout


# -- --timeout: no progress, never a deadline ------------------------------------------------------------------
def test_no_progress_detector_watches_completed_calls(tmp_path):
    from fabricbench.launch.local import NoProgress, _stuck_ranks

    now = [0.0]
    w = NoProgress(5.0, tmp_path, clock=lambda: now[0])

    def beat(rank, calls, done, phase="all_reduce 1 MiB timed"):
        (tmp_path / f"rank{rank}").write_text(f"{calls}\t{done}\thost{rank}\t{phase}\n")

    starting = NoProgress(5.0, tmp_path / "none", clock=lambda: now[0], nranks=2)
    now[0] = 60.0
    assert not starting.stalled()  # ranks still starting (no heartbeat yet): at least STARTUP_S
    now[0] = NoProgress.STARTUP_S + 1
    assert starting.stalled()
    now[0] = 0.0

    for t in range(0, 60, 1):  # a long healthy run: calls keep completing
        now[0] = float(t)
        beat(0, t + 1, t)
        assert not w.stalled()
    now[0] = 64.0
    assert not w.stalled()
    now[0] = 66.0
    assert w.stalled()  # inside call 60 and nothing completed for more than 5 s
    beat(0, 59, 59, "all_reduce 1 MiB check")
    now[0] = 90.0
    assert not w.stalled()  # between calls (host work: results, checks, teardown) is not a hang
    # the rank that is behind is named with its host and the call it is in (heartbeats by world rank)
    beat(0, 100, 99)
    beat(3, 57, 56, "reduce 4 KiB timed")
    report = _stuck_ranks(tmp_path, 0)
    assert "rank 3 on host3 is in call 57 (reduce 4 KiB timed)" in report
    beat(3, 57, 57, "reduce 4 KiB warmup")
    assert "rank 3 on host3 stopped after call 57, before call 58 (reduce 4 KiB warmup)" in _stuck_ranks(tmp_path, 0)


def test_healthy_run_longer_than_timeout_is_not_stopped(tmp_path):
    start = time.monotonic()
    res = run_cli("run", "all_gather", "-P", "2", "--backend", "gloo", "-b", "1K", "-e", "1K", "-n", "50",
                  "-N", "12", "-T", "1", "--out", str(tmp_path / "r"), "-q")
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - start > 1.0


def test_split_heartbeats_are_per_world_rank(tmp_path):
    out = tmp_path / "r"
    res = run_cli("run", "all_gather", "-P", "4", "--backend", "gloo", "--split", "MOD 2", "-b", "1K", "-e", "1K",
                  "-n", "2", "--out", str(out), "-q")
    assert res.returncode == 0, res.stderr
    beats = sorted(p.name for p in (out / ".progress").iterdir())
    assert beats == ["rank0", "rank1", "rank2", "rank3"]


# -- MPI across hosts: no MASTER_ADDR, failures named by rank and host ---------------------------------------------
def test_mpi_ranks_need_no_master_addr_across_hosts():
    from fabricbench.engine.ranks import discover

    env = {"OMPI_COMM_WORLD_RANK": "9", "OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "8"}  # mpirun -np 16 --host a,b: 8 ranks per host
    info = discover(env, rendezvous=False)
    assert (info.rank, info.world_size, info.local_rank) == (9, 16, 1)
    with pytest.raises(UsageError, match="MASTER_ADDR"):
        discover(env)  # torch.distributed's rendezvous does need it


_needs_mpi = pytest.mark.skipif(not (__import__("shutil").which("mpirun")
                                     and __import__("importlib.util").util.find_spec("mpi4py")),
                                reason="mpirun or mpi4py missing")


@_needs_mpi
def test_mpirun_as_on_two_hosts_without_master_addr(tmp_path):
    import os
    import sys

    from tests.conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_", "SLURM_",
                                                                      "MASTER_")) and k not in ("RANK", "WORLD_SIZE")}
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_mpi_yield_when_idle="1",
               OMP_NUM_THREADS="1")
    # Each rank is told it is alone on its host (as with --host a,b), so the 2 ranks look like 2 hosts.
    inner = (f"OMPI_COMM_WORLD_LOCAL_SIZE=1 OMPI_COMM_WORLD_LOCAL_RANK=0 exec {sys.executable} -m fabricbench run "
             f"--backend mpi all_reduce -b 1K -e 1K -n 2 -w 0 -q --out {tmp_path / 'r'}")
    proc = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none", "sh", "-c", inner],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-1500:]
    ops = read_results(tmp_path / "r")
    assert (ops[ops.row_kind == "op"].nwrong == 0).all()


def test_open_mpi_banner_becomes_rank_and_host():
    from fabricbench.launch.local import mpi_failure
    from fabricbench.launch.progress import Heartbeat

    killed = ("-" * 74 + "\nmpirun noticed that process rank 1 with PID 0 on node gpu07 exited on signal 9 (Killed).\n"
              + "-" * 74)
    assert mpi_failure(killed, {}) == "rank 1 on gpu07 was killed by SIGKILL"
    exited = ("mpirun detected that one or more processes exited with non-zero status, thus causing\nthe job to be "
              "terminated. The first process to do so was:\n\n  Process name: [[15475,1],3]\n  Exit code:    2\n")
    beats = {3: Heartbeat(3, 10, 10, "gpu09", "all_reduce 1 MiB timed")}
    assert mpi_failure(exited, beats) == "rank 3 on gpu09 exited with code 2"
    assert mpi_failure("no banner here", {}) is None


@_needs_mpi
def test_mpi_rank_failure_names_rank_and_host_not_the_banner(tmp_path):
    import socket

    res = run_cli("run", "all_reduce", "-P", "2", "--backend", "mpi", "-b", "1K", "-e", "1K", "-n", "5", "-q",
                  "--out", str(tmp_path / "r"), env={"FABRICBENCH_INJECT": "die@1:after=3",
                                                     "OMPI_MCA_mpi_yield_when_idle": "1"})
    assert res.returncode == 1
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "----" not in err
    assert f"rank 1 on {socket.gethostname()} was killed by SIGKILL" in err


# -- per row: algorithm, protocol, transport from NCCL's own report ----------------------------------------------
def test_rows_get_nccls_transport_and_with_tuning_its_algorithm(tmp_path):
    from fabricbench.engine import nccl_log
    from fabricbench.engine.algo_report import NO_TUNING, P2P_NOTE, fill
    from fabricbench.engine.worker import fill_algorithms

    log = ("host:1:1 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/IPC\n"
           "host:1:1 [0] NCCL INFO AllReduce: 4194304 Bytes -> Algo RING proto SIMPLE channel{Lo..Hi}={0..3}\n"
           "host:1:1 [0] NCCL INFO AllReduce: 1024 Bytes -> Algo TREE proto LL channel{Lo..Hi}={0..0}\n")
    summary = nccl_log.summarize(log, rank=0, host="host")
    rows = [{"backend": "nccl", "op": "all_reduce", "size_bytes": 4194304, "count": 1048576, "nranks": 2},
            {"backend": "nccl", "op": "all_reduce", "size_bytes": 1024, "count": 256, "nranks": 2},
            {"backend": "nccl", "op": "sendrecv", "size_bytes": 1024, "count": 256, "nranks": 2},
            {"backend": "gloo", "op": "all_reduce", "size_bytes": 1024, "count": 256, "nranks": 2}]
    assert fill(rows, summary) == 2
    assert (rows[0]["algo"], rows[0]["proto"]) == ("Ring", "Simple")
    assert (rows[1]["algo"], rows[1]["proto"]) == ("Tree", "LL")
    assert rows[0]["transport"] and "P2P" in rows[0]["transport"]
    assert rows[2]["algo_note"] == P2P_NOTE and "algo" not in rows[3]
    no_tuning = [{"backend": "nccl", "op": "all_gather", "size_bytes": 1024, "count": 128, "nranks": 2}]
    fill(no_tuning, nccl_log.summarize(log.splitlines()[0], rank=0))
    assert no_tuning[0]["algo_note"] == NO_TUNING and no_tuning[0].get("algo") is None
    # on a results directory: the parquet rows get the columns
    b = FakeBackend()
    Driver(_cfg(tmp_path, in_place=True), b, ranks()).run()
    frame = read_results(tmp_path)
    assert "not NCCL" in frame.algo_note.iloc[0]  # CPU/other libraries: the reason is stated
    frame["backend"] = "nccl"
    from fabricbench.results.io import write_results

    write_results(tmp_path, frame.to_dict("records"))
    fill_algorithms(tmp_path, summary)
    assert set(read_results(tmp_path).transport) == {summary["transport"]}


# -- P2P as OSU ---------------------------------------------------------------------------------------------------
def test_p2p_follow_osu_windows_with_one_ack_per_window():
    from fabricbench.ops import get_op
    from fabricbench.ops.base import Call

    class Rec:
        def __init__(self):
            self.log = []

        def __getattr__(self, name):
            return lambda *a: self.log.append((name, *[x for x in a if isinstance(x, int)]))

    uni, bi = get_op("p2p_uni"), get_op("p2p_bi")
    sender, receiver = Rec(), Rec()
    for rank, b in ((0, sender), (1, receiver)):
        call = Call(b, "send", "recv", "sum", 0, rank, 2, scratch="ack", window=64)
        uni.run(call)
        uni.finish(call)  # per-iter timing calls it every iteration: it must add no round trip
    assert sender.log == [("send_window", 1, 64), ("recv", 1)]  # osu_bw: a window, then one ack
    assert receiver.log == [("recv_window", 0, 64), ("send", 0)]
    assert uni.messages_per_call(64) == 64 and bi.messages_per_call(64) == 64
    peer = Rec()
    bi.run(Call(peer, "send", "recv", "sum", 0, 1, 2, window=8))
    assert peer.log == [("exchange_window", 0, 8)]  # osu_bibw: windows both ways, no ack
    assert bi.layout(1024, 4, 2, 0).algbw_bytes == 2048  # both directions counted


def test_p2p_uni_window_is_reported_per_message(tmp_path):
    res = run_cli("run", "p2p_uni", "pingpong", "-P", "2", "--backend", "gloo", "-b", "4K", "-e", "4K", "-n", "3",
                  "-w", "1", "--window", "16", "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    assert "window of 16 non-blocking messages per call, time per message" in res.stdout
    ops = read_results(tmp_path / "r")
    ops = ops[ops.row_kind == "op"].set_index("op")
    row = ops.loc["p2p_uni"]
    assert row.algbw_gbps == pytest.approx(4096 / (row.time_us * 1e3))
