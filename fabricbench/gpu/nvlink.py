"""`fabricbench nvlink`: GPU x GPU bandwidth and latency matrices with fabricbench's own kernels, every
transfer verified.

Cell (row r, column c) of every matrix is measured with the row GPU as the one that runs the copy (its SMs,
or the copy engine of its stream), as nvbandwidth does, and the labels are nvbandwidth's:
- read (`GPU(row) -> GPU(column)`): the row GPU pulls; data flows column -> row.
- write (`GPU(row) <- GPU(column)`): the row GPU pushes; data flows row -> column.
- bidirectional (`GPU(row) <-> GPU(column)`): both directions at once, both counted.
- latency: one thread of the row GPU chases pointers through the column GPU's memory, ns per access.
One byte convention for every row: GB/s = bytes copied (each byte once, not read + write) / seconds / 1e9.
A result row's src_gpu/dst_gpu say where the data came from and went to; `gpu` is the GPU that ran it.

Every sample: a fresh seed, the source filled with its pattern, the destination poisoned (the bitwise NOT of
the pattern), the gated copy, then the destination verified; any mismatch makes the cell 'wrong-data' and
the command exit 1, whatever its bandwidth.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from fabricbench.errors import UsageError
from fabricbench.gpu import cache
from fabricbench.gpu.api import CE_MAX_COPIES, Buffer, GpuApi, PeerAccessError, Transfer, check_launch_environment
from fabricbench.gpu.pattern import sample_seed

BYTE_CONVENTION = ("GB/s = bytes copied per second / 1e9 (decimal, each byte counted once, as nvbandwidth); "
                   "bidirectional: both directions' bytes counted")
BYTES_NOTE = "GB/s = 1e9 bytes copied per second, each byte counted once"


@dataclass(frozen=True)
class Kind:
    name: str
    engine: str  # sm | ce | latency
    bidir: bool
    label: str  # nvbandwidth's matrix label
    flow: str  # how data moves, in words
    what: str


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("sm_read", "sm", False, "GPU(row) -> GPU(column)", "data flows column -> row",
         "SM copy kernel run by the row GPU, reading the column GPU's memory (pull)"),
    Kind("sm_write", "sm", False, "GPU(row) <- GPU(column)", "data flows row -> column",
         "SM copy kernel run by the row GPU, writing the column GPU's memory (push)"),
    Kind("sm_bidir", "sm", True, "GPU(row) <-> GPU(column)", "data flows both ways at once",
         "SM copy kernels on both GPUs at once, each pulling into its own memory on its own stream and events "
         "(nvbandwidth's bidirectional read), gated by one flag"),
    Kind("ce_read", "ce", False, "GPU(row) -> GPU(column)", "data flows column -> row",
         "copy engine (cudaMemcpyPeerAsync) on a stream of the row GPU (pull)"),
    Kind("ce_write", "ce", False, "GPU(row) <- GPU(column)", "data flows row -> column",
         "copy engine (cudaMemcpyPeerAsync) on a stream of the row GPU (push)"),
    Kind("ce_bidir", "ce", True, "GPU(row) <-> GPU(column)", "data flows both ways at once",
         "copy engines of both GPUs at once, each pulling into its own memory, gated by one flag"),
    Kind("latency", "latency", False, "GPU(row) reads GPU(column)", "row's SM reads column's memory",
         "pointer chase, 128-byte stride, random order, one thread of the row GPU"),
)}
DEFAULT_KINDS = ("sm_read", "sm_write", "sm_bidir", "ce_read", "ce_write", "ce_bidir", "latency")


@dataclass
class NvlinkConfig:
    kinds: list[str]
    gpus: list[int] | None = None  # None: all
    size: int = 256 << 20  # bytes per direction per copy
    loops: int = 16  # copies per sample (inside one SM launch, or queued CE copies)
    samples: int = 3
    warmup: int = 1
    blocks_per_sm: int = 2
    seed: int = 0x5EED
    latency_lines: int = 1 << 19  # 64 MiB of 128-byte lines: well past any L2
    latency_hops: int = 100_000


@dataclass
class Cell:
    kind: str
    row: int
    col: int
    src_gpu: int
    dst_gpu: int
    exec_gpu: int
    size_bytes: int
    loops: int
    samples: int = 0
    gbps: float | None = None  # median over samples (total of both directions when bidirectional)
    gbps_min: float | None = None
    gbps_max: float | None = None
    dir_gbps: list[float] = field(default_factory=list)  # median per direction (bidirectional)
    time_us: float | None = None  # median time per copy
    latency_ns: float | None = None
    mismatches: int = 0
    first_bad: int | None = None
    discarded: int = 0  # samples whose gate expired
    status: str = "ok"  # ok | wrong-data | failed | no-peer
    error: str | None = None
    note: str | None = None  # a label on a measured value: L2-resident size, latency outside its band


def parse_kinds(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(DEFAULT_KINDS)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise UsageError(f"--kinds: unknown {', '.join(unknown)}; choose from {', '.join(KINDS)} or all")
    return list(dict.fromkeys(kinds))


def parse_gpus(text: str | None, count: int) -> list[int]:
    if text is None or text == "all":
        return list(range(count))
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--gpus '{text}': give GPU indices separated by commas, e.g. 0,1,2") from None
    bad = [g for g in gpus if not 0 <= g < count]
    if bad:
        raise UsageError(f"--gpus: GPU {bad[0]} does not exist; this machine has {count} GPU(s) (0..{count - 1})")
    if len(set(gpus)) != len(gpus):
        raise UsageError(f"--gpus '{text}' names a GPU twice")
    return gpus


def check_config(api: GpuApi, cfg: NvlinkConfig) -> list[int]:
    """Everything refused before a byte moves: pairs need 2+ GPUs, sizes, peer access, free memory."""
    count = api.device_count()
    gpus = parse_gpus(None if cfg.gpus is None else ",".join(map(str, cfg.gpus)), count)
    if len(gpus) < 2:
        name = api.device_info(gpus[0]).name if gpus else "no GPU"
        raise UsageError(f"fabricbench nvlink measures GPU pairs and needs 2 or more GPUs; "
                         f"{'this machine has' if cfg.gpus is None else '--gpus names'} {len(gpus)} ({name}). "
                         "One GPU: 'fabricbench selftest --gpu' checks the kernels, local copy and latency")
    for value, option in ((cfg.loops, "--loops"), (cfg.samples, "--samples"), (cfg.blocks_per_sm, "--blocks-per-sm")):
        if value < 1:
            raise UsageError(f"{option} must be at least 1, got {value}")
    if cfg.warmup < 0:
        raise UsageError(f"--warmup must be 0 or more, got {cfg.warmup}")
    if cfg.loops > CE_MAX_COPIES and any(KINDS[k].engine == "ce" for k in cfg.kinds):
        ce = ",".join(k for k in cfg.kinds if KINDS[k].engine == "ce")
        raise UsageError(f"--loops {cfg.loops}: the copy-engine kinds ({ce}) queue at most {CE_MAX_COPIES} copies "
                         f"behind one gate; give --loops {CE_MAX_COPIES} or less, or leave those kinds out")
    check_launch_environment()
    if cfg.size % 16:
        raise UsageError(f"--size {cfg.size}: the copy kernels move 16-byte elements; give a multiple of 16 bytes")
    pairs = [(a, b) for a in gpus for b in gpus if a < b]
    if not any(api.can_access_peer(a, b) and api.can_access_peer(b, a) for a, b in pairs):
        raise PeerAccessError(f"peer access is unavailable between every pair of GPUs {_list(gpus)} "
                              "(cudaDeviceCanAccessPeer says no): there is no NVLink or PCIe peer path to measure; "
                              "check nvidia-smi topo -m, and IOMMU/ACS settings for PCIe peers")
    if cfg.gpus is not None:
        for a, b in pairs:
            if not (api.can_access_peer(a, b) and api.can_access_peer(b, a)):
                raise PeerAccessError(f"peer access between GPU {a} and GPU {b} is unavailable (cudaDeviceCanAccess"
                                      "Peer says no); leave that pair out of --gpus")
    for g in gpus:
        info = api.device_info(g)
        # two buffers; the latency chain and the scratch that evicts it from L2 come and go in between
        need = 2 * cfg.size + (cfg.latency_lines * 128 + cache.evict_bytes(info.l2_bytes)
                               if "latency" in cfg.kinds else 0)
        if need > info.free_bytes:
            raise UsageError(f"--size {cfg.size} needs {need / 2**30:.2f} GiB on GPU {g} ({info.name}: 2 buffers"
                             f"{' + the latency chain' if 'latency' in cfg.kinds else ''}) but only "
                             f"{info.free_bytes / 2**30:.2f} GiB of {info.total_bytes / 2**30:.2f} GiB is free; "
                             "choose a smaller --size")
    return gpus


def _list(gpus: list[int]) -> str:
    return ",".join(map(str, gpus))


def transfers_for(kind: Kind, row: int, col: int, bufs: dict[int, list[Buffer]]) -> list[Transfer]:
    """The transfers of one cell. bufs[d] holds two buffers on GPU d."""
    a_r, b_r = bufs[row]
    a_c, b_c = bufs[col]
    pull = Transfer(src=a_c, dst=a_r, exec_device=row)  # column -> row, run by the row GPU
    push = Transfer(src=a_r, dst=a_c, exec_device=row)  # row -> column, run by the row GPU
    if kind.name.endswith("_read"):
        return [pull]
    if kind.name.endswith("_write"):
        return [push]
    if kind.name.endswith("_bidir"):
        # nvbandwidth's bidirectional read (SM and CE): each GPU pulls into its own memory, on its own
        # stream with its own events, so each direction has its own time.
        return [pull, Transfer(src=b_r, dst=b_c, exec_device=col)]
    raise ValueError(kind.name)


def measure_copy_cell(api: GpuApi, kind: Kind, row: int, col: int, bufs: dict[int, list[Buffer]],
                      cfg: NvlinkConfig, kind_index: int = 0) -> Cell:
    transfers = transfers_for(kind, row, col, bufs)
    cell = measure_transfers(api, kind.name, kind.engine, transfers, cfg, (kind_index, row, col), row, col)
    if cell.status == "ok":
        cell.note = cache.l2_note(cell.size_bytes, max(api.device_info(row).l2_bytes, api.device_info(col).l2_bytes))
    return cell


def measure_transfers(api: GpuApi, name: str, engine: str, transfers: list[Transfer], cfg: NvlinkConfig,
                      seed_parts: tuple[int, ...], row: int, col: int) -> Cell:
    """Warm-up, then `cfg.samples` samples of: fresh seed per transfer, source filled, destination poisoned,
    gated timed copy, destination verified. Rates are bytes copied per second per direction; a sample's total
    is their sum."""
    first = transfers[0]
    size = first.src.nbytes
    cell = Cell(name, row, col, first.src.device, first.dst.device, first.exec_device, size, cfg.loops)
    for _ in range(cfg.warmup):
        api.copy(transfers, engine, cfg.loops, cfg.blocks_per_sm)
    totals: list[float] = []
    per_dir: list[list[float]] = [[] for _ in transfers]
    times: list[float] = []
    bytes_per_dir = size * cfg.loops
    for s in range(cfg.samples):
        seeds = [sample_seed(cfg.seed, *seed_parts, s, k) for k in range(len(transfers))]
        for t, seed in zip(transfers, seeds):
            api.fill(t.src, seed)
            api.fill(t.dst, seed, poison=True)
        timing = api.copy(transfers, engine, cfg.loops, cfg.blocks_per_sm)
        for t, seed in zip(transfers, seeds):
            result = api.verify(t.dst, seed)
            if result.mismatches:
                cell.mismatches += result.mismatches
                if cell.first_bad is None:
                    cell.first_bad = result.first_bad
        if timing.gate_expired:
            cell.discarded += 1
            continue
        rates = [bytes_per_dir / sec / 1e9 for sec in timing.seconds]
        for k, r in enumerate(rates):
            per_dir[k].append(r)
        totals.append(sum(rates))  # bidirectional: the sum of both directions (nvbandwidth's total)
        times.append(max(timing.seconds) / cfg.loops)
    cell.samples = len(totals)
    if totals:
        cell.gbps = statistics.median(totals)
        cell.gbps_min, cell.gbps_max = min(totals), max(totals)
        cell.dir_gbps = [statistics.median(d) for d in per_dir]
        cell.time_us = statistics.median(times) * 1e6
    if cell.mismatches:
        cell.status = "wrong-data"
        where = f"byte {cell.first_bad * 4}" if cell.first_bad is not None else "an unknown place"
        cell.error = (f"{cell.mismatches} wrong 32-bit words after {name} GPU {cell.src_gpu} -> GPU "
                      f"{cell.dst_gpu} (first at {where})")
    elif not totals:
        cell.status = "failed"
        cell.error = f"every sample's gate expired ({cfg.samples} tries): the copies were not queued in time"
    return cell


def measure_latency_cell(api: GpuApi, row: int, col: int, cfg: NvlinkConfig) -> Cell:
    cell = Cell("latency", row, col, col, row, row, 128, cfg.latency_hops)
    r_info, c_info = api.device_info(row), api.device_info(col)
    evict = cache.evict_bytes(r_info.l2_bytes, c_info.l2_bytes)
    values = [api.chase(row, col, cfg.latency_lines, cfg.latency_hops, sample_seed(cfg.seed, 99, row, col, s),
                        evict_bytes=evict) * 1e9
              for s in range(cfg.samples)]
    cell.samples = len(values)
    cell.latency_ns = statistics.median(values)
    in_band, note = cache.judge_latency(cell.latency_ns, c_info.compute_capability, peer=row != col)
    cell.note = None if in_band else note
    return cell


ABORTED = "aborted the matrix"


def run_matrix(api: GpuApi, cfg: NvlinkConfig, progress=None) -> tuple[list[int], list[Cell]]:
    """Measure every requested kind for every ordered pair of the GPUs. Returns (gpus, cells).

    An error part-way (a CUDA error, a lost GPU) does not lose the matrix: the cell being measured gets status
    'failed' with the error, nothing after it runs, and the cells measured so far are returned."""
    gpus = check_config(api, cfg)
    cells: list[Cell] = []
    peer_ok: dict[tuple[int, int], bool] = {}
    for a in gpus:
        for b in gpus:
            if a != b:
                ok = api.can_access_peer(a, b) and api.can_access_peer(b, a)
                if ok:
                    try:
                        api.enable_peer_access(a, b)
                    except PeerAccessError:
                        ok = False
                peer_ok[(a, b)] = ok
    bufs: dict[int, list[Buffer]] = {}
    try:
        for g in gpus:
            bufs[g] = [api.alloc(g, cfg.size), api.alloc(g, cfg.size)]
        for kind_index, name in enumerate(cfg.kinds):
            kind = KINDS[name]
            for row in gpus:
                for col in gpus:
                    if row == col:
                        continue
                    if not (peer_ok[(row, col)] and peer_ok[(col, row)]):
                        cells.append(Cell(name, row, col, col, row, row, cfg.size, cfg.loops, status="no-peer",
                                          error=f"no peer access between GPU {row} and GPU {col}"))
                        continue
                    if progress:
                        progress(f"{name} GPU {row} x GPU {col}")
                    try:
                        if kind.engine == "latency":
                            cells.append(measure_latency_cell(api, row, col, cfg))
                        else:
                            cells.append(measure_copy_cell(api, kind, row, col, bufs, cfg, kind_index))
                    except Exception as err:  # noqa: BLE001 - keep what was measured; the error is the finding
                        text = " ".join(str(err).split())[:300] or type(err).__name__
                        cells.append(Cell(name, row, col, col, row, row, cfg.size, cfg.loops, status="failed",
                                          error=f"{ABORTED}: {text}"))
                        return gpus, cells
    finally:
        for pair in bufs.values():
            for b in pair:
                api.free(b)
    return gpus, cells


# -- presentation and result rows ------------------------------------------------------------------------------
def matrix(cells: list[Cell], kind: str, gpus: list[int]) -> list[list[Cell | None]]:
    """cells of one kind as a len(gpus) x len(gpus) grid (None on the diagonal and where nothing ran)."""
    pos = {g: i for i, g in enumerate(gpus)}
    grid: list[list[Cell | None]] = [[None] * len(gpus) for _ in gpus]
    for c in cells:
        if c.kind == kind and c.row in pos and c.col in pos:
            grid[pos[c.row]][pos[c.col]] = c
    return grid


def _cell_text(c: Cell | None) -> str:
    if c is None:
        return "N/A"
    if c.status == "wrong-data":
        return "WRONG"
    if c.status == "no-peer":
        return "no-peer"
    if c.status == "failed":
        return "FAIL"
    if c.kind == "latency":
        return f"{c.latency_ns:.1f}"
    return f"{c.gbps:.2f}"


def format_matrix(cells: list[Cell], kind: str, gpus: list[int], fake: bool = False) -> str:
    k = KINDS[kind]
    unit = "latency (ns per access)" if k.engine == "latency" else "bandwidth (GB/s)"
    head = f"{'FAKE GPU INTERFACE (testing only): ' if fake else ''}{kind}: {k.label} {unit}"
    lines = [head, f"# {k.what}; {k.flow}" + ("" if k.engine == "latency" else "; " + BYTES_NOTE)]
    lines.append("   " + "".join(f"{g:>10}" for g in gpus))
    for g, row in zip(gpus, matrix(cells, kind, gpus)):
        lines.append(f"{g:<3}" + "".join(f"{_cell_text(c):>10}" for c in row))
    values = [c.gbps for c in cells if c.kind == kind and c.gbps is not None]
    if values:
        lines.append(f"SUM {kind} {sum(values):.2f}")
    notes = sorted({c.note for c in cells if c.kind == kind and c.note})
    lines += [f"NOTE {n}" for n in notes]
    return "\n".join(lines)


def verify_summary(cells: list[Cell]) -> str:
    checked = [c for c in cells if c.kind != "latency" and c.status in ("ok", "wrong-data")]
    bad = [c for c in checked if c.status == "wrong-data"]
    aborted = [c for c in cells if c.error and c.error.startswith(ABORTED)]
    if aborted:
        c = aborted[0]
        return (f"ABORTED at {c.kind} GPU {c.row} x GPU {c.col}: {c.error.removeprefix(ABORTED + ': ')}; the "
                f"{len(cells) - 1} cell(s) measured before it are kept")
    if not bad:
        samples = sum(c.samples + c.discarded for c in checked)
        return f"verify: {len(checked)} pair measurement(s), {samples} sample(s), every destination word correct"
    return "verify: WRONG DATA in " + "; ".join(c.error or "" for c in bad)


def cell_rows(cells: list[Cell], run_id: str, host: str, names: dict[int, str], fake: bool = False) -> list[dict]:
    rows = []
    for c in cells:
        k = KINDS[c.kind]
        row = {
            "run_id": run_id, "row_kind": "gpu_pair", "op": c.kind, "kind": c.kind,
            "backend": "fake" if fake else ("cuda-memcpy" if k.engine == "ce" else "cuda-kernel"),
            "device": "cuda", "nranks": 1, "nnodes": 1, "size_bytes": c.size_bytes,
            "iters": c.samples, "warmup": None, "time_us": c.time_us, "algbw_gbps": c.gbps, "gbps": c.gbps,
            "nwrong": c.mismatches, "check_iters": c.samples + c.discarded,
            "latency_us": c.latency_ns / 1e3 if c.latency_ns is not None else None,
            "host": host, "gpu": c.exec_gpu, "src_gpu": c.src_gpu, "dst_gpu": c.dst_gpu,
            "direction": "bidir" if k.bidir else "uni", "status": "failed" if c.status == "no-peer" else c.status,
            "error": c.error,
            # extra columns (kept after the schema's)
            "engine": k.engine, "loops": c.loops, "matrix_row": c.row, "matrix_col": c.col,
            "gbps_min": c.gbps_min, "gbps_max": c.gbps_max,
            "gbps_fwd": c.dir_gbps[0] if k.bidir and c.dir_gbps else None,
            "gbps_rev": c.dir_gbps[1] if k.bidir and len(c.dir_gbps) > 1 else None,
            "samples_discarded": c.discarded, "gpu_name": names.get(c.exec_gpu), "note": c.note,
        }
        rows.append(row)
    return rows
