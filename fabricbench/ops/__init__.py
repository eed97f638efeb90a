"""The operation registry: one small module per operation; add a new one by adding a module and a line here."""

from __future__ import annotations

from fabricbench.errors import UsageError
from fabricbench.ops.all_gather import AllGather
from fabricbench.ops.all_reduce import AllReduce
from fabricbench.ops.all_to_all import AllToAll
from fabricbench.ops.base import Call, Layout, Op
from fabricbench.ops.broadcast import Broadcast
from fabricbench.ops.p2p_bi import P2PBi
from fabricbench.ops.p2p_uni import P2PUni
from fabricbench.ops.pingpong import PingPong
from fabricbench.ops.reduce import Reduce
from fabricbench.ops.reduce_scatter import ReduceScatter
from fabricbench.ops.sendrecv import SendRecv

OPS: dict[str, Op] = {op.name: op for op in (
    AllReduce(), AllGather(), ReduceScatter(), Broadcast(), Reduce(), AllToAll(), SendRecv(),
    PingPong(), P2PUni(), P2PBi(),
)}
COLLECTIVES = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all", "sendrecv"]
P2P = ["pingpong", "p2p_uni", "p2p_bi"]
_ALIASES = {"allreduce": "all_reduce", "allgather": "all_gather", "reducescatter": "reduce_scatter",
            "alltoall": "all_to_all", "bcast": "broadcast", "ping_pong": "pingpong"}

__all__ = ["COLLECTIVES", "Call", "Layout", "OPS", "Op", "P2P", "get_op"]


def get_op(name: str) -> Op:
    key = name.lower().replace("-", "_").removesuffix("_perf")
    key = _ALIASES.get(key, key)
    if key not in OPS:
        raise UsageError(f"unknown operation '{name}'; choose from {', '.join(OPS)} (or 'all', 'p2p')")
    return OPS[key]


def resolve_ops(names: list[str], nranks: int | None = None) -> list[Op]:
    """Expand 'all' (the collectives, plus P2P when there are exactly 2 ranks) and 'p2p'; keep order, no repeats."""
    if not names:
        names = ["all"]
    out: list[Op] = []
    for name in names:
        if name.lower() == "all":
            group = COLLECTIVES + (P2P if nranks == 2 else [])
        elif name.lower() == "p2p":
            group = P2P
        else:
            group = [get_op(name).name]
        for key in group:
            if OPS[key] not in out:
                out.append(OPS[key])
    return out
