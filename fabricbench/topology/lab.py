"""The fabric lab's layout (docs/lab.md) as a topology: network namespaces lab1..labN as hosts, one Linux bridge per
leaf joined to a spine bridge by a veth uplink, every host veth shaped by tc to `--link-rate`; uplinks unshaped
(non-blocking: link rate x hosts on the leaf) unless `--uplink-rate` says otherwise."""

from __future__ import annotations

from fabricbench.errors import UsageError
from fabricbench.topology.load import parse_topology
from fabricbench.topology.rates import parse_rate
from fabricbench.topology.schema import Topology


UNSHAPED = "9 Gbit/s"  # an unshaped veth pair on 2 cores (REFERENCE.md lab facts: ~9 Gbit/s)


def lab_topology(leaves: int = 3, nodes_per_leaf: int = 2, link_rate: str = "400 Mbit/s",
                 uplink_rate: str | None = None, ranks_per_node: int = 1, host_memory: str = "5 GB/s") -> Topology:
    if leaves < 1 or nodes_per_leaf < 1:
        raise UsageError("the lab needs at least 1 leaf and 1 node per leaf")
    if leaves * nodes_per_leaf > 1000:
        raise UsageError("the lab is a few namespaces on one machine: at most 1000 nodes")
    shaped = str(link_rate).strip().lower() != "none"
    if not shaped:
        link_rate = UNSHAPED
    for option, value in (("--link-rate", link_rate), ("--uplink-rate", uplink_rate)):
        if value is not None:
            try:
                parse_rate(value)
            except ValueError as err:
                raise UsageError(f"{option}: {err}") from None
    nodes = leaves * nodes_per_leaf
    data = {
        "name": "fabric-lab",
        "description": (f"fabric lab: {nodes} network namespaces on {leaves} leaf bridges ({nodes_per_leaf} each) "
                        f"joined to one spine bridge by veth uplinks; host veths "
                        + (f"shaped to {link_rate}" if shaped else f"unshaped (~{UNSHAPED} measured)")
                        + f", uplinks {uplink_rate or 'unshaped (non-blocking)'}"),
        "sources": ["fabricbench lab (docs/lab.md): namespaces lab1..labN, leaf bridges, spine bridge, tc-shaped veths",
                    "REFERENCE.md lab facts: unshaped veth ~9 Gbit/s"],
        "node_types": {"lab-ns": {
            "description": "a network namespace running CPU ranks (gloo over TCP)",
            "gpus": {"count": 0}, "host_memory": host_memory, "ranks_per_node": ranks_per_node,
            "nics": [{"name": "veth0", "rate": link_rate, "link_layer": "emulated"}]}},
        "fabric": {"kind": "leaf_spine", "node_type": "lab-ns", "node_names": f"lab[1-{nodes}]",
                   "link_layer": "emulated", "leaves": leaves, "nodes_per_leaf": nodes_per_leaf, "spines": 1,
                   # one uplink veth per leaf: unshaped it carries all its hosts (1:1); a given
                   # --uplink-rate becomes the leaf's oversubscription, so --link-rate later scales both
                   "oversubscription": round(nodes_per_leaf * parse_rate(link_rate) / parse_rate(uplink_rate), 6)
                   if uplink_rate else 1.0},
    }
    return parse_topology(data, "fabric lab")
