"""Collectives over subsets of the nodes, after the pairwise sweep of a health run (issue 12, section 1).

A pairwise sweep sees two NICs and the path between them at a time; a collective over a group sees what many
concurrent flows through the same switches do. Subsets are chosen so that a low reading localizes:
- with a topology (or a leaf map): each leaf's nodes (traffic stays inside the leaf switch) and one all-node
  group (traffic crosses every leaf's uplinks): a low all-node group with normal leaves points at the uplinks
  or the spine, one low leaf at that leaf;
- without one: fixed-size groups of consecutive nodes (`GROUP_SIZE`), their boundaries shifted by half a group
  on odd nights (a node's two groups intersect in fewer nodes), and the all-node group; when the budget does
  not fit every group, the groups run first take turns over the nights.

Each subset runs the same engine as `fabricbench run` (one rank per node, or per GPU with --gpus-per-node),
launched as the sweep is: `fabricbench submit` under Slurm (in the run's reservation when it has one), or
`fabricbench run --nprocs` with --local. The leaves' subsets are disjoint and keep their traffic in their own
leaf, so under Slurm with a topology they run at the same time (one wave); otherwise one subset at a time.

Each subset's busbw (decimal GB/s, nccl-tests accounting) at its size goes into the history as component
`collective:<op>:<subset>`, metric `busbw_bytes_per_second` (judged against its own history like every other
bandwidth series), and, where the topology gives an expectation for that collective and the measurement is
bandwidth-bound, metric `topology_pass` (1 at or above `analyze`'s collective bar, 0 below: an absolute rule,
like a node check). A subset that fails is recorded with status 'failed' (a reading of 0 for its states):
evidence to retest. Collectives never drain a node: the drain lifecycle reads NIC series only.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

OP = "all_reduce"
GROUP_SIZE = 4  # nodes per group without a topology
DEFAULT_SUBSET_S = 20.0  # one subset, start to results, before the history has measured it
DEFAULT_SIZE = "64M"
# A reading is judged against the topology only when bandwidth-bound: at analyze's 256 MiB, or when one
# operation at the expected busbw takes at least this long (per-step latencies are then a small part of it).
MIN_BANDWIDTH_SIZE = 256 << 20
MIN_BANDWIDTH_OP_S = 0.010
BUSBW_METRIC = "busbw_bytes_per_second"
TOPOLOGY_METRIC = "topology_pass"


@dataclass
class Subset:
    name: str  # 'leaf2', 'all', or a host list 'lab[1-4]'
    nodes: list[str]
    kind: str  # leaf | all | group
    est_s: float = DEFAULT_SUBSET_S

    def component(self, op: str = OP) -> str:
        return f"collective:{op}:{self.name}"

    @property
    def dirname(self) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)


@dataclass
class CollectivePlan:
    op: str
    size: str
    waves: list[list[Subset]]  # subsets of a wave run at the same time
    left_out: list[Subset] = field(default_factory=list)
    budget_s: float = 0.0
    estimates_from: str = "defaults (no history yet)"
    notes: list[str] = field(default_factory=list)

    @property
    def subsets(self) -> list[Subset]:
        return [s for w in self.waves for s in w]

    @property
    def est_s(self) -> float:
        return sum(max(s.est_s for s in w) for w in self.waves if w)

    def describe(self) -> str:
        if not self.waves:
            what = "none fit the budget" if self.left_out else "no subset of 2 or more nodes"
            lines = [f"collectives: {self.op} over subsets: {what}"
                     + (f" ({self.budget_s:.0f} s left for them; the first needs {self.left_out[0].est_s:.0f} s)"
                        if self.left_out else "")]
        else:
            waves = "; ".join(" + ".join(f"{s.name} ({len(s.nodes)} nodes, ~{s.est_s:.0f} s)" for s in w)
                              for w in self.waves)
            lines = [f"collectives: {self.op} at {self.size} over {len(self.subsets)} subset(s) in {len(self.waves)} "
                     f"wave(s): {waves}",
                     f"collectives estimate: {self.est_s:.0f} s of the {self.budget_s:.0f} s left for them "
                     f"(estimates from: {self.estimates_from})"]
        if self.left_out and self.waves:
            lines.append("collectives left out (budget): " + ", ".join(s.name for s in self.left_out))
        lines += [f"note: {x}" for x in self.notes]
        return "\n".join(lines)


@dataclass
class Result:
    subset: Subset
    seconds: float
    busbw_gbps: float | None = None  # decimal GB/s at the largest size
    size: int | None = None
    nranks: int | None = None
    error: str = ""
    expected_gbps: float | None = None
    formula: str = ""
    ratio: float | None = None
    topology_pass: bool | None = None  # None: not judged against the topology
    not_judged: str = ""  # why not, when a topology exists

    @property
    def ok(self) -> bool:
        return self.busbw_gbps is not None and not self.error

    def as_dict(self, op: str = OP) -> dict:
        return {"component": self.subset.component(op), "nodes": self.subset.nodes, "seconds": round(self.seconds, 2),
                "busbw_gbps": self.busbw_gbps, "size": self.size, "nranks": self.nranks,
                "status": "ok" if self.ok else "failed", "error": self.error, "expected_gbps": self.expected_gbps,
                "ratio": self.ratio, "topology_pass": self.topology_pass}


def hostlist_name(nodes: list[str]) -> str:
    try:
        import hostlist

        return hostlist.collect_hostlist(nodes)
    except Exception:  # python-hostlist refuses odd names: a plain list still names the group
        return ",".join(nodes)


def choose_subsets(nodes: list[str], leaf_of: dict[str, str] | None = None, night: int = 0,
                   group_size: int = GROUP_SIZE) -> list[Subset]:
    """The subsets, in the order they get the budget: the all-node group first (it covers every link), then
    the leaves (or groups), starting at a different one each night."""
    nodes = list(nodes)
    if len(nodes) < 2:
        return []
    whole = Subset("all", nodes, "all")
    parts: list[Subset] = []
    if leaf_of and any(n in leaf_of for n in nodes):
        by_leaf: dict[str, list[str]] = {}
        for n in nodes:
            if n in leaf_of:
                by_leaf.setdefault(leaf_of[n], []).append(n)
        from fabricbench.analyze.topo_adapter import _natural

        parts = [Subset(leaf, members, "leaf") for leaf, members in sorted(by_leaf.items(), key=lambda kv: _natural(kv[0]))
                 if len(members) >= 2]
        if len(by_leaf) == 1 and len(by_leaf[next(iter(by_leaf))]) == len(nodes):
            return [Subset(next(iter(by_leaf)), nodes, "leaf")]  # one leaf holds them all: that leaf is the group
    elif len(nodes) > group_size:
        k = max(2, group_size)
        shift = (night % 2) * (k // 2)
        order = nodes[shift:] + nodes[:shift]
        chunks = [order[i:i + k] for i in range(0, len(order), k)]
        if len(chunks) > 1 and len(chunks[-1]) < 2:
            last = chunks.pop()
            chunks[-1] = chunks[-1] + last
        parts = [Subset(hostlist_name(sorted(c, key=nodes.index)), sorted(c, key=nodes.index), "group") for c in chunks]
    if parts:
        start = night % len(parts)
        parts = parts[start:] + parts[:start]
    return [whole] + parts


def make_waves(subsets: list[Subset], concurrent: bool) -> list[list[Subset]]:
    """The all-node group alone; the leaves together when `concurrent` (disjoint, traffic inside each leaf)."""
    if not concurrent:
        return [[s] for s in subsets]
    waves: list[list[Subset]] = []
    leaves: list[Subset] = []
    for s in subsets:
        if s.kind == "leaf":
            if not leaves:
                waves.append(leaves)
            leaves.append(s)
        else:
            waves.append([s])
    return waves


def fit(subsets: list[Subset], budget_s: float, concurrent: bool, op: str = OP, size: str = DEFAULT_SIZE,
        estimates_from: str = "defaults (no history yet)") -> CollectivePlan:
    """Take subsets in order while their waves' estimated time (a wave lasts as long as its longest subset)
    fits `budget_s`; the rest are left out (and take their turn on a later night)."""
    taken: list[Subset] = []
    left: list[Subset] = []
    for s in subsets:
        trial = make_waves(taken + [s], concurrent)
        if sum(max(x.est_s for x in w) for w in trial) <= budget_s:
            taken.append(s)
        else:
            left.append(s)
    return CollectivePlan(op, size, make_waves(taken, concurrent), left, budget_s, estimates_from)


def estimates(past_runs: list[dict], subsets: list[Subset], op: str = OP, default_s: float = DEFAULT_SUBSET_S) -> str:
    """Set each subset's `est_s` from what it took in the last runs (median of its last 5), else the median
    of every subset of the last run that had collectives, else `default_s`. Returns where they came from."""
    seen: dict[str, list[float]] = {}
    last_any: list[float] = []
    for r in past_runs:
        res = (r.get("collectives") or {}).get("results") or []
        if res:
            last_any = [float(x["seconds"]) for x in res if x.get("seconds")]
        for x in res:
            if x.get("seconds"):
                seen.setdefault(x.get("component", ""), []).append(float(x["seconds"]))
    own = 0
    for s in subsets:
        xs = seen.get(s.component(op), [])[-5:]
        if xs:
            s.est_s = statistics.median(xs)
            own += 1
        elif last_any:
            s.est_s = statistics.median(last_any)
        else:
            s.est_s = default_s
    if own == len(subsets) and subsets:
        return "each subset's own last runs"
    if own or last_any:
        return f"{own} subset(s) from their own last runs, the others from the last run's median"
    return f"defaults ({default_s:.0f} s per subset; no history yet)"


# ---- running -----------------------------------------------------------------------------------------------

@dataclass
class Launch:
    local: bool
    gpus_per_node: int = 0
    size: str = DEFAULT_SIZE
    iters: int = 5
    warmup: int = 1
    partition: str | None = None
    reservation: str | None = None
    hca: str | None = None


def argv_for(subset: Subset, launch: Launch, out: Path, limit_s: float, op: str = OP) -> list[str]:
    """`fabricbench submit OP --nodelist ...` (Slurm) or `fabricbench run OP --nprocs N` (--local)."""
    measure = ["-b", launch.size, "-e", launch.size, "-n", str(launch.iters), "-w", str(launch.warmup),
               "-T", str(int(max(30, limit_s))), "--out", str(out), "-q"]
    if launch.local:
        return [sys.executable, "-m", "fabricbench", "run", op, "--nprocs", str(len(subset.nodes)), *measure]
    per_node = max(launch.gpus_per_node, 1)
    argv = [sys.executable, "-m", "fabricbench", "submit", op, "--nodelist", ",".join(subset.nodes),
            "--ntasks-per-node", str(per_node), "--time", str(max(2, int(limit_s // 60) + 2)), "--poll", "1", *measure]
    if launch.gpus_per_node:
        argv += ["--gpus-per-node", str(launch.gpus_per_node)]
    if launch.partition:
        argv += ["-p", launch.partition]
    if launch.reservation:
        argv += ["--reservation", launch.reservation]
    return argv


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM first: `fabricbench submit` cancels its job on it; then the process group."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()


def execute(plan: CollectivePlan, launch: Launch, out_root: Path, deadline: float, echo=print,
            op: str = OP) -> list[Result]:
    """Run the plan's waves; each subset's results under out_root/<subset>. A wave that would start past
    `deadline` is skipped (its subsets recorded as not run, not as failed)."""
    results: list[Result] = []
    for wave in plan.waves:
        left = deadline - time.time()
        if left < min(s.est_s for s in wave) * 0.5:
            for s in wave:
                plan.left_out.append(s)
                echo(f"collective {s.name}: not started, {max(left, 0):.0f} s of the budget left")
            continue
        running = []
        for s in wave:
            out = out_root / s.dirname
            argv = argv_for(s, launch, out, max(left, 30.0), op)
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=dict(os.environ), start_new_session=True)
            running.append((s, out, proc, time.time()))
        for s, out, proc, t0 in running:
            try:
                text, _ = proc.communicate(timeout=max(deadline - time.time(), 0) + 120)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                _stop(proc)
                text, rc = "", None
            res = read_result(s, out, time.time() - t0, rc, text or "", op)
            results.append(res)
    return results


def read_result(subset: Subset, out: Path, seconds: float, rc: int | None, text: str, op: str = OP) -> Result:
    """The subset's busbw at its largest size from its results directory (the analyzer's importer)."""
    res = Result(subset, seconds)
    groups = None
    try:
        from fabricbench.analyze.importers import load_all

        groups = load_all([str(out)]).groups if out.exists() else None
    except Exception as err:  # no results at all: the run failed before its first row
        res.error = f"no results ({type(err).__name__}: {' '.join(str(err).split())[:160]})"
    if groups is not None and not groups.empty:
        g = groups[groups["op"].astype(str) == op]
        ok = g[(g["status"] == "ok") & g["busbw"].notna()] if len(g) else g
        if len(ok):
            top = ok[ok["size"] == ok["size"].max()]
            res.size, res.nranks = int(top["size"].iloc[0]), int(top["nranks"].iloc[0])
            res.busbw_gbps = float(top["busbw"].median())
            wrong = float(top["nwrong"].fillna(0).sum()) if "nwrong" in top else 0.0
            if wrong > 0:
                res.error = f"{int(wrong)} wrong element(s) in the result check"
        elif len(g):
            res.error = f"status {g['status'].iloc[-1]}"
    if rc is None:
        res.error = res.error or "stopped at the end of the budget"
    elif rc not in (0, 1) or (res.busbw_gbps is None and not res.error):
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        res.error = res.error or f"exit {rc}: {tail[0][:200]}"
    if res.error:
        res.busbw_gbps = None if "wrong" not in res.error else res.busbw_gbps
    return res


# ---- judging and history rows -----------------------------------------------------------------------------

def judge(results: list[Result], fabric, gpus_per_node: int, op: str = OP) -> None:
    """Against the topology's expectation for `op` on that many nodes (analyze's collective bar), where the
    topology gives one and the reading is bandwidth-bound."""
    from fabricbench.analyze.sources.collectives import COLLECTIVE_FRACTION

    if fabric is None or getattr(fabric, "topo", None) is None:
        return
    topo = fabric.topo
    gpus = bool(getattr(topo.node_type.gpus, "count", 0))
    for r in results:
        if not r.ok or r.busbw_gbps is None:
            continue
        if gpus and not gpus_per_node:
            r.not_judged = "the topology's nodes have GPUs; give --gpus-per-node for its expectation"
            continue
        exp = fabric.collective_expected(op, len(r.subset.nodes), gpus_per_node or None)
        if exp is None:
            r.not_judged = f"the topology gives no {op} expectation for {len(r.subset.nodes)} nodes"
            continue
        factor = 2 * (r.nranks - 1) / r.nranks if r.nranks else 1.0
        op_s = (r.size or 0) * factor / (exp[0] * 1e9) if exp[0] > 0 else 0.0
        if (r.size or 0) < MIN_BANDWIDTH_SIZE and op_s < MIN_BANDWIDTH_OP_S:
            r.not_judged = (f"{r.size} B takes ~{1e3 * op_s:.2g} ms at the expected busbw: latency-bound; judged "
                            f"against the topology from {MIN_BANDWIDTH_SIZE >> 20} MiB or {1e3 * MIN_BANDWIDTH_OP_S:.0f} ms")
            continue
        r.expected_gbps, r.formula = exp
        r.ratio = r.busbw_gbps / exp[0] if exp[0] > 0 else None
        r.topology_pass = bool(r.ratio is not None and r.ratio >= COLLECTIVE_FRACTION)


def rows(results: list[Result], run_id: str, ts: datetime, op: str = OP) -> list[dict]:
    from fabricbench.analyze.sources.collectives import COLLECTIVE_FRACTION
    from fabricbench.health.rows import _row

    out = []
    for r in results:
        members = f"{len(r.subset.nodes)} nodes {hostlist_name(r.subset.nodes)}"
        comp = r.subset.component(op)
        if r.ok:
            detail = f"{members}, {r.nranks} ranks, {r.size} B, {r.seconds:.0f} s"
            out.append(_row(run_id, ts, "collective", "collective", comp, None, BUSBW_METRIC, r.busbw_gbps * 1e9,
                            "bytes_per_second", "ok", detail[:500]))
        else:
            out.append(_row(run_id, ts, "collective", "collective", comp, None, BUSBW_METRIC, None,
                            "bytes_per_second", "failed", f"{members}: {r.error}"[:500]))
        if r.topology_pass is not None:
            detail = (f"busbw {r.busbw_gbps:.4g} GB/s is {100 * r.ratio:.0f}% of the {r.expected_gbps:.4g} GB/s the "
                      f"topology expects ({r.formula[:160]}); bar {100 * COLLECTIVE_FRACTION:.0f}%")
            out.append(_row(run_id, ts, "collective", "collective", comp, None, TOPOLOGY_METRIC,
                            1.0 if r.topology_pass else 0.0, "ratio", "pass" if r.topology_pass else "fail", detail))
    return out


def summary_lines(results: list[Result], op: str = OP) -> list[str]:
    lines = []
    for r in results:
        head = f"collective {r.subset.component(op)} ({len(r.subset.nodes)} nodes, {r.seconds:.0f} s): "
        if not r.ok:
            lines.append(head + f"FAILED: {r.error}")
            continue
        text = head + f"busbw {r.busbw_gbps:.4g} GB/s at {r.size} B"
        if r.topology_pass is not None:
            text += (f"; {100 * r.ratio:.0f}% of the topology's {r.expected_gbps:.4g} GB/s"
                     + ("" if r.topology_pass else " (LOW)"))
        elif r.not_judged:
            text += f"; not judged against the topology: {r.not_judged}"
        lines.append(text)
    return lines
