"""Expected busbw per collective and algorithm for a layout (hosts × ranks per host), keyed on the NVLink domain.

Symbols (all GB/s per direction, nccl-tests busbw convention): n ranks in all, G ranks per NVLink domain (a host
for NVLink-less or CPU nodes; up to 72 GPUs over 18 hosts on GB200 NVL72), D domains, B_intra the bandwidth a
rank has inside its domain, B_nic the NIC bandwidth per rank, B_dom = G × B_nic a domain's total NIC bandwidth.
Each quantity is computed twice: at line rate and with the efficiency of its link class.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import networkx as nx

from fabricbench.errors import UsageError
from fabricbench.topology.rates import sig as _sig
from fabricbench.topology.efficiency import efficiency, nvlink_class
from fabricbench.topology.graph import build_graph, host_ports
from fabricbench.topology.paths import widest_path
from fabricbench.topology.rates import pcie_rate
from fabricbench.topology.schema import Topology

OPS = ["all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all", "sendrecv"]
ALGOS = ["ring", "tree", "nvls"]


@dataclass
class Bound:
    line: float
    achievable: float
    what: str


def _fmt(x: float) -> str:
    return f"{x:.4g}" if x < 10 else f"{x:.1f}"


class Layout:
    def __init__(self, topo: Topology, nodes: int | None, per_node: int | None):
        self.topo = topo
        nt = topo.node_type
        hosts = topo.host_names()
        self.nodes = nodes or len(hosts)
        if self.nodes < 1 or self.nodes > len(hosts):
            raise UsageError(f"--nodes {self.nodes}: topology {topo.name!r} has {len(hosts)} hosts")
        self.gpus = nt.gpus.count > 0
        limit = nt.gpus.count if self.gpus else nt.ranks
        self.g = per_node or limit
        if self.g < 1 or self.g > limit:
            what = "GPUs" if self.gpus else "ranks (ranks_per_node)"
            raise UsageError(f"--gpus-per-node {self.g}: node type {topo.fabric.node_type!r} has {limit} {what}")
        self.n = self.nodes * self.g
        if self.n < 2:
            raise UsageError("a collective needs at least 2 ranks: use more --nodes or --gpus-per-node")
        nvl = nt.nvlink
        self.domain_hosts = nvl.domain_hosts if (nvl and nvl.topology == "nvswitch" and self.gpus) else 1
        self.hosts_per_domain = min(self.domain_hosts, self.nodes)
        last = self.nodes % self.domain_hosts
        self.G_min = self.g * (last if (last and self.nodes > self.domain_hosts) else self.hosts_per_domain)
        self.G = self.g * self.hosts_per_domain
        self.D = math.ceil(self.nodes / self.domain_hosts)
        self.graph = build_graph(topo, self.nodes)
        self.hosts = hosts[: self.nodes]
        self.notes: list[str] = []

    # ---- bandwidth inside one NVLink domain (or host) ----
    def intra(self) -> Bound:
        nt = self.topo.node_type
        nvl = nt.nvlink
        if not self.gpus:
            if self.G == 1:
                return Bound(math.inf, math.inf, "one rank per host: nothing inside the host")
            if nt.host_memory is None:
                raise UsageError(f"node type {self.topo.fabric.node_type!r} runs {self.g} CPU ranks per host but "
                                 "has no host_memory rate: cannot bound traffic between them")
            return Bound(nt.host_memory, nt.host_memory * efficiency("memory").factor,
                         "host memory between CPU ranks")
        if self.G == 1:
            return Bound(math.inf, math.inf, "one GPU per domain: nothing inside it")
        if nvl and nvl.topology == "nvswitch":
            cls = nvlink_class(nvl.generation)
            line = nvl.links_per_gpu * nvl.link_rate
            return Bound(line, line * efficiency(cls).factor,
                         f"NVLink{nvl.generation} {nvl.links_per_gpu} x {_fmt(nvl.link_rate)} GB/s per GPU via NVSwitch")
        if nvl and self._full_mesh():
            cls = nvlink_class(nvl.generation)
            per_gpu = min(sum(l for a, b, l in nvl.connections if x in (a, b) and a < self.g and b < self.g)
                          for x in range(self.g)) * nvl.link_rate
            return Bound(per_gpu, per_gpu * efficiency(cls).factor,
                         f"direct NVLink mesh, {_fmt(per_gpu)} GB/s per GPU to its peers (rings over all links)")
        return self._ring_routing()

    def _full_mesh(self) -> bool:
        pairs = {(min(a, b), max(a, b)) for a, b, _ in self.topo.node_type.nvlink.connections or []}
        return all((a, b) in pairs for a in range(self.g) for b in range(a + 1, self.g))

    def _ring_routing(self) -> Bound:
        """Best single ring over the host's GPUs: each hop on its widest path, shared links divided by their load."""
        host = self.hosts[0]
        if self.g > 64:
            raise UsageError(f"{self.g} GPUs per host without NVSwitch: the ring analysis stops at 64")
        gpus = [f"{host}:gpu{i}" for i in range(self.g)]
        routes = {}
        for a in gpus:
            for b in gpus:
                if a != b:
                    path = widest_path(self.graph, a, b, {host})
                    if path is None:
                        raise UsageError(f"no path between {a} and {b}")
                    routes[a, b] = list(zip(path, path[1:]))
        best = None
        orders = itertools.permutations(gpus[1:]) if self.g <= 8 else [tuple(gpus[1:])]
        for rest in orders:
            ring = [gpus[0], *rest]
            load: dict[tuple[str, str], int] = {}
            for a, b in zip(ring, ring[1:] + ring[:1]):
                for edge in routes[a, b]:
                    load[edge] = load.get(edge, 0) + 1
            line = min(self.graph[u][v]["rate"] / k for (u, v), k in load.items())
            ach = min(self.graph[u][v]["achievable"] / k for (u, v), k in load.items())
            worst = min(load, key=lambda e: self.graph[e[0]][e[1]]["achievable"] / load[e])
            if best is None or ach > best[1]:
                best = (line, ach, ring, worst, load[worst])
        line, ach, ring, worst, k = best
        label = self.graph[worst[0]][worst[1]]["label"]
        order = " > ".join(r.split(":")[1] for r in ring)
        return Bound(line, ach, f"best ring {order}: bottleneck {worst[0]} - {worst[1]} ({label}) carrying {k} "
                                f"ring hop(s)")

    # ---- network per rank and per domain ----
    def nic(self) -> Bound:
        nt = self.topo.node_type
        host = self.hosts[0]
        ports = host_ports(self.topo, host)
        used = range(self.g)
        line = ach = 0.0
        names = []
        for node, rate, cls, name in ports:
            if nt.nics and name != "host":
                nic = nt.nic(name)
                if nic.gpus and not any(g in used for g in nic.gpus):
                    continue
                if self.topo.fabric.kind == "rail_optimized" and self.topo.fabric.rails:
                    if not any(name in r.nics for r in self.topo.fabric.rails):
                        continue
                pcie = nic.pcie or nt.pcie
                p_line = pcie_rate(pcie.generation, pcie.width) if pcie else math.inf
                line += min(rate, p_line)
                ach += min(rate * efficiency(cls).factor, p_line * efficiency("pcie").factor)
            else:
                line += rate
                ach += rate * efficiency(cls).factor
            names.append(f"{name} {_fmt(rate * 8)} Gb/s {cls}")
        if not names:
            raise UsageError("no NIC serves the GPUs of this layout")
        return Bound(line / self.g, ach / self.g, f"{len(names)} port(s) per host ({', '.join(names[:4])}"
                                                  f"{', ...' if len(names) > 4 else ''}) shared by {self.g} ranks")

    def alltoall_fabric_factor(self) -> tuple[float, str]:
        """Share of all_to_all NIC traffic the leaf uplinks can carry (1 = not limited)."""
        graph = self.graph
        first = host_ports(self.topo, self.hosts[0])[0][0]
        leaves = [n for n in graph.neighbors(first) if graph.nodes[n].get("kind") == "switch"]
        if not leaves:
            return 1.0, ""
        leaf = leaves[0]
        hosts_here = {graph.nodes[n].get("host") for n in graph.neighbors(leaf) if graph.nodes[n].get("host")}
        down = sum(d["rate"] for _, n, d in graph.edges(leaf, data=True) if graph.nodes[n].get("host") in hosts_here)
        up = sum(d["rate"] for _, n, d in graph.edges(leaf, data=True) if not graph.nodes[n].get("host"))
        outside_ranks = self.n - self.G
        if outside_ranks <= 0:
            return 1.0, ""
        local_hosts = len(hosts_here)
        cross = max(0, self.nodes - max(local_hosts, self.hosts_per_domain)) * self.g / outside_ranks
        need = cross * down
        if need <= up + 1e-9:
            return 1.0, ""
        factor = up / need
        return factor, (f"leaf uplinks {_fmt(up)} GB/s carry {_fmt(100 * factor)}% of the {_fmt(need)} GB/s "
                        f"that {local_hosts} host(s) send off-leaf (oversubscription)")

    # ---- formulas ----
    def expect(self, op: str, algo: str) -> dict:
        n, G, D = self.n, self.G, self.D
        nt = self.topo.node_type
        intra = self.intra()
        row = {"op": op, "algorithm": algo, "n": n, "G": G, "D": D}
        cross = D > 1
        if cross:
            nic = self.nic()
            dom_line, dom_ach = G * nic.line, G * nic.achievable
        if algo == "nvls" and not nt.nvls_enabled():
            return {**row, "applicable": False, "why": "no NVLink SHARP (needs NVSwitch, NVLink 4 or later)"}
        if algo == "nvls" and op != "all_reduce":
            return {**row, "applicable": False, "why": "NVLS is modelled for all_reduce only"}
        if algo == "tree" and op != "all_reduce":
            return {**row, "applicable": False, "why": "NCCL's tree is used for all_reduce only"}

        def pick(candidates: list[tuple[str, float, float, str]]) -> dict:
            candidates = [c for c in candidates if math.isfinite(c[2])]
            if not candidates:
                raise UsageError("nothing bounds this layout (one rank per host and one host?)")
            name, _line, ach, _text = min(candidates, key=lambda c: c[2])
            line = min(c[1] for c in candidates)
            formula = " ; ".join(f"{c[0]}: {c[3]}" for c in candidates)
            if len(candidates) > 1:
                formula = f"min of [{formula}]"
            return {**row, "applicable": True, "line_busbw": _sig(line), "expected_busbw": _sig(ach),
                    "bound": name, "formula": formula, "intra": intra.what,
                    "network": nic.what if cross else "not used (one domain)"}

        if op == "sendrecv":
            cands = [("intra", intra.line, intra.achievable, f"B_intra = {_fmt(intra.achievable)}")]
            if self.nodes > self.hosts_per_domain or (self.nodes > 1 and self.domain_hosts == 1):
                cands.append(("nic", nic.line, nic.achievable, f"B_nic per rank = {_fmt(nic.achievable)}"))
            return pick(cands)
        if op == "all_to_all":
            if not cross:
                return pick([("intra", intra.line, intra.achievable, f"B_intra = {_fmt(intra.achievable)}")])
            Gm = self.G_min
            f_intra = (n - 1) / (Gm - 1) if Gm > 1 else math.inf
            f_net = (n - 1) / (n - Gm)
            fab, fab_text = self.alltoall_fabric_factor()
            cands = [("nic", nic.line * f_net * fab, nic.achievable * f_net * fab,
                      f"B_nic x (n-1)/(n-G) = {_fmt(nic.achievable)} x {n - 1}/{n - Gm}"
                      + (f" x {fab:.3f} ({fab_text})" if fab < 1 else ""))]
            if Gm > 1:
                cands.append(("intra", intra.line * f_intra, intra.achievable * f_intra,
                              f"B_intra x (n-1)/(G-1) = {_fmt(intra.achievable)} x {n - 1}/{Gm - 1}"))
            return pick(cands)
        # ring-like ops and all_reduce algorithms
        if algo == "nvls":
            eta = efficiency("nvls").factor
            k = 2 * (G - 1) / (G + 1)
            cands = [("nvls", intra.line * k, intra.achievable * k * eta,
                      f"B_intra x 2(G-1)/(G+1) x eta_nvls = {_fmt(intra.achievable)} x {2 * (G - 1)}/{G + 1} x {eta}")]
            if cross:
                k2 = 2 * (n - 1) / n / (1 if D == 2 else 2)
                cands.append(("nic", dom_line * k2, dom_ach * k2,
                              f"tree between domains: 2(n-1)/n x B_dom / {1 if D == 2 else 2} = "
                              f"{2 * (n - 1)}/{n} x {G} x {_fmt(nic.achievable)}" + (" / 2" if D > 2 else "")))
            return pick(cands)
        cands = [("intra", intra.line, intra.achievable, f"B_intra = {_fmt(intra.achievable)}")]
        if algo == "tree" and cross:
            k2 = 2 * (n - 1) / n / (1 if D == 2 else 2)
            cands.append(("nic", dom_line * k2, dom_ach * k2,
                          f"2(n-1)/n x G x B_nic / {1 if D == 2 else 2} = {2 * (n - 1)}/{n} x {G} x "
                          f"{_fmt(nic.achievable)}" + (" / 2" if D > 2 else "")))
        elif cross:
            cands.append(("nic", dom_line, dom_ach, f"G x B_nic = {G} x {_fmt(nic.achievable)}"))
        result = pick(cands)
        if algo == "tree" and not cross:
            result["note"] = "one domain: NCCL's tree degenerates to a chain; bounded as ring"
        return result


def expectations(topo: Topology, nodes: int | None = None, per_node: int | None = None,
                 ops: list[str] | None = None, algos: list[str] | None = None) -> dict:
    layout = Layout(topo, nodes, per_node)
    ops = ops or OPS
    algos = algos or ALGOS
    for op in ops:
        if op not in OPS:
            raise UsageError(f"operation {op!r}: choose from {', '.join(OPS)}")
    for algo in algos:
        if algo not in ALGOS:
            raise UsageError(f"algorithm {algo!r}: choose from {', '.join(ALGOS)}")
    rows = []
    for op in ops:
        for algo in (algos if op == "all_reduce" else ["ring"] if "ring" in algos or op in ("all_to_all", "sendrecv")
                     else []):
            label = algo if op not in ("all_to_all", "sendrecv") else "direct"
            row = layout.expect(op, algo)
            row["algorithm"] = label
            rows.append(row)
    return {"topology": topo.name, "node_type": topo.fabric.node_type, "nodes": layout.nodes,
            "ranks_per_node": layout.g, "n": layout.n, "G": layout.G, "D": layout.D,
            "domain": (f"{layout.G} ranks per NVLink domain ({layout.hosts_per_domain} host(s))"
                       if layout.gpus and topo.node_type.nvlink else f"{layout.G} ranks per host"),
            "rows": rows}
