"""Host logic of the GPU measurements, with the GPU calls replaced by the fake interface (numpy buffers whose
copies really move data; times from a bandwidth table): pattern, byte accounting, direction of every kind,
matrix assembly, verification, result rows, refusals, and the self-test's checks."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fabricbench.errors import UsageError
from fabricbench.gpu import nvlink, selftest
from fabricbench.gpu import pattern as pat
from fabricbench.gpu.api import PeerAccessError, Timing
from fabricbench.gpu.fake import FakeGpuApi

MiB = 1 << 20


def _splitmix_word(seed: int, i: int) -> int:
    """An independent scalar rewrite of pattern.cu's fb_pattern."""
    m = (1 << 64) - 1
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    z ^= z >> 31
    return (z ^ (z >> 32)) & 0xFFFFFFFF


def _cfg(**kw):
    base = dict(kinds=list(nvlink.DEFAULT_KINDS), size=1 * MiB, loops=4, samples=3, warmup=1,
                latency_lines=1024, latency_hops=100)
    base.update(kw)
    return nvlink.NvlinkConfig(**base)


def test_host_pattern_matches_the_kernel_formula_and_poison_differs_everywhere():
    seed = 0x1234_5678_9ABC_DEF0
    words = pat.pattern(seed, 1000, 64)
    assert [int(w) for w in words] == [_splitmix_word(seed, 1000 + k) for k in range(64)]
    assert (pat.poison(seed, 0, 4096) ^ pat.pattern(seed, 0, 4096) == 0xFFFFFFFF).all()
    assert not (pat.pattern(1, 0, 1024) == pat.pattern(2, 0, 1024)).all()
    seeds = {pat.sample_seed(7, k, r, c, s) for k in range(3) for r in range(3) for c in range(3) for s in range(3)}
    assert len(seeds) == 81


def test_byte_accounting_is_bytes_copied_per_second_once():
    api = FakeGpuApi({"ngpus": 2, "gbps": {"sm": 250.0, "ce": 100.0}})
    gpus, cells = nvlink.run_matrix(api, _cfg(kinds=["sm_read", "ce_write", "sm_bidir", "ce_bidir"]))
    by = {(c.kind, c.row, c.col): c for c in cells}
    assert by[("sm_read", 0, 1)].gbps == pytest.approx(250.0)
    # time per copy = size / rate
    assert by[("sm_read", 0, 1)].time_us == pytest.approx(MiB / 250e9 * 1e6)
    assert by[("ce_write", 1, 0)].gbps == pytest.approx(100.0)
    # bidirectional: both directions counted (sum), and each direction kept
    assert by[("sm_bidir", 0, 1)].gbps == pytest.approx(500.0)
    assert by[("sm_bidir", 0, 1)].dir_gbps == pytest.approx([250.0, 250.0])
    assert by[("ce_bidir", 1, 0)].gbps == pytest.approx(200.0)
    # the fake saw exactly loops x size per transfer per copy call (warm-up + samples)
    sm_read_calls = [c for c in api.copies if c[0] == "sm" and c[4] == 4 * MiB]
    assert sm_read_calls


def test_each_kind_moves_data_in_the_stated_direction_run_by_the_row_gpu():
    api = FakeGpuApi({"ngpus": 3})
    _gpus, cells = nvlink.run_matrix(api, _cfg(kinds=["sm_read", "sm_write", "ce_read", "ce_write", "latency"]))
    for c in cells:
        assert c.exec_gpu == c.row
        if c.kind.endswith("_read") or c.kind == "latency":
            assert (c.src_gpu, c.dst_gpu) == (c.col, c.row)  # column -> row
        else:
            assert (c.src_gpu, c.dst_gpu) == (c.row, c.col)  # row -> column
    # and the fake recorded copies with those devices
    assert ("sm", 2, 0, 0, 4 * MiB) in api.copies  # sm_read cell (0, 2): GPU 0 pulls from GPU 2
    assert ("sm", 0, 2, 0, 4 * MiB) in api.copies  # sm_write cell (0, 2): GPU 0 pushes to GPU 2
    assert nvlink.KINDS["sm_read"].label == "GPU(row) -> GPU(column)"
    assert nvlink.KINDS["sm_write"].label == "GPU(row) <- GPU(column)"


def test_bidirectional_transfers_each_gpu_pulls_into_its_own_memory():
    api = FakeGpuApi({"ngpus": 2})
    bufs = {d: [api.alloc(d, MiB), api.alloc(d, MiB)] for d in (0, 1)}
    ce = nvlink.transfers_for(nvlink.KINDS["ce_bidir"], 0, 1, bufs)
    assert [(t.src.device, t.dst.device, t.exec_device) for t in ce] == [(1, 0, 0), (0, 1, 1)]
    sm = nvlink.transfers_for(nvlink.KINDS["sm_bidir"], 0, 1, bufs)
    assert [(t.src.device, t.dst.device, t.exec_device) for t in sm] == [(1, 0, 0), (0, 1, 1)]  # as nvbandwidth
    assert sm[0].dst is not sm[1].src  # the two directions use different buffers


def test_matrix_assembly_places_cells_by_row_and_column():
    api = FakeGpuApi({"ngpus": 3, "pair_gbps": {"2,0": 77.0, "0,1": 11.0}})
    gpus, cells = nvlink.run_matrix(api, _cfg(kinds=["sm_read", "sm_write"]))
    grid = nvlink.matrix(cells, "sm_read", gpus)
    assert grid[0][0] is None and grid[1][1] is None
    assert grid[0][2].gbps == pytest.approx(77.0)  # read cell (0, 2): data 2 -> 0
    assert grid[1][0].gbps == pytest.approx(11.0)  # read cell (1, 0): data 0 -> 1
    wgrid = nvlink.matrix(cells, "sm_write", gpus)
    assert wgrid[2][0].gbps == pytest.approx(77.0)  # write cell (2, 0): data 2 -> 0
    text = nvlink.format_matrix(cells, "sm_read", gpus)
    lines = text.splitlines()
    assert lines[0] == "sm_read: GPU(row) -> GPU(column) bandwidth (GB/s)"
    assert "data flows column -> row" in lines[1] and "bytes copied per second" in lines[1]
    assert lines[3].split() == ["0", "N/A", "400.00", "77.00"]
    assert lines[-1].startswith("SUM sm_read ")


def test_a_corrupting_link_is_wrong_data_in_exactly_its_cells():
    api = FakeGpuApi({"ngpus": 3, "corrupt": [[1, 2]]})
    _gpus, cells = nvlink.run_matrix(api, _cfg(kinds=["sm_read", "sm_write", "ce_bidir"]))
    wrong = {(c.kind, c.row, c.col) for c in cells if c.status == "wrong-data"}
    # 1 -> 2 is read cell (2, 1), write cell (1, 2), and both bidirectional cells of the pair
    assert wrong == {("sm_read", 2, 1), ("sm_write", 1, 2), ("ce_bidir", 1, 2), ("ce_bidir", 2, 1)}
    bad = next(c for c in cells if (c.kind, c.row, c.col) == ("sm_read", 2, 1))
    assert bad.mismatches == 3  # one word per sample
    assert bad.first_bad == (MiB // 4) // 3
    assert bad.gbps is not None  # the bandwidth is measured, and still the cell is wrong
    assert "WRONG" in nvlink.format_matrix(cells, "sm_read", [0, 1, 2])
    assert nvlink.verify_summary(cells).startswith("verify: WRONG DATA")


def test_a_copy_that_does_nothing_fails_because_destinations_are_poisoned():
    api = FakeGpuApi({"ngpus": 2, "noop": [[0, 1]]})
    _gpus, cells = nvlink.run_matrix(api, _cfg(kinds=["ce_read"], samples=2))
    cell = next(c for c in cells if (c.row, c.col) == (1, 0))
    assert cell.status == "wrong-data"
    assert cell.mismatches == 2 * (MiB // 4)  # every word of every sample
    ok = next(c for c in cells if (c.row, c.col) == (0, 1))
    assert ok.status == "ok" and ok.mismatches == 0


def test_expired_gates_discard_samples_and_fail_the_cell():
    api = FakeGpuApi({"ngpus": 2, "gate_expires": True})
    _gpus, cells = nvlink.run_matrix(api, _cfg(kinds=["sm_read"], samples=2))
    assert all(c.status == "failed" and c.discarded == 2 and c.gbps is None for c in cells)


def test_refusals_single_gpu_peer_access_memory_options():
    with pytest.raises(UsageError, match="needs 2 or more GPUs.*selftest --gpu"):
        nvlink.check_config(FakeGpuApi({"ngpus": 1}), _cfg())
    with pytest.raises(UsageError, match="--gpus names 1"):
        nvlink.check_config(FakeGpuApi({"ngpus": 4}), _cfg(gpus=[2]))
    with pytest.raises(PeerAccessError, match="peer access is unavailable between every pair"):
        nvlink.check_config(FakeGpuApi({"ngpus": 2, "no_peer": [[0, 1]]}), _cfg())
    with pytest.raises(PeerAccessError, match="between GPU 0 and GPU 2"):
        nvlink.check_config(FakeGpuApi({"ngpus": 3, "no_peer": [[0, 2]]}), _cfg(gpus=[0, 1, 2]))
    small = FakeGpuApi({"devices": [{"free_bytes": 3 * MiB}, {"free_bytes": 64 * MiB}]})
    with pytest.raises(UsageError, match=r"on GPU 0 .* only 0.00 GiB"):
        nvlink.check_config(small, _cfg(size=2 * MiB, kinds=["sm_read"]))
    with pytest.raises(UsageError, match="multiple of 16"):
        nvlink.check_config(FakeGpuApi(), _cfg(size=1000))
    with pytest.raises(UsageError, match="unknown sm_copy"):
        nvlink.parse_kinds("sm_read,sm_copy")
    with pytest.raises(UsageError, match="GPU 5 does not exist"):
        nvlink.parse_gpus("0,5", 4)
    assert nvlink.parse_kinds("latency,sm_read,latency") == ["latency", "sm_read"]


def test_pairs_without_peer_access_are_reported_not_measured():
    api = FakeGpuApi({"ngpus": 3, "no_peer": [[0, 2]]})
    _gpus, cells = nvlink.run_matrix(api, _cfg(kinds=["sm_read", "latency"]))
    nopeer = {(c.kind, c.row, c.col) for c in cells if c.status == "no-peer"}
    assert nopeer == {("sm_read", 0, 2), ("sm_read", 2, 0), ("latency", 0, 2), ("latency", 2, 0)}
    assert not any(e[0] == 0 and e[3] == 2 or e[0] == 2 and e[3] == 0 for e in api.copies)
    assert (0, 2) not in api.enabled and (0, 1) in api.enabled and (1, 0) in api.enabled
    assert "no-peer" in nvlink.format_matrix(cells, "sm_read", [0, 1, 2])


def test_result_rows_roundtrip_through_the_results_file(tmp_path):
    from fabricbench.results.io import read_results, write_results

    api = FakeGpuApi({"ngpus": 2, "corrupt": [[0, 1]]})
    gpus, cells = nvlink.run_matrix(api, _cfg(kinds=["sm_read", "ce_bidir", "latency"]))
    rows = nvlink.cell_rows(cells, "rid", "hostA", {0: "FAKE GPU", 1: "FAKE GPU"}, fake=True)
    write_results(tmp_path, rows, {"command": "nvlink"})
    frame = read_results(tmp_path)
    assert set(frame["row_kind"]) == {"gpu_pair"}
    assert len(frame) == 6
    read01 = frame[(frame.kind == "sm_read") & (frame.matrix_row == 1) & (frame.matrix_col == 0)].iloc[0]
    assert (read01.src_gpu, read01.dst_gpu, read01.gpu) == (0, 1, 1)
    assert read01.status == "wrong-data" and read01.nwrong == 3
    assert read01.gbps == pytest.approx(400.0) and read01.size_bytes == MiB and read01.loops == 4
    lat = frame[(frame.kind == "latency") & (frame.matrix_row == 0)].iloc[0]
    assert lat.latency_us == pytest.approx(1.0) and pd.isna(lat.gbps)
    assert (lat.src_gpu, lat.dst_gpu, lat.gpu) == (1, 0, 0)  # GPU 0 reads GPU 1's memory
    bidir = frame[(frame.kind == "ce_bidir") & (frame.matrix_row == 0)].iloc[0]
    assert bidir.direction == "bidir" and bidir.gbps == pytest.approx(bidir.gbps_fwd + bidir.gbps_rev)
    assert set(frame.backend) == {"fake"}


def test_selftest_checks_and_reference_file_one_gpu(tmp_path):
    api = FakeGpuApi({"devices": [{"name": "NVIDIA H100 80GB HBM3", "free_bytes": 1 << 30}]})
    report = selftest.run_selftest(api, selftest.SelftestConfig(size=4 * MiB, loops=2, samples=2,
                                                                latency_lines=256, latency_hops=10))
    names = [c["name"] for c in report["checks"]]
    assert names == ["kernels-load", "pattern-fill", "verify-clean", "verify-poison", "planted-mismatch",
                     "gate-timeout", "local_sm", "local_memcpy", "sm-vs-memcpy", "bidir-sm-local", "bidir-ce-local",
                     "latency-local"]
    assert report["ok"] and not report["pairs"]["run"]
    assert "not a peer path" in report["pairs"]["why_not"]
    planted = next(c for c in report["checks"] if c["name"] == "planted-mismatch")
    assert planted["mismatches"] == 1 and planted["first_bad"] == planted["planted"]
    ratio = next(c for c in report["checks"] if c["name"] == "sm-vs-memcpy")
    assert ratio["ratio"] == pytest.approx(1500 / 1520) and ratio["goal_met"]
    path = selftest.write_reference(report, tmp_path)
    assert path.name == "FAKE_NVIDIA_H100_80GB_HBM3.json"
    assert json.loads(path.read_text())["fake"] is True


def test_selftest_flags_a_verify_that_misses_and_a_slow_sm_copy():
    class BlindVerify(FakeGpuApi):
        def verify(self, buf, seed):
            result = super().verify(buf, seed)
            return type(result)(0, None) if result.mismatches == 1 else result

    api = BlindVerify({"ngpus": 1, "gbps": {"local_sm": 900.0, "local_ce": 1500.0}})
    report = selftest.run_selftest(api, selftest.SelftestConfig(size=MiB, loops=1, samples=1,
                                                                latency_lines=64, latency_hops=10))
    by = {c["name"]: c for c in report["checks"]}
    assert not by["planted-mismatch"]["ok"] and not report["ok"]
    assert by["sm-vs-memcpy"]["warn"] and not by["sm-vs-memcpy"]["goal_met"]


def test_selftest_runs_pairs_with_two_gpus():
    api = FakeGpuApi({"ngpus": 2})
    report = selftest.run_selftest(api, selftest.SelftestConfig(size=MiB, loops=1, samples=1, pair_size=MiB,
                                                                pair_loops=1, latency_lines=64, latency_hops=10))
    assert report["pairs"]["run"] and report["ok"]
    assert report["pairs"]["matrices"]["sm_read"][0][1] == pytest.approx(400.0)
    assert "GPU(row) <- GPU(column)" in report["pairs"]["text"]


def test_fake_copy_refuses_sm_access_without_peer_enable():
    api = FakeGpuApi({"ngpus": 2})
    from fabricbench.gpu.api import Transfer

    a, b = api.alloc(0, MiB), api.alloc(1, MiB)
    with pytest.raises(RuntimeError, match="without peer access"):
        api.copy([Transfer(a, b, 0)], "sm", 1)
    api.enable_peer_access(0, 1)
    assert isinstance(api.copy([Transfer(a, b, 0)], "sm", 1), Timing)
