"""The lab's layout, computed before anything is created: names, addresses, interfaces, leaves.

Lab number k (0..MAX_LABS-1, the first one free on this machine) owns:
- the subnet 10.213.k.0/24: nodes .1 .. .N, the controller .253, the host's own address on the spine .254;
- network namespaces `fbl<k>-<node>` and `fbl<k>-ctl`;
- host links named `fbl<k>` + one letter: `fbl<k>s` spine bridge, `fbl<k>l<j>` leaf bridges, `fbl<k>u<j>l` /
  `fbl<k>u<j>s` the leaf/spine ends of leaf j's uplink, `fbl<k>n<i>` node i's switch port, `fbl<k>c` the
  controller's port on the spine.
Inside every namespace the lab's interface is `eth0`. Nodes are spread over the leaves in contiguous blocks
(leaf1 gets lab1..labA, leaf2 the next block, ...), sizes differing by at most one.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field

from fabricbench.errors import UsageError

SUBNET_BASE = "10.213"  # private, assigned only inside the lab's namespaces and on its spine bridge
MAX_LABS = 64
MAX_NODES = 250
CTL_HOST_OCTET = 253
HOST_OCTET = 254
CTL_NAME = "labctl"
SLURMCTLD_PORT = 6817  # each daemon has its own network namespace: the standard ports never collide
SLURMD_PORT = 6818


@dataclass
class Node:
    name: str
    index: int
    addr: str
    leaf: str
    netns: str
    host_if: str  # the switch-side end of the node's veth (its peer is eth0 inside the namespace)


@dataclass
class Leaf:
    name: str
    index: int
    bridge: str
    uplink_leaf_if: str  # uplink end plugged into the leaf bridge (its egress carries leaf -> spine traffic)
    uplink_spine_if: str  # uplink end plugged into the spine bridge (its egress carries spine -> leaf traffic)
    nodes: list[str] = field(default_factory=list)
    uplink_rate_bps: int | None = None  # tc rate of the uplink, each direction; None = unshaped (non-blocking)


@dataclass
class Plan:
    lab_id: int
    prefix: str
    subnet: str
    nodes: list[Node]
    leaves: list[Leaf]
    spine_bridge: str
    host_addr: str
    ctl_name: str
    ctl_addr: str
    ctl_netns: str
    ctl_host_if: str
    link_rate_bps: int | None
    cpus_per_node: int
    oversubscription: float | None = None  # downlink : uplink capacity of every leaf, when given at `up`

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise UsageError(f"unknown node '{name}'; this lab has {node_range(self)}")

    def leaf(self, name: str) -> Leaf:
        for leaf in self.leaves:
            if leaf.name == name or leaf.name == f"leaf{name}":
                return leaf
        raise UsageError(f"unknown leaf '{name}'; this lab has {', '.join(l.name for l in self.leaves)}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        data = dict(data)
        data["nodes"] = [Node(**n) for n in data["nodes"]]
        data["leaves"] = [Leaf(**l) for l in data["leaves"]]
        return cls(**data)


def node_range(plan: Plan) -> str:
    names = [n.name for n in plan.nodes]
    return names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"


def prefix_for(lab_id: int) -> str:
    return f"fbl{lab_id}"


def link_pattern(lab_id: int) -> str:
    """Regex for this lab's host links: 'fbl1' followed by a letter, so fbl1 never matches fbl10's links."""
    return rf"^{prefix_for(lab_id)}[a-z]"


def make_plan(lab_id: int, nodes: int, leaves: int = 1, link_rate_bps: int | None = None,
              cpus_per_node: int = 4, oversubscription: float | None = None,
              uplink_rate_bps: int | None = None) -> Plan:
    """The layout. Uplinks: unshaped by default; `uplink_rate_bps` shapes every leaf's uplink to that rate;
    `oversubscription` r shapes each to (its nodes x link rate) / r, so r = 2 gives a 2:1 leaf."""
    if not 1 <= nodes <= MAX_NODES:
        raise UsageError(f"--nodes {nodes}: choose 1 to {MAX_NODES}")
    if not 1 <= leaves <= nodes:
        raise UsageError(f"--leaves {leaves}: choose 1 to the number of nodes ({nodes})")
    if not 0 <= lab_id < MAX_LABS:
        raise UsageError(f"lab number {lab_id} out of range 0..{MAX_LABS - 1}")
    if cpus_per_node < 1:
        raise UsageError(f"--cpus-per-node {cpus_per_node}: must be at least 1")
    if oversubscription is not None and uplink_rate_bps is not None:
        raise UsageError("give --oversubscription or --uplink-rate, not both")
    if oversubscription is not None:
        if not link_rate_bps:
            raise UsageError("--oversubscription needs shaped node links (a --link-rate, not none): the "
                             "uplink's rate is a share of what its nodes' links carry")
        if not 1 <= oversubscription <= 64:
            raise UsageError(f"--oversubscription {oversubscription:g}:1: choose 1:1 to 64:1")
    prefix = prefix_for(lab_id)
    net = f"{SUBNET_BASE}.{lab_id}"
    leaf_objs = [Leaf(f"leaf{j}", j, f"{prefix}l{j}", f"{prefix}u{j}l", f"{prefix}u{j}s")
                 for j in range(1, leaves + 1)]
    node_objs = []
    base, extra = divmod(nodes, leaves)
    i = 1
    for j, leaf in enumerate(leaf_objs):
        for _ in range(base + (1 if j < extra else 0)):
            name = f"lab{i}"
            node_objs.append(Node(name, i, f"{net}.{i}", leaf.name, f"{prefix}-{name}", f"{prefix}n{i}"))
            leaf.nodes.append(name)
            i += 1
    for leaf in leaf_objs:
        if uplink_rate_bps is not None:
            leaf.uplink_rate_bps = uplink_rate_bps
        elif oversubscription is not None and leaf.nodes:
            leaf.uplink_rate_bps = int(link_rate_bps * len(leaf.nodes) / oversubscription)
    return Plan(lab_id=lab_id, prefix=prefix, subnet=f"{net}.0/24", nodes=node_objs, leaves=leaf_objs,
                spine_bridge=f"{prefix}s", host_addr=f"{net}.{HOST_OCTET}", ctl_name=CTL_NAME,
                ctl_addr=f"{net}.{CTL_HOST_OCTET}", ctl_netns=f"{prefix}-ctl", ctl_host_if=f"{prefix}c",
                link_rate_bps=link_rate_bps, cpus_per_node=cpus_per_node, oversubscription=oversubscription)


def hosts_file(plan: Plan) -> str:
    """/etc/hosts as seen inside every lab namespace: the lab's names and nothing else but localhost."""
    lines = ["# fabricbench lab hosts file (bind-mounted over /etc/hosts inside the lab's namespaces only)",
             "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             f"{plan.ctl_addr}\t{plan.ctl_name}"]
    host = socket.gethostname().split(".")[0]
    if host and host not in {n.name for n in plan.nodes} and host != plan.ctl_name:
        lines.append(f"{plan.host_addr}\t{host}\tlabhost")  # the machine itself, where users run srun/sbatch
    lines += [f"{node.addr}\t{node.name}" for node in plan.nodes]
    return "\n".join(lines) + "\n"
