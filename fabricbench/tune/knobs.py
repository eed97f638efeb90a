"""What can be tuned, per backend: one small declaration each.

NCCL facts (names, the versions that read them, what NCCL's env documentation files under "Debugging") come
from NCCL's sources (src/graph/*.cc, src/init.cc, src/transport/net_ib.cc: the NCCL_PARAM declarations, checked
at tags v2.12..v2.30) and its environment documentation; Open MPI facts from `ompi_info --param coll tuned
--level 9` (Open MPI 4.1.4) and ompi/mca/coll/tuned/coll_tuned_decision_dynamic.c (v4.1.x).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fabricbench.errors import UsageError


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """'2.21.5' / '2.21.5-1' / (2, 21, 5) -> (2, 21, 5); None when unknown."""
    if text is None:
        return None
    if isinstance(text, tuple):
        return tuple(text)  # type: ignore[return-value]
    parts = str(text).split("-")[0].split("+")[0].split(".")
    try:
        nums = [int(p) for p in parts[:3]]
    except ValueError:
        return None
    return tuple(nums + [0] * (3 - len(nums)))  # type: ignore[return-value]


@dataclass(frozen=True)
class Knob:
    """One NCCL environment variable the search may set."""

    name: str  # without the NCCL_ prefix
    values: tuple  # candidate values, ordered (resource knobs: ascending, so coordinate descent can walk them)
    first: tuple[int, int, int]  # first NCCL version that reads it
    last: tuple[int, int, int] | None = None  # last version that reads it (None: still read)
    debug_only: bool = True  # NCCL's docs list it under "Debugging": never kept in production scripts
    kind: str = "resource"  # resource (unimodal, coordinate descent) | system (a fabric choice, tried as is)
    note: str = ""
    default: object = None  # the library's default value (None: the library decides, e.g. channels by topology)

    @property
    def env(self) -> str:
        return "NCCL_" + self.name

    def read_by(self, version) -> bool:
        v = parse_version(version)
        if v is None:
            return True  # unknown version: assume current
        return v >= self.first and (self.last is None or v <= self.last)


# NCCL's collectives as the tuner plugin names them (plugins/tuner/example) and their ncclFunc_t numbers.
NCCL_COLL = {"broadcast": ("broadcast", 0), "reduce": ("reduce", 1), "all_gather": ("allgather", 2),
             "reduce_scatter": ("reducescatter", 3), "all_reduce": ("allreduce", 4)}
# Algorithm and protocol ids (src/include/plugin/nccl_tuner.h); PAT exists from 2.23.
NCCL_ALGOS = {"tree": 0, "ring": 1, "collnet_direct": 2, "collnet_chain": 3, "nvls": 4, "nvls_tree": 5, "pat": 6}
NCCL_PROTOS = {"ll": 0, "ll128": 1, "simple": 2}
# NCCL_ALGO spelling of each algorithm.
NCCL_ALGO_ENV = {"tree": "Tree", "ring": "Ring", "collnet_direct": "CollnetDirect", "collnet_chain": "CollnetChain",
                 "nvls": "NVLS", "nvls_tree": "NVLSTree", "pat": "PAT"}
NCCL_PROTO_ENV = {"ll": "LL", "ll128": "LL128", "simple": "Simple"}
# Algorithms worth trying per collective (NCCL rules the others out itself; collnet needs SHARP hardware).
NCCL_ALGOS_FOR = {
    "all_reduce": ("ring", "tree", "nvls", "nvls_tree", "collnet_direct", "collnet_chain"),
    "all_gather": ("ring", "nvls", "pat", "collnet_direct"),
    "reduce_scatter": ("ring", "nvls", "pat", "collnet_direct"),
    "broadcast": ("ring",),
    "reduce": ("ring",),
}

V = parse_version
# Channel counts: MIN/MAX_CTAS from 2.17 (MIN/MAX_NCHANNELS deprecated then, still read as a fallback).
NCCL_KNOBS: tuple[Knob, ...] = (
    Knob("MIN_NCHANNELS", (2, 4, 8, 16, 32), V("2.0"), None, note="deprecated in 2.17 for MIN_CTAS"),
    Knob("MAX_NCHANNELS", (2, 4, 8, 16, 32), V("2.0"), None, note="deprecated in 2.17 for MAX_CTAS"),
    Knob("MIN_CTAS", (2, 4, 8, 16, 32), V("2.17"), note="<= 64"),
    Knob("MAX_CTAS", (2, 4, 8, 16, 32, 64), V("2.17"), note="<= 64"),
    Knob("BUFFSIZE", (1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20), V("2.0"), note="default 4 MiB",
         default=4 << 20),
    Knob("NTHREADS", (64, 128, 256, 512), V("2.0"), note="64-512; default 512 on current GPUs", default=512),
    Knob("IB_QPS_PER_CONNECTION", (1, 2, 4, 8), V("2.0"), note="1-128, default 1", default=1),
    Knob("IB_SPLIT_DATA_ON_QPS", (0, 1), V("2.18"), kind="system"),
    Knob("P2P_NET_CHUNKSIZE", (128 << 10, 256 << 10, 512 << 10, 1 << 20), V("2.14"), note="default 128 KiB",
         default=128 << 10),
    Knob("NET_GDR_LEVEL", ("LOC", "PIX", "PXB", "PHB", "SYS"), V("2.0"), kind="system"),
    Knob("CROSS_NIC", (0, 1, 2), V("2.0"), debug_only=False, kind="system",
         note="system configuration in NCCL's docs (default 2)"),
    Knob("NVLS_ENABLE", (0, 1), V("2.17"), kind="system"),
)


def nccl_knobs(version=None) -> list[Knob]:
    """The knobs this NCCL version reads, with one pair of channel knobs: CTAS from 2.17, NCHANNELS before."""
    v = parse_version(version)
    new_channels = v is None or v >= V("2.17")
    old = {"MIN_NCHANNELS", "MAX_NCHANNELS"}
    return [k for k in NCCL_KNOBS if k.read_by(v) and not (new_channels and k.name in old)]


@dataclass(frozen=True)
class ResourceAxis:
    """One ordered resource knob the resource stage walks (coordinate descent, unimodal along `values`).

    `envs` are the variables set to the value (channels: MIN and MAX together, so NCCL uses exactly that many);
    `default` is where the walk starts and means "not set" (None: the library decides, the walk probes the
    middle first). `written`: where a confirmed value can go in production: 'tuner-config' (the channels column
    of nccl_tuner.conf), 'rules-file' (Open MPI's segment size), or '' (debug-only environment variable: measured
    and recorded, never written to nccl.env)."""

    name: str
    envs: tuple[str, ...]
    values: tuple
    default: object = None
    debug_only: bool = True
    written: str = ""
    knobs: tuple[str, ...] = ()

    def env_for(self, value) -> dict[str, str]:
        if value is None or value == self.default:
            return {}
        return {e: str(value) for e in self.envs}


# NCCL resource knobs in the order the stage walks them: channels first (they matter most and are the one
# resource a tuner config can set in production), then buffers, threads, QPs, the p2p chunk size.
_AXIS_OF = {"BUFFSIZE": "buffsize", "NTHREADS": "nthreads", "IB_QPS_PER_CONNECTION": "qps",
            "P2P_NET_CHUNKSIZE": "p2p_chunk"}
CHANNEL_VALUES = (2, 4, 8, 16, 32)


def nccl_resource_axes(version=None) -> list[ResourceAxis]:
    """The resource axes this NCCL version reads: channels through MIN/MAX_CTAS from 2.17 (MIN/MAX_NCHANNELS
    before), then every resource knob of NCCL_KNOBS this version reads."""
    readable = {k.name: k for k in nccl_knobs(version)}
    axes = []
    pair = ("MIN_CTAS", "MAX_CTAS") if "MAX_CTAS" in readable else ("MIN_NCHANNELS", "MAX_NCHANNELS")
    if all(p in readable for p in pair):
        axes.append(ResourceAxis("channels", tuple("NCCL_" + p for p in pair), CHANNEL_VALUES, None,
                                 all(readable[p].debug_only for p in pair), "tuner-config", pair))
    for name, axis in _AXIS_OF.items():
        knob = readable.get(name)
        if knob is not None and knob.kind == "resource":
            axes.append(ResourceAxis(axis, (knob.env,), knob.values, knob.default, knob.debug_only, "", (name,)))
    return axes


def nccl_algos(op: str, version=None) -> tuple[str, ...]:
    v = parse_version(version)
    algos = NCCL_ALGOS_FOR.get(op, ())
    return tuple(a for a in algos if a != "pat" or v is None or v >= V("2.23"))


@dataclass(frozen=True)
class OmpiColl:
    """One collective in Open MPI's coll tuned: its MCA parameter stem, its id in a rules file (COLLTYPE in
    ompi/mca/coll/base/coll_base_functions.h) and its algorithms (`ompi_info --param coll tuned --level 9`)."""

    stem: str
    rule_id: int
    algorithms: dict[int, str]
    segmented: frozenset[int] = field(default_factory=frozenset)  # algorithms that use the segment size

    def forced_env(self, algorithm: int, segsize: int = 0) -> dict[str, str]:
        env = {"OMPI_MCA_coll_tuned_use_dynamic_rules": "1",
               f"OMPI_MCA_coll_tuned_{self.stem}_algorithm": str(algorithm)}
        if segsize:
            env[f"OMPI_MCA_coll_tuned_{self.stem}_algorithm_segmentsize"] = str(segsize)
        return env


# fabricbench op -> coll tuned. The rules file's message size for each of these equals fabricbench's size_bytes
# (allreduce/bcast/reduce: count x type size; allgather/alltoall/reduce_scatter_block: the whole buffer).
OMPI_COLLS: dict[str, OmpiColl] = {
    "all_reduce": OmpiColl("allreduce", 2, {1: "basic_linear", 2: "nonoverlapping", 3: "recursive_doubling",
                                            4: "ring", 5: "segmented_ring", 6: "rabenseifner"}, frozenset({5})),
    "all_gather": OmpiColl("allgather", 0, {1: "linear", 2: "bruck", 3: "recursive_doubling", 4: "ring",
                                            5: "neighbor", 6: "two_proc"}),
    "all_to_all": OmpiColl("alltoall", 3, {1: "linear", 2: "pairwise", 3: "modified_bruck", 4: "linear_sync",
                                           5: "two_proc"}),
    "broadcast": OmpiColl("bcast", 7, {1: "basic_linear", 2: "chain", 3: "pipeline", 4: "split_binary_tree",
                                       5: "binary_tree", 6: "binomial", 7: "knomial", 8: "scatter_allgather",
                                       9: "scatter_allgather_ring"}, frozenset({2, 3, 4, 5, 6, 7})),
    "reduce": OmpiColl("reduce", 11, {1: "linear", 2: "chain", 3: "pipeline", 4: "binary", 5: "binomial",
                                      6: "in-order_binary", 7: "rabenseifner"}, frozenset({2, 3, 4, 5, 6})),
    # fabricbench's MPI backend calls MPI_Reduce_scatter_block.
    "reduce_scatter": OmpiColl("reduce_scatter_block", 13, {1: "basic_linear", 2: "recursive_doubling",
                                                            3: "recursive_halving", 4: "butterfly"}),
}
# Algorithms that only work on some communicator sizes (Open MPI falls back or errors otherwise).
TWO_PROC_ONLY = "two_proc"
# Segment sizes in bytes, ordered by size for the walk: 0 (Open MPI's default, no segmentation) is one segment
# as large as the message, so it comes last; the walk starts there and steps down.
OMPI_SEGSIZES = (8 << 10, 32 << 10, 128 << 10, 512 << 10, 0)
OMPI_SEGSIZE_AXIS = ResourceAxis("segsize", (), OMPI_SEGSIZES, 0, debug_only=False, written="rules-file")


def ompi_algorithms(op: str, nranks: int) -> dict[int, str]:
    coll = OMPI_COLLS.get(op)
    if coll is None:
        raise UsageError(f"Open MPI's coll tuned has no algorithm choice for '{op}' in fabricbench; tune one of "
                         f"{', '.join(OMPI_COLLS)}")
    return {a: n for a, n in coll.algorithms.items() if n != TWO_PROC_ONLY or nranks == 2}


def nothing_to_tune(backend: str) -> str | None:
    """Why a backend has no tuning space, or None."""
    if backend == "gloo":
        return ("gloo has nothing to tune: it exposes no algorithm, protocol or resource settings (its "
                "collectives are fixed ring/tree implementations); use --backend nccl on GPUs or --backend mpi")
    return None
