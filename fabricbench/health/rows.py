"""Measurements into history rows (history.MEASUREMENT_SCHEMA): node check reports, and pairwise sweeps.

From a sweep (read through the analyzer's importer), at the largest size measured:
- pair: each directed pair's bandwidth (median over repeats), a failed pair as status 'failed'
- nic: each node's median send (tx) and receive (rx) bandwidth over its partners; one slow partner does not
  move a median, a slow NIC moves both (per rail: one series per rail)
- uplink: with a topology, each leaf's median cross-leaf bandwidth (pairs with one end on that leaf)
Bandwidth in bytes per second (base units, as the Prometheus names).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from fabricbench.health.history import SCHEMA_VERSION


def _row(run_id: str, ts: datetime, source: str, kind: str, component: str, node, metric: str, value, unit: str,
         status: str, detail: str = "", partner=None) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id, "run_ts": ts, "source": source,
            "component_kind": kind, "component": component, "node": node, "partner": partner, "metric": metric,
            "value": None if value is None or (isinstance(value, float) and not np.isfinite(value)) else float(value),
            "unit": unit, "status": status, "detail": detail}


def from_node_report(report, run_id: str, ts: datetime) -> list[dict]:
    rows = []
    node = report.node
    for r in report.results:
        rows.append(_row(run_id, ts, "check", "node", f"{node}/check:{r.name}", node, "check_pass",
                         {"pass": 1.0, "warn": 1.0, "fail": 0.0}.get(r.status), "ratio", r.status,
                         r.summary[:500]))
        for f in r.findings:
            comp = f"{node}/{f.component}" if f.component != "node" else node
            if f.metric:
                rows.append(_row(run_id, ts, "check", f.kind, comp, node, f.metric, f.value, _unit(f.metric),
                                 f.status, f.detail[:300]))
    return rows


def _unit(metric: str) -> str:
    for suffix, unit in (("_bytes_per_second", "bytes_per_second"), ("_lanes", "lanes"), ("_errors", "count")):
        if metric.endswith(suffix):
            return unit
    return "count" if metric in ("gpu_count", "xid", "remapped_rows_uncorrectable") else "number"


def pair_frame(results_dir) -> pd.DataFrame:
    """Directed pair rows (src, dst, rail, bw GB/s, status, error) at each pair's largest size."""
    from fabricbench.analyze.importers import load_all

    ds = load_all([str(results_dir)])
    pairs = ds.pairs
    if pairs.empty:
        return pairs
    top = pairs.groupby(["src", "dst"])["size"].transform("max")
    return pairs[pairs["size"] == top]


def from_sweep(results_dir, run_id: str, ts: datetime, leaf_of: dict[str, str] | None = None) -> list[dict]:
    pairs = pair_frame(results_dir)
    rows: list[dict] = []
    if pairs.empty:
        return rows
    pairs = pairs.assign(rail=pairs["rail"].where(pairs["rail"] >= 0, -1))
    ok = pairs[(pairs["status"] == "ok") & pairs["bw"].notna()]
    for (src, dst, rail), g in pairs.groupby(["src", "dst", "rail"]):
        good = g[(g["status"] == "ok") & g["bw"].notna()]
        comp = f"{src}->{dst}" + (f"/rail{rail}" if rail >= 0 else "")
        if len(good):
            rows.append(_row(run_id, ts, "sweep", "pair", comp, src, "bw_bytes_per_second",
                             float(good["bw"].median()) * 1e9, "bytes_per_second", "ok",
                             f"{len(good)} reading(s) at {int(g['size'].max())} B", partner=dst))
        else:
            err = next((e for e in g["error"] if isinstance(e, str) and e), "no measurement")
            rows.append(_row(run_id, ts, "sweep", "pair", comp, src, "bw_bytes_per_second", None,
                             "bytes_per_second", "failed", err[:300], partner=dst))
    for end, metric in (("src", "tx_bytes_per_second"), ("dst", "rx_bytes_per_second")):
        other = "dst" if end == "src" else "src"
        for (node, rail), g in ok.groupby([end, "rail"]):
            per_partner = g.groupby(other)["bw"].median()
            nic = f"{node}/nic" + (f"{rail}" if rail >= 0 else "")
            rows.append(_row(run_id, ts, "sweep", "nic", nic, node, metric, float(per_partner.median()) * 1e9,
                             "bytes_per_second", "ok", f"median over {len(per_partner)} partner(s): "
                             + ",".join(sorted(per_partner.index))[:300]))
    if leaf_of:
        src_leaf, dst_leaf = ok["src"].map(leaf_of), ok["dst"].map(leaf_of)
        cross = ok[src_leaf.notna() & dst_leaf.notna() & (src_leaf != dst_leaf)]
        for leaf in sorted(set(leaf_of.values())):
            mine = cross[(cross["src"].map(leaf_of) == leaf) | (cross["dst"].map(leaf_of) == leaf)]
            if len(mine):
                rows.append(_row(run_id, ts, "sweep", "uplink", f"{leaf}/uplink", None, "cross_leaf_bytes_per_second",
                                 float(mine["bw"].median()) * 1e9, "bytes_per_second", "ok",
                                 f"median of {len(mine)} cross-leaf pair reading(s)"))
    return rows
