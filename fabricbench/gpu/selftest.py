"""`fabricbench selftest --gpu`: prove on whatever GPUs are present that the kernels and the measuring method
work, and keep the numbers as a reference.

On every GPU: the kernels compile and load; the pattern fill matches the host's pattern; verify finds nothing
in a clean buffer, every word of a poisoned one, and exactly the one word planted wrong; an unreleased gate
gives up by itself (its spin is bounded); the SM copy kernel and cudaMemcpy device-to-device copy the same
buffers correctly, and the SM copy reaches >= 0.95 x cudaMemcpy (the goal); the pointer chase gives a
plausible ns per access. With 2 or more GPUs, the pair measurements of `fabricbench nvlink` run too; with one,
they are reported as not run: peer access to the same device is not a peer path, so one GPU proves the
kernels, the local copy, the gate, latency and the pattern checks, not NVLink.
"""

from __future__ import annotations

import platform
import re
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fabricbench.gpu import cache, nvlink
from fabricbench.gpu.api import CE_MAX_COPIES, GpuApi, Transfer, check_free_memory, check_launch_environment
from fabricbench.errors import UsageError
from fabricbench.gpu.pattern import pattern as host_pattern

SM_VS_MEMCPY_GOAL = 0.95
PATTERN_WORDS = (4 << 20) + 3  # not a multiple of the block size: the tails are checked too


@dataclass
class Check:
    name: str
    gpu: int | None
    ok: bool
    detail: str
    values: dict = field(default_factory=dict)
    warn: bool = False  # ok, but below a performance goal

    def line(self) -> str:
        tag = "PASS" if self.ok and not self.warn else ("WARN" if self.ok else "FAIL")
        where = f" GPU {self.gpu}" if self.gpu is not None else ""
        return f"{tag:4}  {self.name}{where}: {self.detail}"


@dataclass
class SelftestConfig:
    size: int = 1 << 30
    loops: int = 8
    samples: int = 5
    pair_size: int = 256 << 20
    pair_loops: int = 8
    latency_lines: int = 1 << 19
    latency_hops: int = 100_000


def model_file_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'NVIDIA_H100_80GB_HBM3.json'."""
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", name).strip("_") + ".json"


def check_pattern(api: GpuApi, d: int) -> list[Check]:
    out = []
    buf = api.alloc(d, PATTERN_WORDS * 4)
    try:
        seed = 0xC0FFEE + d
        api.fill(buf, seed)
        head = api.read_words(buf, 0, 4096)
        tail = api.read_words(buf, PATTERN_WORDS - 4096, 4096)
        same = bool((head == host_pattern(seed, 0, 4096)).all() and
                    (tail == host_pattern(seed, PATTERN_WORDS - 4096, 4096)).all())
        out.append(Check("pattern-fill", d, same, "GPU pattern equals the host's pattern (first and last 4096 words)"
                         if same else "GPU pattern differs from fabricbench/gpu/pattern.py"))
        clean = api.verify(buf, seed)
        out.append(Check("verify-clean", d, clean.mismatches == 0,
                         f"{clean.mismatches} mismatches in a correctly filled buffer of {PATTERN_WORDS} words"))
        api.fill(buf, seed, poison=True)
        poisoned = api.verify(buf, seed)
        out.append(Check("verify-poison", d, poisoned.mismatches == PATTERN_WORDS and poisoned.first_bad == 0,
                         f"{poisoned.mismatches} of {PATTERN_WORDS} poisoned words caught (first at {poisoned.first_bad})"))
        api.fill(buf, seed)
        planted = PATTERN_WORDS // 2 + 7
        api.corrupt(buf, planted)
        caught = api.verify(buf, seed)
        ok = caught.mismatches == 1 and caught.first_bad == planted
        out.append(Check("planted-mismatch", d, ok, f"one word flipped at {planted}: verify reports "
                         f"{caught.mismatches} mismatch(es), first at {caught.first_bad}",
                         {"planted": planted, "mismatches": caught.mismatches, "first_bad": caught.first_bad}))
    finally:
        api.free(buf)
    return out


def check_gate(api: GpuApi, d: int) -> Check:
    t0 = time.perf_counter()
    expired = api.gate_check(d, 0.05)
    wall = time.perf_counter() - t0
    return Check("gate-timeout", d, expired, f"an unreleased gate gave up by itself after {wall * 1e3:.0f} ms wall "
                 "(bounded spin)" if expired else "an unreleased gate did not report that it timed out",
                 {"wall_ms": wall * 1e3})


def check_local_copy(api: GpuApi, d: int, cfg: SelftestConfig) -> list[Check]:
    check_free_memory(api, d, 2 * cfg.size, f"the local copy test (--size {cfg.size} x 2 buffers)")
    src, dst = api.alloc(d, cfg.size), api.alloc(d, cfg.size)
    ncfg = nvlink.NvlinkConfig(kinds=[], size=cfg.size, loops=cfg.loops, samples=cfg.samples, warmup=1)
    try:
        t = [Transfer(src, dst, d)]
        sm = nvlink.measure_transfers(api, "local_sm", "sm", t, ncfg, (1, d), d, d)
        ce = nvlink.measure_transfers(api, "local_memcpy", "ce", t, ncfg, (2, d), d, d)
    finally:
        api.free(src)
        api.free(dst)
    out = []
    for cell, what in ((sm, "SM copy kernel"), (ce, "cudaMemcpy device-to-device")):
        ok = cell.status == "ok"
        detail = (f"{what}: {cell.gbps:.1f} GB/s of bytes copied ({2 * cell.gbps:.1f} counting read + write), "
                  f"{cell.size_bytes >> 20} MiB x {cell.loops} per sample, {cell.samples} samples, verified"
                  if ok else f"{what}: {cell.error}")
        out.append(Check(cell.kind, d, ok, detail, {"gbps": cell.gbps, "gbps_min": cell.gbps_min,
                                                    "gbps_max": cell.gbps_max, "time_us": cell.time_us,
                                                    "nwrong": cell.mismatches, "discarded": cell.discarded}))
    l2 = cache.l2_note(cfg.size, api.device_info(d).l2_bytes)
    if l2:  # both figures are L2's: say so, and do not judge the goal on them
        out.append(Check("local-copy-size", d, True, l2, {"l2_resident": True}, warn=True))
    if sm.gbps and ce.gbps:
        ratio = sm.gbps / ce.gbps
        met = ratio >= SM_VS_MEMCPY_GOAL
        out.append(Check("sm-vs-memcpy", d, True, f"SM copy / cudaMemcpy = {ratio:.3f} (goal >= "
                         f"{SM_VS_MEMCPY_GOAL}{'' if met else ': NOT MET'})", {"ratio": ratio, "goal_met": met},
                         warn=not met))
    return out


def check_local_bidir(api: GpuApi, d: int) -> list[Check]:
    """The split-warp bidirectional SM kernel and two gated copy-engine streams, on one GPU: each direction
    has its own buffers, sized so that the tails (elements left after the unrolled loop) are exercised. This
    proves the kernel's indexing and the shared gate, not a peer path."""
    nbytes = (8 << 20) + 16 * 13
    bufs = [api.alloc(d, nbytes) for _ in range(4)]
    ncfg = nvlink.NvlinkConfig(kinds=[], size=nbytes, loops=2, samples=2, warmup=0)
    out = []
    try:
        pair = [Transfer(bufs[0], bufs[1], d), Transfer(bufs[2], bufs[3], d)]
        for engine, label in (("sm", "SM split-warp kernel"), ("ce", "two copy-engine streams, one gate")):
            cell = nvlink.measure_transfers(api, f"local_bidir_{engine}", engine, pair, ncfg, (3, d), d, d)
            ok = cell.status == "ok"
            out.append(Check(f"bidir-{engine}-local", d, ok, f"{label}: both directions verified, "
                             f"{nbytes} bytes each (odd tail), {cell.gbps:.1f} GB/s total" if ok else
                             f"{label}: {cell.error}", {"gbps": cell.gbps, "nwrong": cell.mismatches}))
    finally:
        for b in bufs:
            api.free(b)
    return out


def check_latency(api: GpuApi, d: int, cfg: SelftestConfig) -> Check:
    """The chain is built and warmed up, then L2 is evicted (a scratch of 2 x L2 written), then timed; the
    result is compared with the band of this GPU's generation (fabricbench.gpu.cache): outside it is a WARN
    that says why (below: cache hits, not memory), outside 20 ns .. 100 us a FAIL (the method is broken)."""
    info = api.device_info(d)
    evict = cache.evict_bytes(info.l2_bytes)
    ns = api.chase(d, d, cfg.latency_lines, cfg.latency_hops, 7, evict_bytes=evict) * 1e9
    ok = 20 <= ns <= 100_000
    in_band, note = cache.judge_latency(ns, info.compute_capability, peer=False)
    detail = (f"pointer chase over {cfg.latency_lines * 128 >> 20} MiB of own memory after evicting L2 "
              f"({evict / 2**20:.1f} MiB written): {ns:.1f} ns per access; {note}")
    if not ok:
        detail += " (outside 20 ns .. 100 us: implausible)"
    return Check("latency-local", d, ok, detail, {"ns_per_access": ns, "in_band": in_band, "evict_bytes": evict,
                                                  "band_ns": cache.latency_band(info.compute_capability, False)},
                 warn=ok and in_band is False)


def run_selftest(api: GpuApi, cfg: SelftestConfig, progress=None) -> dict:
    say = progress or (lambda _line: None)
    check_launch_environment()
    if cfg.loops > CE_MAX_COPIES:
        raise UsageError(f"--loops {cfg.loops}: the cudaMemcpy comparison queues at most {CE_MAX_COPIES} copies "
                         f"behind one gate; give --loops {CE_MAX_COPIES} or less")
    n = api.device_count()
    devices = [api.device_info(i) for i in range(n)]
    checks: list[Check] = []

    def add(items):
        for c in items if isinstance(items, list) else [items]:
            checks.append(c)
            say(c.line())

    for d in range(n):
        try:
            loaded = api.load_kernels(d)
            add(Check("kernels-load", d, True, f"compiled and loaded {', '.join(loaded) or 'all kernels'}"))
        except Exception as err:  # a compile error is the finding: report it, go on with nothing else here
            add(Check("kernels-load", d, False, " ".join(str(err).split())[:500]))
            continue
        add(check_pattern(api, d))
        add(check_gate(api, d))
        add(check_local_copy(api, d, cfg))
        add(check_local_bidir(api, d))
        add(check_latency(api, d, cfg))
    pairs: dict = {"run": n >= 2}
    if n >= 2:
        ncfg = nvlink.NvlinkConfig(kinds=list(nvlink.DEFAULT_KINDS), size=cfg.pair_size, loops=cfg.pair_loops,
                                   samples=3, latency_lines=cfg.latency_lines, latency_hops=cfg.latency_hops)
        gpus, cells = nvlink.run_matrix(api, ncfg)
        bad = [c for c in cells if c.status == "wrong-data"]
        add(Check("pairs", None, not bad, f"{len(cells)} pair measurements on GPUs {gpus}: " +
                  ("every transfer verified" if not bad else "; ".join(c.error or "" for c in bad))))
        pairs["matrices"] = {k: [[None if c is None else (c.latency_ns if k == "latency" else c.gbps) for c in row]
                                 for row in nvlink.matrix(cells, k, gpus)] for k in ncfg.kinds}
        pairs["text"] = "\n\n".join(nvlink.format_matrix(cells, k, gpus, api.fake) for k in ncfg.kinds)
    else:
        pairs["why_not"] = ("one GPU: peer access to the same device is not a peer path, so NVLink, the read/write "
                            "over a peer and the bidirectional kernels were not exercised (their host logic is "
                            "tested without a GPU)")
        say(f"SKIP  pairs: {pairs['why_not']}")
    failed = [c for c in checks if not c.ok]
    return {
        "kind": "fabricbench-gpu-selftest",
        "fake": api.fake,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "versions": api.versions(),
        "devices": [d.__dict__ for d in devices],
        "config": cfg.__dict__,
        "conventions": {"bandwidth": nvlink.BYTE_CONVENTION, "latency": "ns per access, 128-byte stride"},
        "checks": [{"name": c.name, "gpu": c.gpu, "ok": c.ok, "warn": c.warn, "detail": c.detail, **c.values}
                   for c in checks],
        "pairs": pairs,
        "ok": not failed,
    }


def write_reference(report: dict, out_dir: str | Path) -> Path:
    from fabricbench.results.io import atomic_write_json

    name = report["devices"][0]["name"] if report["devices"] else "unknown-gpu"
    path = Path(out_dir) / (("FAKE_" if report.get("fake") else "") + model_file_name(name))
    atomic_write_json(path, report)
    return path
