"""The GPU paths fixed before any GPU time is spent (issue 14), tested without a GPU: the CuPy glue against
the stand-in `cupy` of test_gpu_cupy_glue, the host logic against the fake GPU interface, and the commands as
a user runs them. Latency with L2 evicted and judged against a band; L2-resident copies labelled; nvbandwidth's
bidirectional method; limits and a blocking environment refused before anything runs; an error mid-matrix
keeps what was measured; CuPy without its CUDA components is one line with the fix; peer access enabled once
and CUDA's last error left clear."""

from __future__ import annotations

import pytest

from fabricbench.errors import UsageError
from fabricbench.gpu import cache, kernels, nvlink, selftest
from fabricbench.gpu.fake import FakeGpuApi
from fabricbench.results.io import read_results
from test_gpu_cli import SMALL, fake, gpu_cli
from test_gpu_cupy_glue import mock_api  # noqa: F401 - the fixture

MiB = 1 << 20
H100 = {"name": "FAKE H100", "compute_capability": "9.0", "l2_bytes": 50 * MiB, "total_bytes": 4 << 30,
        "free_bytes": 4 << 30}


# -- latency: the chain is built, then L2 evicted, then timed -------------------------------------------------
def test_cupy_chase_evicts_l2_on_every_gpu_involved_between_building_and_timing(mock_api):  # noqa: F811
    api, mock = mock_api(2, l2=1 << 16)
    api.enable_peer_access(0, 1)
    for exec_dev, mem_dev in ((0, 0), (0, 1)):
        mock.launch_args.clear()
        api.chase(exec_dev, mem_dev, 256, 100, 3, evict_bytes=cache.evict_bytes(1 << 16))
        names = [(n, dev) for n, dev, _v in mock.launch_args]
        init = names.index(("fb_chain_init", mem_dev))
        chases = [i for i, (n, _d) in enumerate(names) if n == "fb_chase"]
        assert len(chases) == 2 and init < chases[0]  # built, then the warm-up chase
        timed = chases[1]
        fills = [(i, dev, v[1] * 4) for i, (n, dev, v) in enumerate(mock.launch_args) if n == "fb_fill"]
        between = [(dev, nbytes) for i, dev, nbytes in fills if chases[0] < i < timed]
        assert {dev for dev, _b in between} == {exec_dev, mem_dev}
        assert all(nbytes >= 2 * (1 << 16) for _d, nbytes in between)  # >= 2 x L2 on each GPU
        assert names[timed - 1] == ("fb_gate", exec_dev)  # nothing but the gate between eviction and timing


def test_latency_without_eviction_would_read_l2_and_the_band_says_so():
    api = FakeGpuApi({"devices": [H100, H100]})
    cfg = nvlink.NvlinkConfig(kinds=["latency"], size=1 * MiB, samples=1)
    gpus, cells = nvlink.run_matrix(api, cfg)
    assert all(c.latency_ns == pytest.approx(1000.0) for c in cells)  # peer figure, not the L2 one
    assert all(ev >= 2 * H100["l2_bytes"] for *_x, ev in api.chases)
    assert all(c.note is None for c in cells)  # 1000 ns is within the Hopper peer band
    # the fake's model: a chain left in L2 reads as L2 latency, and the band labels it
    assert api.chase(0, 0, cfg.latency_lines, 10, 1, evict_bytes=0) == pytest.approx(250e-9)
    low = FakeGpuApi({"devices": [H100, H100], "latency_ns": {"peer": 250.0}})
    _g, cells = nvlink.run_matrix(low, cfg)
    assert all("below the Hopper peer memory band" in c.note for c in cells)
    rows = nvlink.cell_rows(cells, "r", "h", {}, fake=True)
    assert all("cache hits" in r["note"] for r in rows)
    text = nvlink.format_matrix(cells, "latency", gpus, True)
    assert "NOTE 250 ns is below" in text


def test_latency_bands_per_generation():
    assert cache.judge_latency(520.0, "9.0", peer=False)[0] is True
    assert cache.judge_latency(520.0, "8.0", peer=False)[0] is True
    ok, note = cache.judge_latency(230.0, "9.0", peer=False)
    assert ok is False and "cache hits" in note
    ok, note = cache.judge_latency(5000.0, "10.0", peer=False)
    assert ok is False and "slow" in note
    ok, note = cache.judge_latency(520.0, "7.0", peer=False)
    assert ok is None and "not judged" in note  # nothing to compare with: not called healthy
    assert cache.evict_bytes(50 * MiB, 60 * MiB) == 120 * MiB


def test_selftest_latency_warns_out_of_band_and_records_what_it_evicted():
    cfg = selftest.SelftestConfig(size=64 * MiB, loops=1, samples=1)
    good = selftest.check_latency(FakeGpuApi({"devices": [H100]}), 0, cfg)
    assert good.ok and not good.warn and good.values["evict_bytes"] == 100 * MiB
    assert good.values["band_ns"] == (350.0, 1000.0)
    l2ish = selftest.check_latency(FakeGpuApi({"devices": [H100], "latency_ns": {"local": 240.0}}), 0, cfg)
    assert l2ish.ok and l2ish.warn and "cache hits" in l2ish.detail
    assert l2ish.line().startswith("WARN")


# -- SM copy: sizes that fit in L2 are labelled ----------------------------------------------------------------
def test_copies_that_fit_in_l2_are_labelled_not_reported_as_memory():
    gpu = {**H100, "l2_bytes": 2 * MiB}  # a small L2 keeps the fake's copies small
    api = FakeGpuApi({"devices": [gpu, gpu]})
    _g, cells = nvlink.run_matrix(api, nvlink.NvlinkConfig(kinds=["sm_read"], size=2 * MiB, loops=1, samples=1))
    assert all(c.note and c.note.startswith("L2-resident") for c in cells)
    assert "NOTE L2-resident" in nvlink.format_matrix(cells, "sm_read", [0, 1])
    _g, cells = nvlink.run_matrix(api, nvlink.NvlinkConfig(kinds=["sm_read"], size=4 * MiB, loops=1, samples=1))
    assert all(c.note is None for c in cells)
    checks = selftest.check_local_copy(FakeGpuApi({"devices": [gpu]}), 0,
                                       selftest.SelftestConfig(size=1 * MiB, loops=1, samples=1))
    label = [c for c in checks if c.name == "local-copy-size"]
    assert label and label[0].warn and "not device memory" in label[0].detail


# -- refused before any matrix runs ------------------------------------------------------------------------------
def test_loops_limit_of_the_copy_engine_kinds_is_checked_before_anything_runs():
    api = FakeGpuApi({"ngpus": 2})
    with pytest.raises(UsageError, match="at most 256 copies"):
        nvlink.run_matrix(api, nvlink.NvlinkConfig(kinds=["sm_read", "ce_read"], size=1 * MiB, loops=300))
    assert api.copies == []  # not one sm_read cell ran before the refusal
    _g, cells = nvlink.run_matrix(api, nvlink.NvlinkConfig(kinds=["sm_read"], size=1 * MiB, loops=300, samples=1,
                                                           warmup=0))
    assert all(c.status == "ok" for c in cells)  # SM kinds loop inside one launch: no limit


def test_a_blocking_launch_environment_is_refused_up_front(tmp_path):
    out = tmp_path / "out"
    for args in (["nvlink", *SMALL, "--out", str(out)], ["selftest", "--gpu", "--size", "1M", "--out", str(out)]):
        proc = gpu_cli(*args, env={**fake(tmp_path, ngpus=2), "CUDA_LAUNCH_BLOCKING": "1"})
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "CUDA_LAUNCH_BLOCKING=1" in proc.stderr and "gate" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (out / "results.parquet").exists()


def test_what_counts_as_a_blocking_launch_environment():
    from fabricbench.gpu.api import check_launch_environment

    sanitizer = {"CUDA_INJECTION64_PATH": "/opt/cuda/compute-sanitizer/libsanitizer-collection.so"}
    for env in (sanitizer, {"CUDA_LAUNCH_BLOCKING": "1"}, {"LD_PRELOAD": "/x/libsanitizer-public.so"}):
        with pytest.raises(UsageError):
            check_launch_environment(env)
    check_launch_environment({"CUDA_LAUNCH_BLOCKING": "0", "CUDA_INJECTION64_PATH": "/opt/nsight/libToolsInjection64.so"})
    check_launch_environment({})


def test_an_error_mid_matrix_keeps_the_cells_measured_so_far(tmp_path):
    out = tmp_path / "out"
    # sm_read measures 2 cells (each: warm-up + 2 samples = 3 copies); the 7th copy fails in sm_write
    proc = gpu_cli("nvlink", "--kinds", "sm_read,sm_write,ce_read", *SMALL, "--warmup", "1", "--out", str(out),
                   env=fake(tmp_path, ngpus=2, fail_after_copies=6))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "ABORTED at sm_write GPU 0 x GPU 1" in proc.stdout + proc.stderr
    frame = read_results(out)
    ok = frame[frame.status == "ok"]
    assert sorted(ok.kind) == ["sm_read", "sm_read"] and (ok.gbps > 0).all()
    failed = frame[frame.status == "failed"]
    assert list(failed.kind) == ["sm_write"] and "cudaErrorIllegalAddress" in failed.error.iloc[0]
    assert "ce_read" not in set(frame.kind)


# -- the CuPy glue: peer access and CuPy without its CUDA components ----------------------------------------------
def test_peer_access_is_enabled_once_and_already_enabled_leaves_no_last_error(mock_api):  # noqa: F811
    api, mock = mock_api(2)
    api.enable_peer_access(0, 1)
    api.enable_peer_access(0, 1)
    assert mock.enable_calls == 1 and mock.last_error == 0
    # enabled by someone else in this process (torch, another CupyApi): the runtime's error is cleared
    from fabricbench.gpu.api import CupyApi

    other = CupyApi()
    other.enable_peer_access(0, 1)
    assert mock.enable_calls == 2 and mock.last_error == 0


def test_cupy_without_nvrtc_is_one_line_with_the_fix(mock_api, monkeypatch):  # noqa: F811
    api, mock = mock_api(1)

    def broken(code, options, backend):
        raise RuntimeError("CuPy failed to load libnvrtc.so.13: OSError: libnvrtc.so.13: cannot open shared "
                           "object file: No such file or directory")

    monkeypatch.setattr(mock, "RawModule", broken)
    with pytest.raises(UsageError) as err:
        api.load_kernels(0)
    text = str(err.value)
    assert "\n" not in text and "libnvrtc.so.13" in text and "cupy-cuda13x[ctk]" in text
    report = selftest.run_selftest(api, selftest.SelftestConfig(size=1 << 20, loops=1, samples=1))
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed[0]["name"] == "kernels-load" and "cupy-cuda13x[ctk]" in failed[0]["detail"]
    # a kernel's own compile error (CuPy's CompileException, not a RuntimeError) keeps its log, no install hint
    class CompileException(Exception):
        pass

    def bad_code(code, options, backend):
        raise CompileException("copy.cu(12): error: identifier \"undefined_thing\" is undefined")

    monkeypatch.setattr(mock, "RawModule", bad_code)
    monkeypatch.setattr(kernels, "_LOADED", {})
    with pytest.raises(CompileException, match="undefined_thing"):
        api.load_kernels(0)


def test_the_gpu_extra_depends_on_cupy_with_its_cuda_components():
    import tomllib
    from conftest import REPO

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [d.replace(" ", "") for d in extras["gpu"]] == ["cupy-cuda12x[ctk]>=14"]  # [ctk]: CuPy 14 and later
    assert [d.replace(" ", "") for d in extras["gpu-cuda13"]] == ["cupy-cuda13x[ctk]>=14"]
    from fabricbench.gpu.api import cupy_fix_hint

    assert "cupy-cuda12x[ctk]" in cupy_fix_hint(12080) and "fabricbench[gpu]" in cupy_fix_hint(12080)
    assert "cupy-cuda13x[ctk]" in cupy_fix_hint(13000) and "fabricbench[gpu-cuda13]" in cupy_fix_hint(13000)
