"""The results schema: one table, `results.parquet`, documented in docs/results-schema.md.

Rows of different kinds share one table; `row_kind` says which (`op`: one row per op × size for the whole run,
reduced across ranks; `rank`: the same measurement as one rank saw it; `pair`: one pairwise-sweep measurement;
`gpu_pair`/`nic`: kernel measurements). Columns that do not apply to a row are null. Columns are only ever added,
never renamed or removed; `schema_version` in run.json changes when one is added.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

SCHEMA_VERSION = 1

# name -> (pandas dtype, meaning). Order here is the column order in the file.
COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("string", "identifier of the run that produced the row"),
    "row_kind": ("string", "op | rank | pair | gpu_pair | nic"),
    "op": ("string", "operation (all_reduce, all_gather, ..., sendrecv, pingpong, p2p_uni, p2p_bi, or a kernel kind)"),
    "backend": ("string", "nccl | gloo | mpi | cuda-kernel"),
    "device": ("string", "cpu | cuda"),
    "nranks": ("Int64", "ranks taking part in the operation (the group size when split)"),
    "nnodes": ("Int64", "distinct hosts among those ranks"),
    "group": ("Int64", "communicator-split group (0 when not split)"),
    "size_bytes": ("Int64", "nccl-tests 'size': max(send bytes, recv bytes) per rank"),
    "count": ("Int64", "nccl-tests 'count': elements per operation argument"),
    "dtype": ("string", "element type, nccl-tests name (float, half, bfloat16, double, int8, uint8, int32, int64)"),
    "redop": ("string", "sum | prod | max | min | avg | none"),
    "root": ("Int64", "root rank of rooted ops, -1 otherwise"),
    "placement": ("string", "out-of-place | in-place"),
    "timing": ("string", "aggregate | per-iter"),
    "time_reduce": ("string", "how time_us was reduced across ranks: avg | max | min | rank0"),
    "iters": ("Int64", "timed iterations"),
    "warmup": ("Int64", "warm-up iterations"),
    "time_us": ("float64", "time per operation, microseconds, reduced across ranks by time_reduce"),
    "time_max_us": ("float64", "slowest rank's time per operation (completion time), microseconds"),
    "time_min_us": ("float64", "fastest rank's time per operation, microseconds"),
    "algbw_gbps": ("float64", "algorithm bandwidth, decimal GB/s (1e9 B/s), from time_us"),
    "busbw_gbps": ("float64", "bus bandwidth, decimal GB/s, algbw × the op's factor (nccl-tests)"),
    "nwrong": ("Int64", "wrong elements found by -c checks, summed over ranks (0 when not checked)"),
    "check_iters": ("Int64", "check iterations run (-c)"),
    "min_us": ("float64", "fastest iteration, microseconds (per-iter timing; aggregate: the time_us of the row)"),
    "p50_us": ("float64", "median iteration, microseconds"),
    "p99_us": ("float64", "99th-percentile iteration, microseconds"),
    "max_us": ("float64", "slowest iteration, microseconds"),
    "cv_pct": ("float64", "coefficient of variation of iteration times, percent"),
    "latency_us": ("float64", "one-way latency (ping-pong: half the round trip), microseconds"),
    "straggler_rank": ("Int64", "rank that arrived last most often at the pre-iteration barrier"),
    "straggler_host": ("string", "host of straggler_rank"),
    "straggler_late_us": ("float64", "median lateness of the straggler at the barrier, microseconds"),
    "host": ("string", "host of the rank (op rows: rank 0's host)"),
    "rank": ("Int64", "global rank (op rows: -1)"),
    "local_rank": ("Int64", "rank within its host"),
    "gpu": ("Int64", "CUDA device index the rank used"),
    "t_start_ns": ("Int64", "wall clock (time.time_ns) when the timed region started on this rank"),
    "t_end_ns": ("Int64", "wall clock when the timed region ended on this rank"),
    "algo": ("string", "collective algorithm reported by the library (NCCL INFO), when known"),
    "proto": ("string", "protocol reported by the library, when known"),
    "transport": ("string", "transport(s) to peers as reported by the library (P2P, SHM, NET/IB/GDRDMA, NET/Socket)"),
    "status": ("string", "ok | wrong-data | failed"),
    "error": ("string", "why a measurement failed (failed rows only)"),
    # Pairwise sweeps (row_kind == 'pair').
    "round": ("Int64", "sweep round"),
    "node_a": ("string", "first node of the pair (the sender for direction a->b)"),
    "node_b": ("string", "second node of the pair"),
    "direction": ("string", "a->b | b->a | bidir | pingpong"),
    # GPU kernel measurements (row_kind == 'gpu_pair' / 'nic').
    "kind": ("string", "kernel test kind (sm_read, sm_write, ce_copy, latency, ...)"),
    "src_gpu": ("Int64", "source GPU index"),
    "dst_gpu": ("Int64", "destination GPU index"),
    "nic": ("string", "HCA name (nic rows)"),
    "peer": ("string", "peer host (nic rows)"),
    "gbps": ("float64", "measured bandwidth, decimal GB/s (kernel rows)"),
}


def to_frame(records: Iterable[Mapping[str, object]] | pd.DataFrame) -> pd.DataFrame:
    """Records (dicts) -> a DataFrame with every schema column, typed, in schema order.

    Keys not in the schema are kept after the schema columns, so areas can add columns before they are
    promoted into COLUMNS.
    """
    frame = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    for name, (dtype, _meaning) in COLUMNS.items():
        if name not in frame.columns:
            frame[name] = pd.Series([None] * len(frame), dtype=dtype)
        else:
            frame[name] = frame[name].astype(dtype)
    extra = [c for c in frame.columns if c not in COLUMNS]
    return frame[list(COLUMNS) + extra]
