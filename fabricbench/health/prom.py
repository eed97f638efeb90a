"""The Prometheus textfile-collector file (`--textfile DIR`): node_exporter reads `DIR/*.prom`.

Written through prometheus_client's own registry and `write_to_textfile` (a temporary file in the same
directory, then a rename: the collector never reads half a file). Names follow Prometheus' rules: an
application prefix, base units (bandwidth in bytes per second), 0/1 for states. Alert on staleness with
node_exporter's `node_textfile_mtime_seconds{file="fabricbench_health.prom"}`.

Metrics (labels):
- fabricbench_health_last_run_timestamp_seconds{} - when the last run finished (Unix time)
- fabricbench_health_run_duration_seconds{} - how long it took
- fabricbench_health_nic_bandwidth_bytes_per_second{node, nic, direction} - median over partners (tx | rx)
- fabricbench_health_uplink_bandwidth_bytes_per_second{leaf} - median cross-leaf pair bandwidth
- fabricbench_health_collective_busbw_bytes_per_second{op, subset} - busbw of a collective over a subset (leaf,
  all, or a group of nodes) in the last run (nccl-tests accounting)
- fabricbench_health_pair_bandwidth_bytes_per_second{src, dst} - only pairs that are not ok (bounded cardinality)
- fabricbench_health_component_state{component, kind, node, metric, state} - 1 for the component's current state
- fabricbench_health_node_check{node, check} - 1 pass/warn, 0 fail (unknown is absent, never 1)
- fabricbench_health_tuning_gain_holds{tuning} - `--verify-tuning`: 1 every claimed gain held, 0 one is gone
  (absent when it could not be verified)
- fabricbench_health_tuning_speedup_ratio{tuning, op, size_bytes, bound} - default/tuned time now, bound =
  estimate | ci_low | ci_high (95% interval)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

FILE_NAME = "fabricbench_health.prom"
STATES = ("new", "ok", "suspect", "regressed", "flapping", "recovered", "failed")


def write(directory, states: pd.DataFrame, latest: pd.DataFrame, finished_ts: float, duration_s: float,
          tunings: list[dict] | None = None) -> Path:
    """`states`: states.compute output; `latest`: the measurements of the run just done."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    Gauge("fabricbench_health_last_run_timestamp_seconds", "When the last health run finished (Unix time).",
          registry=reg).set(finished_ts)
    Gauge("fabricbench_health_run_duration_seconds", "Wall time of the last health run.", registry=reg).set(duration_s)
    nic = Gauge("fabricbench_health_nic_bandwidth_bytes_per_second", "Median bandwidth of a node's NIC over its "
                "partners in the last sweep.", ["node", "nic", "direction"], registry=reg)
    up = Gauge("fabricbench_health_uplink_bandwidth_bytes_per_second", "Median cross-leaf pair bandwidth through a "
               "leaf's uplinks in the last sweep.", ["leaf"], registry=reg)
    coll = Gauge("fabricbench_health_collective_busbw_bytes_per_second", "Bus bandwidth of a collective over a subset "
                 "of the nodes in the last run (nccl-tests accounting).", ["op", "subset"], registry=reg)
    pair = Gauge("fabricbench_health_pair_bandwidth_bytes_per_second", "Bandwidth of a directed pair whose state is "
                 "not ok (only those, to bound cardinality).", ["src", "dst"], registry=reg)
    state = Gauge("fabricbench_health_component_state", "1 for the component's current health state.",
                  ["component", "kind", "node", "metric", "state"], registry=reg)
    check = Gauge("fabricbench_health_node_check", "1 if the node check passed (or only warned), 0 if it failed.",
                  ["node", "check"], registry=reg)
    for r in latest.itertuples(index=False):
        if r.value is None or pd.isna(r.value):
            continue
        if r.component_kind == "nic" and r.metric in ("tx_bytes_per_second", "rx_bytes_per_second"):
            nic.labels(r.node, r.component.split("/", 1)[1], r.metric[:2]).set(r.value)
        elif r.component_kind == "uplink":
            up.labels(r.component.split("/")[0]).set(r.value)
        elif r.component_kind == "collective" and r.metric == "busbw_bytes_per_second":
            _, op, subset = r.component.split(":", 2)
            coll.labels(op, subset).set(r.value)
        elif r.metric == "check_pass" and r.component_kind == "node":
            check.labels(r.node, r.component.split("check:", 1)[-1]).set(r.value)
    if not states.empty:
        bad = states[(states["component_kind"] == "pair") & ~states["state"].isin(["ok", "new"])]
        for r in bad.itertuples(index=False):
            if pd.notna(r.value):
                src, dst = r.component.split("/")[0].split("->")
                pair.labels(src, dst).set(r.value)
        shown = states[states["component_kind"] != "pair"]
        shown = pd.concat([shown, bad])
        for r in shown.itertuples(index=False):
            node = r.node if isinstance(r.node, str) else ""  # uplinks, collectives: no node (NaN in the frame)
            state.labels(r.component, r.component_kind, node, r.metric, r.state).set(1)
    if tunings:
        holds = Gauge("fabricbench_health_tuning_gain_holds", "1 if every gain a fabricbench tune directory claims "
                      "still held in the last health run, 0 if one is gone.", ["tuning"], registry=reg)
        ratio = Gauge("fabricbench_health_tuning_speedup_ratio", "Speed-up default/tuned measured by the last "
                      "health run's tune verify, with its 95% interval bounds.",
                      ["tuning", "op", "size_bytes", "bound"], registry=reg)
        for t in tunings:
            name = Path(t["tuning"]).name
            if t["status"] in ("held", "gone"):
                holds.labels(name).set(1 if t["status"] == "held" else 0)
            for c in t["checks"]:
                for bound, key in (("estimate", "speedup"), ("ci_low", "ci_low"), ("ci_high", "ci_high")):
                    if c[key] is not None and c[key] == c[key] and abs(c[key]) != float("inf"):
                        ratio.labels(name, c["op"], str(c["size_bytes"]), bound).set(c[key])
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE_NAME
    write_to_textfile(str(path), reg)
    return path
