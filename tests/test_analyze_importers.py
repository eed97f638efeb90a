"""Importers: real tool outputs (shared fixtures, read in place), small samples of our own, bad files, fuzz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabricbench.analyze.importers import load, sniff
from fabricbench.analyze.importers.ib_write_bw import parse_text as parse_ib
from fabricbench.analyze.importers.nccl_tests_json import parse_json as parse_nccl_json
from fabricbench.analyze.importers.nccl_tests_text import parse_text as parse_nccl
from fabricbench.analyze.importers.nvbandwidth import parse_json as parse_nvb_json
from fabricbench.analyze.importers.nvbandwidth import parse_text as parse_nvb
from fabricbench.errors import UsageError
from fabricbench.results import write_results

DATA = Path(__file__).parent / "data"

# file -> (ops, number of rows (out-of-place + in-place), hosts or None when elided)
NCCL = {
    "allgather-gb10-2node-v2.18.5-gb10-training.txt": ({"all_gather"}, 2, {"promaxgb10-4c75", "promaxgb10-4c99"}),
    "allreduce-a100-40gb-x8-single-node-dgx-galvatron-fixture.txt": ({"all_reduce"}, 22, {"job-83e1033f-9636-44b3-bf8b-2b627707b95f-worker-0"}),
    "allreduce-gb200-20rack-1440gpu-tail-coreweave.txt": ({"all_reduce"}, 12, None),
    "allreduce-gb200-2rack-144gpu-tail-coreweave.txt": ({"all_reduce"}, 12, None),
    "allreduce-gh200-2node-1gpu-v2.18.2-sarus-cscs.txt": ({"all_reduce"}, 16, {"nid007106", "nid007109"}),
    "allreduce-gh200-2node-8gpu-slingshot-indented-cscs.txt": ({"all_reduce"}, 50, {"nid005471", "nid005487"}),
    "allreduce-h100-64gpu-sharp-mpijob-elided-coreweave.txt": ({"all_reduce"}, 10, None),
    "alltoall-b300x8-single-node-new-format-oci.txt": ({"alltoall"}, 2, None),
    "alltoall-gb200-2host-hand-condensed-oci.txt": ({"alltoall"}, 4, None),
    "alltoall-gb300-nvl72-2host-new-format-oci.txt": ({"alltoall"}, 4, None),
    "ten-collectives-b200-2node-16gpu-ib-hypercube-failed-orcd.txt": (
        {"sendrecv", "all_reduce", "all_gather", "reduce_scatter", "reduce", "broadcast", "alltoall", "gather",
         "scatter", "hypercube"}, 160, {"node5500", "node5501"}),
    "ten-collectives-b200x8-single-node-hypercube-failed-orcd.txt": (
        {"sendrecv", "all_reduce", "all_gather", "reduce_scatter", "reduce", "broadcast", "alltoall", "gather",
         "scatter", "hypercube"}, 160, {"node5502"}),
}


@pytest.mark.parametrize("name", sorted(NCCL))
def test_nccl_tests_fixtures(fixtures_dir, name):
    ops, nrows, hosts = NCCL[name]
    path = fixtures_dir / "nccl-tests" / name
    assert sniff(path) == "nccl-tests"
    ds = load(path)
    g = ds.groups
    assert set(g["op"]) == ops
    assert len(g) == nrows
    assert (g["busbw"] >= 0).all() and (g["size"] > 0).all()
    if hosts is None:
        assert set(g["hosts"]) == {""}
        assert any("elided" in c or "missing" in c for c in ds.caveats)
    else:
        assert set(",".join(sorted(hosts)).split(",")) == set(g["hosts"].iloc[0].split(","))


def test_nccl_tests_values_and_wrong_data(fixtures_dir):
    ds = load(fixtures_dir / "nccl-tests" / "allreduce-gh200-2node-1gpu-v2.18.2-sarus-cscs.txt")
    last = ds.groups[(ds.groups["size"] == 134217728)]
    assert sorted(last["busbw"]) == [22.86, 22.88]
    assert (ds.groups["nranks"] == 2).all()
    bad = load(fixtures_dir / "nccl-tests" / "ten-collectives-b200-2node-16gpu-ib-hypercube-failed-orcd.txt")
    hyper = bad.groups[bad.groups["op"] == "hypercube"]
    assert (hyper["nwrong"].fillna(0) > 0).any()
    assert any("wrong data" in c for c in bad.caveats)
    # 11-digit size overflowing the column
    tail = load(fixtures_dir / "nccl-tests" / "allreduce-gb200-20rack-1440gpu-tail-coreweave.txt")
    assert 17179869184 in set(tail.groups["size"])
    assert (tail.groups["nranks"] == 1440).all()


def test_nvbandwidth_fixtures(fixtures_dir):
    single = load(fixtures_dir / "nvbandwidth" / "h100x8-d2d-read-ce-v0.4-azure-nd-h100-v5.txt")
    assert len(single.gpus) == 56
    cell = single.gpus[(single.gpus["src_gpu"] == 2) & (single.gpus["dst_gpu"] == 4)]
    assert float(cell["bw"].iloc[0]) == pytest.approx(372.96)
    multi = load(fixtures_dir / "nvbandwidth" / "gb200-2node-multinode-d2d-read-ce-v0.7-nvidia-dra-docs.txt")
    assert len(multi.gpus) == 56
    assert set(multi.gpus["src_host"]) == {"nvbandwidth-test-worker-0", "nvbandwidth-test-worker-1"}
    # process 4 is worker-1 device 0
    row = multi.gpus[(multi.gpus["src_host"] == "nvbandwidth-test-worker-1") & (multi.gpus["src_gpu"] == 0)]
    assert len(row) == 7
    sums = load(fixtures_dir / "nvbandwidth" / "gb200-all-testcases-sum-lines-only-oci.txt")
    assert len(sums.gpus) == 0 and len(sums.groups) == 43
    assert any("SUM lines only" in c for c in sums.caveats)


def test_ib_write_bw_fixtures(fixtures_dir):
    sweep = load(fixtures_dir / "ib" / "ib_write_bw-sweep-roce-50g-client-nvidia-cns.txt", host="hostA")
    assert len(sweep.nics) == 23 and set(sweep.nics["nic"]) == {"mlx5_0"} and set(sweep.nics["host"]) == {"hostA"}
    assert sweep.nics["bw"].max() == pytest.approx(52.52 / 8)
    server = load(fixtures_dir / "ib" / "ib_write_bw-server-side-single-row-roce-nvidia-cns.txt")
    assert len(server.nics) == 1 and server.nics["size"].iloc[0] == 8388608
    qp4 = load(fixtures_dir / "ib" / "ib_write_bw-4qp-rdmacm-gb10-200g-gb10-training.txt")
    assert qp4.nics["nic"].iloc[0] == "rocep1s0f0" and qp4.nics["bw"].iloc[0] == pytest.approx(111.61 / 8)
    assert any("file name" in c for c in qp4.caveats)


def test_own_samples():
    js = load(DATA / "analyze-nccl-tests.json")
    assert set(js.groups["op"]) == {"all_reduce"}
    assert len(js.groups) == 5  # one in_place entry is null
    assert set(js.groups["hosts"]) == {"gpu-a,gpu-b"}
    assert js.groups["nwrong"].max() == 3
    nvb = load(DATA / "analyze-nvbandwidth.json")
    assert len(nvb.gpus) == 12
    ib = load(DATA / "analyze-ib_write_bw-gpu07.txt")
    assert set(ib.nics["host"]) == {"analyze-ib_write_bw-gpu07"} and set(ib.nics["nic"]) == {"mlx5_3"}


def _write(tmp_path, rows, run=None):
    out = tmp_path / "r"
    write_results(out, rows, run or {"hosts": sorted({r.get("node_a") for r in rows} | {r.get("node_b") for r in rows})})
    return out


def test_fabricbench_results_directions_and_failed(tmp_path):
    rows = [dict(row_kind="pair", node_a="a", node_b="b", direction="a->b", size_bytes=1 << 30, algbw_gbps=40.0,
                 status="ok", round=0),
            dict(row_kind="pair", node_a="a", node_b="b", direction="b->a", size_bytes=1 << 30, algbw_gbps=20.0,
                 status="ok", round=0),
            dict(row_kind="pair", node_a="a", node_b="c", direction="bidir", size_bytes=1 << 30, algbw_gbps=30.0,
                 status="ok", round=1),
            dict(row_kind="pair", node_a="b", node_b="c", direction="a->b", size_bytes=1 << 30, status="failed",
                 error="timeout", round=2)]
    ds = load(_write(tmp_path, rows))
    p = ds.pairs
    got = {(str(s), str(d)): b for s, d, b in zip(p["src"], p["dst"], p["bw"])}
    assert got[("a", "b")] == 40.0 and got[("b", "a")] == 20.0
    assert got[("a", "c")] == 30.0 and got[("c", "a")] == 30.0  # bidir counts for both, with a caveat
    assert any("bidirectional" in c for c in ds.caveats)
    failed = p[p["status"] == "failed"]
    assert len(failed) == 1 and str(failed["error"].iloc[0]) == "timeout"
    assert ds.expected_hosts == {"a", "b", "c"}


def test_corrupt_truncated_and_empty_results(tmp_path):
    out = _write(tmp_path, [dict(row_kind="pair", node_a="a", node_b="b", direction="a->b", size_bytes=8,
                                 algbw_gbps=1.0, status="ok")])
    data = (out / "results.parquet").read_bytes()
    (out / "results.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="truncated or corrupt"):
        load(out)
    (out / "results.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(UsageError):
        load(out)
    empty = tmp_path / "empty"
    write_results(empty, [], {"hosts": []})
    ds = load(empty)
    assert ds.empty() and any("no rows" in c for c in ds.caveats)
    with pytest.raises(UsageError, match="no such file"):
        load(tmp_path / "nope")
    (tmp_path / "dir").mkdir()
    with pytest.raises(UsageError, match="without results.parquet"):
        load(tmp_path / "dir")
    trunc = tmp_path / "t.json"
    trunc.write_text('{"results": [{"size": 8, "out_of_place": {"bus_bw"')
    with pytest.raises(UsageError, match="not valid JSON"):
        load(trunc)
    text = tmp_path / "t.txt"
    text.write_text("# nThread 1 nGpus 8 minBytes 8\n#\n# Using devices\n")
    with pytest.raises(UsageError, match="no nccl-tests result rows"):
        load(text)


def test_missing_run_json_is_a_caveat(tmp_path):
    out = tmp_path / "r"
    write_results(out, [dict(row_kind="pair", node_a="a", node_b="b", direction="a->b", size_bytes=8,
                             algbw_gbps=1.0, status="ok")])
    ds = load(out)
    assert any("no run.json" in c for c in ds.caveats)


def _safe(fn, *args):
    try:
        fn(*args)
    except UsageError:
        pass


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LINE = st.sampled_from([
    "# nThread 1 nGpus 8 minBytes 8 maxBytes 128 step: 2(factor) warmup iters: 5 iters: 20",
    "#  Rank  0 Group  0 Pid  1 on host1 device  0 [0x1b] NVIDIA H100",
    "     1048576        262144     float     sum      -1    52.51   19.97   19.97      0    55.73   18.81   18.81    N/A",
    "# Avg bus bandwidth    : 44.6842 ", "# Out of bounds values : 3 FAILED", "%%%%%%%%% sendrecv_perf %%%%%%%%%%",
    "Running device_to_device_memcpy_read_ce.", "memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)",
    "          0         1", "0       N/A    370.90", "1    370.90       N/A", "SUM x 1.0",
    " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]",
    " 65536      5000             392.10              391.80  		   0.747", "...", "",
    "Process 0 (h): device 0: GB200 (0000)", "# Collective test starting: all_reduce_perf"])


@FUZZ
@given(st.lists(st.one_of(LINE, st.text(max_size=80)), max_size=30))
def test_fuzz_text_importers(lines):
    text = "\n".join(lines)
    _safe(parse_nccl, text, "fuzz")
    _safe(parse_nvb, text, "fuzz")
    _safe(parse_ib, text, "fuzz", "h")


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10)),
                       lambda inner: st.one_of(st.lists(inner, max_size=4),
                                               st.dictionaries(st.sampled_from(
                                                   ["results", "config", "devices", "hostname", "size", "out_of_place",
                                                    "bus_bw", "nwrong", "testcases", "name", "bandwidth_matrix", "sum",
                                                    "nvbandwidth", "in_place", "collective"]), inner, max_size=5)),
                       max_leaves=20)


@FUZZ
@given(JSONISH)
def test_fuzz_json_importers(doc):
    _safe(parse_nccl_json, doc, "fuzz")
    _safe(parse_nvb_json, doc, "fuzz")


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_files_never_traceback(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fz") / "x.txt"
    path.write_bytes(blob)
    _safe(load, path)
    path2 = path.with_suffix(".parquet")
    path2.write_bytes(b"PAR1" + blob)
    _safe(load, path2)


def test_large_pair_frame_loads_categorical(tmp_path):
    n = 40
    a, b = np.meshgrid(np.arange(n), np.arange(n))
    keep = a != b
    frame = pd.DataFrame({"row_kind": "pair", "node_a": [f"h{x}" for x in a[keep]], "node_b": [f"h{x}" for x in b[keep]],
                          "direction": "a->b", "size_bytes": 1 << 30, "algbw_gbps": 40.0, "status": "ok", "round": 0})
    out = tmp_path / "big"
    write_results(out, frame, {"hosts": [f"h{i}" for i in range(n)]})
    ds = load(out)
    assert len(ds.pairs) == n * (n - 1)
    assert isinstance(ds.pairs["src"].dtype, pd.CategoricalDtype)
    assert json.dumps(ds.counts())
