"""The kernels on a real GPU (CuPy). Marked `gpu`; skipped, saying why, where CuPy or a CUDA device is
missing. benchmarks/gpu_check.sh runs these on the GPU machine."""

from __future__ import annotations

import pytest

from fabricbench.gpu import nvlink, selftest
from fabricbench.gpu.api import Transfer
from fabricbench.gpu.pattern import pattern as host_pattern

pytestmark = pytest.mark.gpu
MiB = 1 << 20


def _why_no_gpu() -> str | None:
    try:
        import cupy
    except ImportError as err:
        return f"CuPy is not installed ({err})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # no driver / no device
        return f"no CUDA device ({' '.join(str(err).split())})"
    return None if n > 0 else "no CUDA device (count 0)"


WHY = _why_no_gpu()


@pytest.fixture(scope="module")
def api():
    if WHY:
        pytest.skip(WHY)
    from fabricbench.gpu.api import CupyApi

    a = CupyApi()
    yield a
    a.close()


def test_kernels_compile_and_load_through_cupy(api):
    names = api.load_kernels(0)
    assert set(names) >= {"fb_copy", "fb_copy_bidir", "fb_gate", "fb_chase", "fb_fill", "fb_verify"}


def test_pattern_fill_verify_poison_and_planted_mismatch(api):
    checks = selftest.check_pattern(api, 0)
    assert all(c.ok for c in checks), [c.line() for c in checks]
    buf = api.alloc(0, 4 * MiB)
    api.fill(buf, 99)
    assert (api.read_words(buf, 1000, 100) == host_pattern(99, 1000, 100)).all()
    api.free(buf)


def test_gate_is_bounded_and_released_copies_are_not_expired(api):
    assert api.gate_check(0, 0.02) is True
    src, dst = api.alloc(0, 16 * MiB), api.alloc(0, 16 * MiB)
    api.fill(src, 5)
    api.fill(dst, 5, poison=True)
    timing = api.copy([Transfer(src, dst, 0)], "sm", 2)
    assert not timing.gate_expired and timing.seconds[0] > 0
    assert api.verify(dst, 5).mismatches == 0


def test_local_copy_sm_and_memcpy_verified_and_compared(api):
    cfg = selftest.SelftestConfig(size=256 * MiB, loops=4, samples=3)
    checks = selftest.check_local_copy(api, 0, cfg)
    by = {c.name: c for c in checks}
    assert by["local_sm"].ok and by["local_memcpy"].ok, [c.line() for c in checks]
    print("\n" + "\n".join(c.line() for c in checks))
    assert by["sm-vs-memcpy"].values["ratio"] > 0.5  # the 0.95 goal is reported by the self-test


def test_bidirectional_kernel_and_streams_on_one_gpu(api):
    checks = selftest.check_local_bidir(api, 0)
    assert all(c.ok for c in checks), [c.line() for c in checks]


def test_latency_chase_is_plausible(api):
    check = selftest.check_latency(api, 0, selftest.SelftestConfig(latency_lines=1 << 16, latency_hops=20_000))
    assert check.ok, check.line()


def test_pairs_need_two_gpus(api):
    if api.device_count() < 2:
        pytest.skip(f"one GPU ({api.device_info(0).name}): the pair kernels need 2 or more GPUs")
    cfg = nvlink.NvlinkConfig(kinds=list(nvlink.DEFAULT_KINDS), gpus=[0, 1], size=32 * MiB, loops=2, samples=2,
                              latency_lines=1 << 14, latency_hops=5000)
    _gpus, cells = nvlink.run_matrix(api, cfg)
    assert all(c.status == "ok" for c in cells), [c.error for c in cells if c.status != "ok"]
