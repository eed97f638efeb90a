"""The CuPy implementation of the GPU interface (`CupyApi`), run against a stand-in `cupy` module: memory is
host memory at real addresses, streams queue their work until synchronized (so the gate really holds the
copies until the host releases its flag), and the kernels are numpy versions of cuda_kernels/*.cu that check
the argument types CuPy would pass (pointers and 64-bit sizes as numpy.uint64, ...). This tests the glue
code (which kernel with which arguments on which stream, the gate protocol, events, peer access) without a
GPU; the kernels themselves are checked by the compile tests and, on a GPU, by test_gpu_device."""

from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest

from fabricbench.gpu import kernels, nvlink, selftest
from fabricbench.gpu import pattern as pat

SIGNATURES = {  # kernel -> argument kinds, in order ("a": a device array, "p": a raw pointer as numpy.uint64)
    "fb_copy": ("p", "p", "u64", "u32"),
    "fb_copy_bidir": ("p", "p", "p", "p", "u64", "u32"),
    "fb_gate": ("p", "p", "u64"),
    "fb_chain_init": ("a", "a", "u64"),
    "fb_chase": ("p", "u64", "a"),
    "fb_fill": ("a", "u64", "u64", "u32"),
    "fb_verify": ("a", "u64", "u64", "a"),
    "fb_corrupt": ("a", "u64"),
}
GBPS = 200e9  # the stand-in's copy speed, bytes per virtual second
HOP_S = 500e-9


def _words(ptr: int, n: int, ctype=ctypes.c_uint32) -> np.ndarray:
    return np.ctypeslib.as_array((ctype * n).from_address(ptr))


class MockCupy:
    """The part of CuPy that CupyApi uses."""

    def __init__(self, ngpus: int, peer: bool = True, l2: int = 0):
        self.ngpus, self.peer, self.l2 = ngpus, peer, l2
        self.last_error = 0  # the runtime's per-thread last error (cudaGetLastError returns and clears it)
        self.enable_calls = 0
        self.keep: list = []
        self.clock = 0.0
        self.current_device = 0
        self.current_stream = None
        self.enabled: set[tuple[int, int]] = set()
        self.compiled: list[tuple[str, tuple, int]] = []
        self.launches: list[tuple[str, int, object]] = []
        self.launch_args: list[tuple[str, int, list[int]]] = []
        mock = self
        self.uint32, self.uint64 = np.uint32, np.uint64
        self.__version__ = "mock"

        class Error(Exception):
            pass

        class Runtime:
            CUDARuntimeError = Error

            @staticmethod
            def getDeviceCount():
                return mock.ngpus

            @staticmethod
            def getDeviceProperties(i):
                return {"name": b"MOCK GPU", "multiProcessorCount": 2, "totalGlobalMem": 1 << 32, "pciBusID": 0x10 + i,
                        "pciDeviceID": 0, "pciDomainID": 0, "major": 9, "minor": 0, "l2CacheSize": mock.l2}

            @staticmethod
            def deviceGetPCIBusId(i):
                return f"0000:{0x10 + i:02X}:00.0"

            @staticmethod
            def memGetInfo():
                return (1 << 31, 1 << 32)

            @staticmethod
            def deviceCanAccessPeer(a, b):
                return 1 if mock.peer else 0

            @staticmethod
            def deviceEnablePeerAccess(peer):
                key = (mock.current_device, peer)
                mock.enable_calls += 1
                if key in mock.enabled:
                    mock.last_error = 704  # as the runtime: the failure stays as the last error
                    raise Error("cudaErrorPeerAccessAlreadyEnabled")
                mock.enabled.add(key)

            @staticmethod
            def getLastError():
                err, mock.last_error = mock.last_error, 0
                return err

            @staticmethod
            def hostAlloc(size, flags):
                assert flags & 2, "the gate flag must be host-mapped"
                buf = (ctypes.c_char * size)()
                mock.keep.append(buf)
                return ctypes.addressof(buf)

            @staticmethod
            def freeHost(ptr):
                pass

            @staticmethod
            def pointerGetAttributes(ptr):
                return types.SimpleNamespace(devicePointer=ptr)

            @staticmethod
            def memcpyAsync(dst, src, size, kind, stream):
                assert kind == 3
                mock._stream_by_ptr(stream).enqueue(lambda: mock._move(dst, src, size))

            @staticmethod
            def memcpyPeerAsync(dst, dst_dev, src, src_dev, size, stream):
                assert dst_dev != src_dev
                mock._stream_by_ptr(stream).enqueue(lambda: mock._move(dst, src, size))

            @staticmethod
            def runtimeGetVersion():
                return 13000

            @staticmethod
            def driverGetVersion():
                return 13000

        class Device:
            def __init__(self, i):
                self.i = i

            def __enter__(self):
                self.prev, mock.current_device = mock.current_device, self.i
                return self

            def __exit__(self, *exc):
                mock.current_device = self.prev

            def synchronize(self):
                for s in mock.streams:
                    s.synchronize()

        class Stream:
            def __init__(self, non_blocking=False):
                self.device = mock.current_device
                self.queue: list = []
                self.ptr = id(self)
                mock.streams.append(self)

            def enqueue(self, fn):
                assert mock.current_device == self.device, "work queued on a stream of another device"
                self.queue.append(fn)

            def synchronize(self):
                while self.queue:
                    self.queue.pop(0)()

            def __enter__(self):
                self.prev, mock.current_stream = mock.current_stream, self
                return self

            def __exit__(self, *exc):
                mock.current_stream = self.prev

        class Event:
            def __init__(self):
                self.t = None
                self.stream = None

            def record(self, stream):
                self.stream = stream
                stream.enqueue(lambda: setattr(self, "t", mock.clock))

            def synchronize(self):
                self.stream.synchronize()

        class Pool:
            def free_bytes(self):
                return 0

        class RawModule:
            def __init__(self, code, options, backend):
                mock.compiled.append((code, options, mock.current_device))

            def get_function(self, name):
                return Kernel(name)

        class Kernel:
            def __init__(self, name):
                self.name = name

            def __call__(self, grid, block, args):
                kinds = SIGNATURES[self.name]
                assert len(args) == len(kinds), self.name
                for kind, arg in zip(kinds, args):
                    if kind == "a":
                        assert isinstance(arg, Array), (self.name, arg)
                    elif kind in ("p", "u64"):
                        assert type(arg) is np.uint64, (self.name, type(arg))
                    else:
                        assert type(arg) is np.uint32, (self.name, type(arg))
                assert grid[0] >= 1
                if self.name in ("fb_verify", "fb_copy"):  # full warps: fb_verify reduces with warp shuffles
                    assert block[0] % 32 == 0
                if self.name == "fb_copy_bidir":
                    assert block[0] % 64 == 0
                vals = [a.data.ptr if isinstance(a, Array) else int(a) for a in args]
                mock.launches.append((self.name, mock.current_device, mock.current_stream))
                mock.launch_args.append((self.name, mock.current_device, vals))
                work = lambda: mock.run_kernel(self.name, vals, args)  # noqa: E731
                if mock.current_stream is None:
                    work()  # the default stream: run now
                else:
                    mock.current_stream.enqueue(work)

        class Array:
            def __init__(self, host: np.ndarray):
                self.host = host
                self.data = types.SimpleNamespace(ptr=host.ctypes.data)

            def get(self):
                return self.host.copy()

            def __getitem__(self, sl):
                return Array(self.host[sl])

        self.streams: list = []
        self.Array = Array
        self.cuda = types.SimpleNamespace(runtime=Runtime, Device=Device, Stream=Stream, Event=Event,
                                          get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
                                          memory=types.SimpleNamespace(OutOfMemoryError=MemoryError))
        self.RawModule = RawModule
        self.get_default_memory_pool = lambda: Pool()

    # arrays
    def _new(self, host):
        arr = self.Array(host)
        self.keep.append(host)
        return arr

    def empty(self, n, dtype):
        return self._new(np.zeros(n, dtype=dtype))

    def zeros(self, n, dtype):
        return self._new(np.zeros(n, dtype=dtype))

    def array(self, values, dtype):
        return self._new(np.array(values, dtype=dtype))

    def asarray(self, host):
        return self._new(np.array(host))

    def _stream_by_ptr(self, ptr):
        return next(s for s in self.streams if s.ptr == ptr)

    def _move(self, dst, src, size):
        ctypes.memmove(dst, src, size)
        self.clock += size / GBPS

    def run_kernel(self, name, v, args):
        if name == "fb_fill":
            buf, words, seed, invert = v
            values = pat.pattern(seed, 0, words)
            _words(buf, words)[:] = ~values if invert else values
        elif name == "fb_verify":
            buf, words, seed, result = v
            bad = np.flatnonzero(_words(buf, words) != pat.pattern(seed, 0, words))
            out = _words(result, 2, ctypes.c_uint64)
            out[0] += bad.size
            if bad.size:
                out[1] = min(int(out[1]), int(bad[0]))
        elif name == "fb_corrupt":
            buf, index = v
            w = _words(buf, index + 1)
            w[index] = ~w[index]
        elif name == "fb_copy":
            dst, src, n16, loops = v
            for _ in range(loops):
                self._move(dst, src, n16 * 16)
        elif name == "fb_copy_bidir":
            d0, s0, d1, s1, n16, loops = v
            for _ in range(loops):
                self._move(d0, s0, n16 * 16)
                self._move(d1, s1, n16 * 16)
        elif name == "fb_gate":
            flag, expired, timeout_ns = v
            assert timeout_ns > 0
            if _words(flag, 1, ctypes.c_int)[0] == 0:  # never released by the time it ran: it times out
                _words(expired, 1, ctypes.c_int)[0] = 1
        elif name == "fb_chain_init":
            chain, nxt, lines = v
            c = _words(chain, lines * 16, ctypes.c_uint64)
            c[::16] = np.uint64(chain) + _words(nxt, lines).astype(np.uint64) * np.uint64(128)
        elif name == "fb_chase":
            p, hops, end = v
            for _ in range(min(hops, 10_000)):
                p = int(_words(p, 1, ctypes.c_uint64)[0])
            self.clock += hops * HOP_S
            _words(end, 1, ctypes.c_uint64)[0] = p
        else:  # pragma: no cover
            raise AssertionError(name)


@pytest.fixture
def mock_api(monkeypatch):
    def make(ngpus: int = 1, peer: bool = True, l2: int = 0):
        mock = MockCupy(ngpus, peer, l2)
        monkeypatch.setitem(sys.modules, "cupy", mock)
        monkeypatch.setattr(kernels, "_LOADED", {})
        from fabricbench.gpu.api import CupyApi

        return CupyApi(), mock

    return make


def test_kernels_load_once_per_module_and_device_with_the_nvrtc_options(mock_api):
    api, mock = mock_api(2)
    names = api.load_kernels(0) + api.load_kernels(1) + api.load_kernels(0)
    assert len(mock.compiled) == 2 * len(kernels.MODULES)  # cached: the third call compiled nothing
    assert all(opts == kernels.NVRTC_OPTIONS for _code, opts, _dev in mock.compiled)
    assert {dev for *_x, dev in mock.compiled} == {0, 1}
    assert set(names) == {n for _f, ns in kernels.MODULES.values() for n in ns}


def test_selftest_on_one_gpu_through_the_cupy_glue(mock_api):
    api, mock = mock_api(1)
    report = selftest.run_selftest(api, selftest.SelftestConfig(size=1 << 20, loops=2, samples=2,
                                                                latency_lines=512, latency_hops=2000))
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed, failed
    by = {c["name"]: c for c in report["checks"]}
    assert by["local_sm"]["gbps"] == pytest.approx(GBPS / 1e9)  # bytes copied once per virtual second
    assert by["latency-local"]["ns_per_access"] == pytest.approx(HOP_S * 1e9)
    assert by["gate-timeout"]["ok"]
    # the timed copies ran on non-default streams, each behind a gate on the same stream
    timed = [(name, stream) for name, _dev, stream in mock.launches if name in ("fb_copy", "fb_copy_bidir")]
    assert timed and all(stream is not None for _n, stream in timed)
    for name, dev, stream in mock.launches:
        if name == "fb_copy":
            gates = [ln for ln in mock.launches if ln[0] == "fb_gate" and ln[2] is stream]
            assert gates


def test_pairs_through_the_cupy_glue_enable_peer_access_and_verify(mock_api):
    api, mock = mock_api(2)
    cfg = nvlink.NvlinkConfig(kinds=list(nvlink.DEFAULT_KINDS), size=1 << 16, loops=2, samples=2,
                              latency_lines=256, latency_hops=100)
    _gpus, cells = nvlink.run_matrix(api, cfg)
    assert all(c.status == "ok" for c in cells), [c.error for c in cells if c.status != "ok"]
    assert {(0, 1), (1, 0)} <= mock.enabled
    read = next(c for c in cells if c.kind == "ce_read" and c.row == 0)
    assert read.gbps == pytest.approx(GBPS / 1e9)
    bidir = next(c for c in cells if c.kind == "sm_bidir" and c.row == 1)
    # nvbandwidth's bidirectional read: each GPU pulls on its own stream with its own events, each direction
    # timed on its own (the stand-in runs one stream after the other, at full speed each), the total their sum
    assert bidir.dir_gbps == pytest.approx([GBPS / 1e9, GBPS / 1e9])
    assert bidir.gbps == pytest.approx(2 * GBPS / 1e9)
    copies = [(dev, stream) for name, dev, stream in mock.launches if name == "fb_copy"]
    assert {dev for dev, _s in copies} == {0, 1}
    assert not [ln for ln in mock.launches if ln[0] == "fb_copy_bidir"]  # no split-warp launch between GPUs
    ce_bidir = [ln for ln in mock.launches if ln[0] == "fb_gate"]
    assert {dev for _n, dev, _s in ce_bidir} == {0, 1}


def test_no_peer_access_and_no_device_are_refused(mock_api):
    from fabricbench.errors import UsageError
    from fabricbench.gpu.api import PeerAccessError

    api, _mock = mock_api(2, peer=False)
    with pytest.raises(PeerAccessError):
        api.enable_peer_access(0, 1)
    with pytest.raises(PeerAccessError):
        nvlink.check_config(api, nvlink.NvlinkConfig(kinds=["sm_read"], size=1 << 16))
    with pytest.raises(UsageError, match="no CUDA GPU visible"):
        mock_api(0)
