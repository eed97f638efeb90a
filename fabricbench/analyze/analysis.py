"""Orchestration: measurements in, verdicts out.

`analyze(dataset, fabric=None, baseline=None, thresholds=Thresholds())` judges every measurement against the
fleet (robust median/MAD per path class and size), the optional baseline and the optional topology
expectation, localizes with the pair fit, path tomography, node x rail and GPU x GPU matrices and group tests,
and returns an `Analysis` whose `exit_code` is 0 healthy, 1 faults, 3 inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fabricbench.analyze.matrices import node_rail
from fabricbench.analyze.model import Dataset
from fabricbench.analyze.topo_adapter import Fabric
from fabricbench.analyze.verdicts import Verdict, confidence, pct, severity
from fabricbench.errors import UsageError

EXIT_HEALTHY, EXIT_FAULTS, EXIT_INCONCLUSIVE = 0, 1, 3


@dataclass
class Thresholds:
    """Defaults and why (docs/analyze.md): ClusterKit calls a pair bad below 93% of the best observed; we use 93%
    of the fleet's robust median (the single best reading moves with noise). SuperBench flags a drop of more than
    5% from a baseline. The topology expectation already includes achievable efficiency, so 90% of it is the
    bar. The spread floor (1%) keeps a very quiet fleet from flagging jitter."""

    fleet_fraction: float = 0.93
    baseline_drop: float = 0.05
    expected_fraction: float = 0.90
    min_spread: float = 0.01
    pair_sigmas: float = 3.0
    component_sigmas: float = 4.0
    min_confidence: float = 0.5
    nvlink_min: float = 0.03
    explain: float = 0.04
    latency_factor: float = 2.1

    @property
    def rel(self) -> float:
        return -math.log(self.fleet_fraction)

    @classmethod
    def from_dict(cls, data: dict) -> "Thresholds":
        known = {f for f in cls.__dataclass_fields__}
        bad = [k for k in data if k not in known]
        if bad:
            raise UsageError(f"unknown threshold(s) {', '.join(sorted(bad))}; known: {', '.join(sorted(known))}")
        try:
            return cls(**{k: float(v) for k, v in data.items()})
        except (TypeError, ValueError) as err:
            raise UsageError(f"thresholds: {err}") from None


@dataclass
class Analysis:
    verdicts: list[Verdict] = field(default_factory=list)
    cluster: list[dict] = field(default_factory=list)  # fleet-level findings (baseline, topology)
    caveats: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    intermittent: list[str] = field(default_factory=list)
    # paths that read low but within chance, most suspect first (for a retest of the same paths)
    suspect_paths: list[dict] = field(default_factory=list)
    fleet: list[dict] = field(default_factory=list)
    expected: list[dict] = field(default_factory=list)  # measured vs expected rows
    groups: list[dict] = field(default_factory=list)
    pair_matrix: dict | None = None
    rail_matrix: dict | None = None
    gpu_mats: list[dict] = field(default_factory=list)
    node_levels: dict[str, dict] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    inconclusive: list[str] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    topology: str | None = None
    compared: list[dict] = field(default_factory=list)  # {what, basis, detail}: what each class was judged against
    retests: list[str] = field(default_factory=list)  # evidence too weak to blame: rerun these
    evidence: list = field(default_factory=list)  # every Evidence record the sources produced

    def drain_candidates(self, min_conf: float = 0.9) -> list[Verdict]:
        """Verdicts that may drain (or fail) a host: host-side kinds, confident, about a host with measurements of
        its own. Never uplink, spine, switch or link verdicts, never a host that produced no measurement."""
        return [v for v in self.verdicts if v.drainable_host and v.confidence >= min_conf]

    @property
    def judged(self) -> bool:
        """Something was compared with a reference (fleet, baseline, topology, data)."""
        return any(c["basis"] != "nothing" for c in self.compared)

    def retest_paths(self) -> list[tuple[str, str]]:
        """The directed paths a retest should run again, most suspect first: those blamed by a link verdict,
        then those that read low without being cleared (a path a retest already cleared is not listed)."""
        paths = [(v.hosts[0], v.hosts[1]) for v in self.faults() if v.kind == "link" and len(v.hosts) >= 2]
        paths += [(x["src"], x["dst"]) for x in self.suspect_paths if not x.get("retested")]
        return list(dict.fromkeys(paths))

    def faults(self, min_conf: float | None = None) -> list[Verdict]:
        m = self.thresholds.min_confidence if min_conf is None else min_conf
        return [v for v in self.verdicts if v.confidence >= m]

    @property
    def exit_code(self) -> int:
        if self.faults() or any(c.get("failed") for c in self.cluster):
            return EXIT_FAULTS
        # weak verdicts (below min_confidence) are suspects to retest: they neither fail nor void a judged run
        if self.inconclusive or not self.judged:
            return EXIT_INCONCLUSIVE
        return EXIT_HEALTHY

    @property
    def status(self) -> str:
        return {0: "healthy", 1: "faults", 3: "inconclusive"}[self.exit_code]


def _nic_stage(ds: Dataset, fabric: Fabric | None, th: Thresholds, res: Analysis) -> None:
    g = ds.nics[(ds.nics["status"].astype(str) == "ok") & (ds.nics["bw"] > 0)].copy()
    failed = ds.nics[ds.nics["status"].astype(str) != "ok"]
    for h, nic, err in failed[["host", "nic", "error"]].itertuples(index=False):
        res.verdicts.append(Verdict(component=f"{h}:{nic}", kind="nic", severity="critical", confidence=0.9,
                                    deficit_pct=100.0, summary=f"{h} {nic}: measurement failed ({err})",
                                    retest=[f"ib_write_bw on {h} {nic}"], identifiers={"host": h, "nic": nic},
                                    hosts=[str(h)], basis="data"))
    if g.empty:
        return
    g["log"] = np.log(g["bw"].astype(float))
    big = g.groupby("size")["bw"].median()
    sizes = [s for s, v in big.items() if v >= 0.5 * big.max()]
    g = g[g["size"].isin(sizes)]
    g["norm"] = g["log"] - g.groupby("size")["log"].transform("median")
    cells = g.groupby(["host", "nic"])["norm"].agg(["median", "count"]).reset_index()
    res.hosts = sorted(set(res.hosts) | set(cells["host"].astype(str)))
    if len(cells) < 3:
        res.inconclusive.append(f"NIC measurements: {len(cells)} NIC(s); at least 3 are needed to judge against the fleet")
        return
    spread = max(1.4826 * float(np.median(np.abs(cells["median"] - cells["median"].median()))), th.min_spread)
    if cells.groupby("host")["nic"].nunique().max() >= 2:
        c = cells.rename(columns={"nic": "rail", "median": "value"})
        nic_of = {(h, r): r for h, r in zip(c["host"], c["rail"])}
        v, mat = node_rail(c, fabric.leaf_of if fabric else None, nic_of, th.rel, spread, th.explain)
        res.verdicts.extend(v)
        res.rail_matrix = res.rail_matrix or mat
        return
    for h, nic, med, cnt in cells.itertuples(index=False):
        d = -med
        if d > th.rel:
            res.verdicts.append(Verdict(component=f"{h}:{nic}", kind="nic", severity=severity(1 - math.exp(-d)),
                                        confidence=confidence(d, th.rel, spread, cnt), deficit_pct=pct(-d),
                                        summary=f"{h} {nic} reads {pct(-d):.0f}% below the fleet's NICs",
                                        evidence=[f"median over {cnt} size(s) vs {len(cells)} NICs"],
                                        retest=[f"ib_write_bw between {h} {nic} and a healthy host"],
                                        identifiers={"host": str(h), "nic": str(nic)}, hosts=[str(h)]))


def _collective_expectations(ds: Dataset, fabric: Fabric, th: Thresholds, res: Analysis) -> None:
    g = ds.groups
    if g.empty or fabric.topo is None:
        return
    g = g[(g["status"] == "ok") & (g["hosts"].astype(str) != "") & (g["nranks"] > 0) & np.isfinite(g["busbw"])]
    for (op, hosts, nranks), sub in g.groupby(["op", "hosts", "nranks"]):
        members = [h for h in str(hosts).split(",") if h]
        top = sub[sub["size"] == sub["size"].max()]
        if int(top["size"].iloc[0]) < (256 << 20):
            continue  # small messages measure latency, not the fabric's bandwidth
        nodes = len(members)
        per_node = int(nranks) // nodes if nranks % nodes == 0 else None
        exp = fabric.collective_expected(str(op), nodes, per_node)
        if exp is None:
            continue
        measured = float(top["busbw"].max())
        ratio = measured / exp[0] if exp[0] > 0 else float("nan")
        failed = bool(ratio < th.expected_fraction)
        res.expected.append({"class": f"{op} x{nranks} ({nodes} host{'s' if nodes > 1 else ''})",
                             "size": int(top["size"].iloc[0]), "measured_gbps": measured, "expected_gbps": exp[0],
                             "ratio": ratio, "failed": failed, "formula": exp[1]})
        if failed:
            res.cluster.append({"what": f"{op} on {hosts}", "basis": "topology", "failed": True, "hosts": members,
                                "summary": f"{op} over {nranks} ranks on {', '.join(members[:6])}: busbw {measured:.3g} GB/s "
                                           f"at {int(top['size'].iloc[0])} B is {100 * ratio:.0f}% of the "
                                           f"{exp[0]:.3g} GB/s the topology expects ({exp[1][:120]})"})


def _expectation_stage(fabric: Fabric, th: Thresholds, res: Analysis) -> None:
    if not fabric.expected:
        res.notes.append(f"topology {fabric.name}: no bandwidth expectation available; judged against the fleet only")
        return
    top = {}
    for row in res.fleet:  # bandwidth is judged at the largest size measured (small sizes measure latency)
        top[row["class"]] = max(top.get(row["class"], 0), int(row["size"]))
    for row in res.fleet:
        exp = fabric.expected.get(row["class"])
        if exp is None or int(row["size"]) != top[row["class"]]:
            continue
        # paths a component verdict explains (a degraded uplink, a bad host) are not a fleet-wide shortfall
        measured = row.get("unexplained_median_gbps", row["median_gbps"])
        ratio = measured / exp if exp > 0 else float("nan")
        failed = bool(ratio < th.expected_fraction)
        row["compared_with"] = "topology"
        item = {"class": row["class"], "size": row["size"], "measured_gbps": measured,
                "expected_gbps": exp, "ratio": ratio, "failed": failed}
        res.expected.append(item)
    bad = [e for e in res.expected if e["failed"]]
    if bad:
        worst = min(bad, key=lambda e: e["ratio"])
        res.cluster.append({"what": f"{worst['class']} paths", "basis": "topology", "failed": True,
                            "summary": f"the fleet's median {worst['class']} bandwidth at {worst['size']} B is "
                                       f"{worst['measured_gbps']:.3g} GB/s, {100 * worst['ratio']:.0f}% of the "
                                       f"{worst['expected_gbps']:.3g} GB/s the topology expects "
                                       f"(bar {100 * th.expected_fraction:.0f}%): a fleet-wide shortfall (settings, "
                                       "firmware, routing), not one component"
                                       + ("; every leaf's cross-leaf paths read low while paths inside leaves do "
                                          "not: the spine level (spines, their links or routing), not hosts"
                                          if worst["class"] == "inter-leaf" and not any(
                                              e["failed"] for e in res.expected if e["class"] == "intra-leaf")
                                          else "")})


def _attach_identifiers(verdicts: list[Verdict], idents: dict) -> None:
    """Physical identifiers the inputs gave (GPU bus id/PCI address and model from nccl-tests and nvbandwidth)."""
    for v in verdicts:
        host = v.identifiers.get("host")
        gpu = v.identifiers.get("gpu")
        known = idents.get(host, {}) if host else {}
        if gpu is not None and gpu in known.get("gpus", {}):
            for key, value in known["gpus"][gpu].items():
                v.identifiers.setdefault(key, value)


def load_baseline(path: str) -> dict:
    """A baseline: JSON written by `analyze --format json`, or a results directory/tool output to analyze."""
    p = Path(path)
    if p.suffix == ".json" and p.exists():
        from fabricbench import limits
        from fabricbench.analyze.input_models import check_baseline

        doc = limits.load_json(p, "--baseline")  # regular file, bounded, depth-limited
        if isinstance(doc, dict) and "fleet" in doc:
            return check_baseline(doc, f"--baseline {path}")  # every median finite and positive
    from fabricbench.analyze.importers import load

    base = analyze(load(path))
    return {"fleet": base.fleet, "nodes": base.node_levels}


def _baseline_stage(baseline: dict, th: Thresholds, res: Analysis) -> None:
    ref = {(r["class"], int(r["size"])): r["median_gbps"] for r in baseline.get("fleet", []) if "class" in r}
    drop = -math.log(1 - th.baseline_drop)
    compared = 0
    for row in res.fleet:
        b = ref.get((row["class"], int(row["size"])))
        if not b:
            continue
        compared += 1
        change = math.log(row["median_gbps"] / b)
        if change < -drop:
            res.cluster.append({"what": f"{row['class']} paths, {row['size']} B", "basis": "baseline", "failed": True,
                                "summary": f"fleet median {row['median_gbps']:.3g} GB/s is {pct(change):.1f}% below the "
                                           f"baseline's {b:.3g} GB/s (SuperBench-style rule: more than "
                                           f"{100 * th.baseline_drop:.0f}% is a regression)"})
    if not compared:
        res.notes.append("baseline: no path class and size in common with these results; not compared")
    nodes = baseline.get("nodes") or {}
    for host, lv in res.node_levels.items():
        b = nodes.get(host)
        if not b:
            continue
        for side in ("send", "recv"):
            change = lv[side] - float(b.get(side, 0.0))
            if change < -drop and lv[side] > -th.rel:  # not already a fleet verdict
                res.verdicts.append(Verdict(
                    component=host, kind="nic", severity="minor",
                    confidence=confidence(-change, drop, max(th.min_spread, 0.01), lv[f"{side}_n"], cap=0.8),
                    deficit_pct=pct(change), basis="baseline", hosts=[host],
                    summary=f"{host} {side} term fell {pct(change):.1f}% relative to the fleet since the baseline "
                            f"(rule: {100 * th.baseline_drop:.0f}%)",
                    evidence=[f"{side} term now {pct(lv[side]):.1f}%, baseline {pct(float(b.get(side, 0))):.1f}%"],
                    retest=[f"a pairwise sweep including {host}"], identifiers={"host": host}))


def analyze(ds: Dataset, fabric: Fabric | None = None, baseline: dict | None = None,
            thresholds: Thresholds | None = None) -> Analysis:
    """Run every evidence source (fabricbench/analyze/sources/), then weigh all evidence into verdicts."""
    from fabricbench.analyze.evidence import Context, sources
    from fabricbench.analyze.weigh import weigh

    th = thresholds or Thresholds()
    res = Analysis(thresholds=th, topology=fabric.name if fabric else None)
    res.caveats.extend(ds.caveats)
    res.counts.update(ds.counts())
    if ds.empty() and not ds.extra:
        res.inconclusive.append("no measurements in the inputs (empty results)")
        return res
    if fabric is not None:
        res.notes.extend(fabric.notes)
    ctx = Context(dataset=ds, fabric=fabric, baseline=baseline, thresholds=th, res=res)
    for src in sources():
        found = src.run(ctx) or []
        res.evidence.extend(found)
    verdicts, retests = weigh(res.evidence)
    res.verdicts.extend(verdicts)
    res.retests.extend(retests)
    if not res.judged and not res.inconclusive:
        res.inconclusive.append("nothing in the inputs was compared with anything (no fleet of 3 or more, no "
                                "baseline, no topology expectation): nothing judged")
    res.hosts = sorted((set(res.hosts) | ds.hosts() | ds.expected_hosts) - ds.launchers)
    _attach_identifiers(res.verdicts, ds.identifiers)
    res.verdicts.sort(key=lambda v: (-v.confidence, -v.deficit_pct))
    return res
