"""A fake `GpuApi` for tests: buffers are numpy arrays, copies really move the data (so verification is the
real host logic), and times come from a bandwidth table. Faults can be planted: a link that flips a word, a
copy that does nothing, pairs without peer access, little free memory, a gate that expires.

Selected by `FABRICBENCH_GPU_API=fake:<spec.json>` (or `fake` for 2 GPUs with defaults). Everything it
measures is labelled FAKE in the output and in run.json; it exists to test fabricbench, not GPUs.

Spec (JSON, every key optional): {"devices": [{"name", "sm_count", "total_bytes", "free_bytes", "pci_bus_id",
"compute_capability", "l2_bytes"}] or "ngpus": N, "no_peer": [[a, b], ...], "gbps": {"sm": .., "ce": .., "local_sm": ..,
"local_ce": ..}, "pair_gbps": {"a,b": ..}, "corrupt": [[src, dst], ...], "noop": [[src, dst], ...],
"latency_ns": {"local": .., "peer": .., "l2": ..}, "gate_expires": false, "fail_after_copies": N}

The latency model: a chase whose chain fits in L2 and was not evicted (evict_bytes < 2 x L2) returns the
L2 latency, as a real GPU would right after building the chain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fabricbench.errors import UsageError
from fabricbench.gpu import pattern as pat
from fabricbench.gpu.api import Buffer, DeviceInfo, GpuApi, PeerAccessError, Timing, Transfer, VerifyResult

DEFAULT_GBPS = {"sm": 400.0, "ce": 380.0, "local_sm": 1500.0, "local_ce": 1520.0}


class FakeGpuApi(GpuApi):
    name = "fake"
    fake = True

    def __init__(self, spec: dict | None = None) -> None:
        spec = dict(spec or {})
        devices = spec.get("devices")
        if devices is None:
            devices = [{} for _ in range(int(spec.get("ngpus", 2)))]
        self.devices = [DeviceInfo(i, d.get("name", "FAKE GPU"), int(d.get("sm_count", 4)),
                                   int(d.get("total_bytes", 2**30)), int(d.get("free_bytes", 2**30)),
                                   d.get("pci_bus_id", f"0000:{0x10 + i:02x}:00.0"),
                                   d.get("compute_capability", "9.0"), int(d.get("l2_bytes", 256 << 10)))
                        for i, d in enumerate(devices)]
        if not self.devices:
            raise UsageError("no CUDA GPU visible (fake interface with 0 devices)")
        self.no_peer = {frozenset(map(int, p)) for p in spec.get("no_peer", [])}
        self.gbps = {**DEFAULT_GBPS, **spec.get("gbps", {})}
        self.pair_gbps = {tuple(int(x) for x in k.split(",")): float(v) for k, v in spec.get("pair_gbps", {}).items()}
        self.corrupt_links = {tuple(map(int, p)) for p in spec.get("corrupt", [])}
        self.noop_links = {tuple(map(int, p)) for p in spec.get("noop", [])}
        self.latency_ns = {"local": 600.0, "peer": 1000.0, "l2": 250.0, **spec.get("latency_ns", {})}
        self.fail_after_copies = spec.get("fail_after_copies")  # raise on copy N+1 (an error mid-matrix)
        self.sticky = False
        self.chases: list[tuple[int, int, int, int]] = []  # (exec dev, memory dev, lines, evict bytes)
        self.gate_expires = bool(spec.get("gate_expires", False))
        self.enabled: set[tuple[int, int]] = set()
        self.copies: list[tuple[str, int, int, int, int]] = []  # (engine, src dev, dst dev, exec dev, bytes)
        self.allocated = [0] * len(self.devices)

    @classmethod
    def from_spec(cls, path: str | None) -> "FakeGpuApi":
        if not path:
            return cls()
        try:
            return cls(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as err:
            raise UsageError(f"fake GPU spec {path}: {err}") from None

    def device_count(self) -> int:
        return len(self.devices)

    def device_info(self, index: int) -> DeviceInfo:
        if self.sticky:
            raise RuntimeError("fake: cudaErrorIllegalAddress (sticky: the context is lost)")
        d = self.devices[index]
        return DeviceInfo(d.index, d.name, d.sm_count, d.total_bytes, max(0, d.free_bytes - self.allocated[index]),
                          d.pci_bus_id, d.compute_capability, d.l2_bytes)

    def can_access_peer(self, device: int, peer: int) -> bool:
        return device == peer or frozenset((device, peer)) not in self.no_peer

    def enable_peer_access(self, device: int, peer: int) -> None:
        if not self.can_access_peer(device, peer):
            raise PeerAccessError(f"GPU {device} cannot access GPU {peer}'s memory (no peer path)")
        self.enabled.add((device, peer))

    def alloc(self, device: int, nbytes: int) -> Buffer:
        if nbytes > self.device_info(device).free_bytes:
            raise UsageError(f"GPU {device} is out of memory allocating {nbytes} bytes")
        self.allocated[device] += nbytes
        arr = np.zeros(nbytes // 4, dtype=np.uint32)
        return Buffer(device, nbytes, int(arr.ctypes.data), arr)

    def free(self, buf: Buffer) -> None:
        if buf.handle is not None:
            self.allocated[buf.device] -= buf.nbytes
            buf.handle = None

    def fill(self, buf: Buffer, seed: int, poison: bool = False) -> None:
        values = pat.pattern(seed, 0, buf.words)
        buf.handle[:] = ~values if poison else values

    def verify(self, buf: Buffer, seed: int) -> VerifyResult:
        bad = np.flatnonzero(buf.handle != pat.pattern(seed, 0, buf.words))
        return VerifyResult(int(bad.size), int(bad[0]) if bad.size else None)

    def corrupt(self, buf: Buffer, word: int) -> None:
        buf.handle[word] = ~buf.handle[word]

    def read_words(self, buf: Buffer, start: int, count: int):
        return buf.handle[start:start + count].copy()

    def _rate(self, engine: str, src: int, dst: int) -> float:
        if (src, dst) in self.pair_gbps:
            return self.pair_gbps[(src, dst)]
        return self.gbps[("local_" + engine) if src == dst else engine]

    def copy(self, transfers: list[Transfer], engine: str, loops: int, blocks_per_sm: int = 2,
             gate_timeout_s: float = 10.0) -> Timing:
        if engine not in ("sm", "ce"):
            raise ValueError(f"unknown engine {engine!r}")
        if self.fail_after_copies is not None and len(self.copies) >= int(self.fail_after_copies):
            self.sticky = True  # as a real illegal address: every later CUDA call of the process fails
            raise RuntimeError("fake: cudaErrorIllegalAddress (planted failure after "
                               f"{self.fail_after_copies} copies)")
        seconds = []
        for t in transfers:
            if t.src.device != t.dst.device:
                other = t.src.device if t.exec_device == t.dst.device else t.dst.device
                if engine == "sm" and (t.exec_device, other) not in self.enabled:
                    raise RuntimeError(f"fake: SM copy on GPU {t.exec_device} touches GPU {other} without peer "
                                       "access (an illegal address on a real GPU)")
            link = (t.src.device, t.dst.device)
            if link not in self.noop_links:
                t.dst.handle[:] = t.src.handle
                if link in self.corrupt_links:
                    t.dst.handle[len(t.dst.handle) // 3] ^= np.uint32(0x10)
            self.copies.append((engine, t.src.device, t.dst.device, t.exec_device, t.src.nbytes * loops))
            seconds.append(t.src.nbytes * loops / (self._rate(engine, *link) * 1e9))
        if engine == "sm" and len(transfers) == 2 and transfers[0].exec_device == transfers[1].exec_device:
            seconds = [max(seconds)] * 2  # one launch: both directions end together
        return Timing(seconds, self.gate_expires)

    def gate_check(self, device: int, timeout_s: float) -> bool:
        return True

    def load_kernels(self, device: int) -> list[str]:
        return ["none (fake interface)"]

    def chase(self, exec_device: int, memory_device: int, lines: int, hops: int, seed: int,
              evict_bytes: int = 0) -> float:
        if exec_device != memory_device and (exec_device, memory_device) not in self.enabled:
            raise RuntimeError("fake: chase over a peer without peer access")
        self.chases.append((exec_device, memory_device, lines, evict_bytes))
        l2 = self.devices[memory_device].l2_bytes
        if lines * 32 <= l2 and evict_bytes < 2 * l2:  # one 32-byte sector per line stayed in L2
            return self.latency_ns["l2"] * 1e-9
        return self.latency_ns["local" if exec_device == memory_device else "peer"] * 1e-9

    def versions(self) -> dict:
        return {"fake": True}
