"""Per row: the algorithm, protocol and transport NCCL used, from NCCL's own reporting, filled in after the run.

Where it comes from, and what it costs:
- transport: NCCL's INIT log (`Channel 00/0 : 0[0] -> 1[1] via P2P/IPC`, `... via NET/IB/0/GDRDMA`), which
  fabricbench captures for every NCCL run (logs/nccl-rank<N>.log); written once at start-up, it costs nothing
  per call. It is the communicator's, so every row of the run gets the same value.
- algo/proto: NCCL's TUNING log (`AllReduce: 4194304 Bytes -> Algo RING proto SIMPLE ...`), one line per call.
  fabricbench does not switch it on (it would slow small sizes); when the user runs with
  NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,TUNING, each row gets the algorithm and protocol NCCL chose for
  its op and size. Otherwise the columns stay empty and `algo_note` says why.
"""

from __future__ import annotations

from collections.abc import Mapping

NCCL_OPS = {"all_reduce": "AllReduce", "all_gather": "AllGather", "reduce_scatter": "ReduceScatter",
            "broadcast": "Broadcast", "reduce": "Reduce"}
NO_TUNING = ("NCCL's per-call TUNING log is off (it would slow small sizes); run with NCCL_DEBUG=INFO "
             "NCCL_DEBUG_SUBSYS=INIT,TUNING to record algorithm/protocol per size")
P2P_NOTE = "point-to-point: NCCL picks no collective algorithm for send/recv"


def _candidates(row: Mapping, nranks: int) -> set[int]:
    """Byte counts NCCL may log for this row (its nBytes is per-call data; for gathers, the whole output)."""
    size, count = int(row["size_bytes"]), int(row["count"])
    item = size // count if count else 1
    return {size, count * item, count * item * nranks}


def fill(rows: list[dict], summary: Mapping | None) -> int:
    """Set algo/proto/transport/algo_note on NCCL op rows from rank 0's NCCL summary; returns rows with an
    algorithm filled in."""
    if not summary:
        return 0
    transport = summary.get("transport") or None
    tuning = summary.get("tuning") or []
    filled = 0
    for row in rows:
        if row.get("backend") not in ("nccl", "nccl-direct"):
            continue
        row["transport"] = transport
        nccl_op = NCCL_OPS.get(row.get("op"))
        if nccl_op is None:
            row["algo_note"] = P2P_NOTE
            continue
        if not tuning:
            row["algo_note"] = NO_TUNING
            continue
        sizes = _candidates(row, int(row.get("nranks") or 1))
        hits = [t for t in tuning if (t.get("op") in (nccl_op, None)) and t.get("bytes") in sizes]
        if not hits:
            row["algo_note"] = "no TUNING line for this op and size in NCCL's log"
            continue
        best = max(hits, key=lambda t: t.get("calls") or 0)
        row["algo"], row["proto"] = best.get("algo"), best.get("proto")
        row["algo_note"] = "from NCCL's TUNING log (rank 0)"
        filled += 1
    return filled
