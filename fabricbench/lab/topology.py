"""The lab's own topology file (`<state_dir>/topology.yaml`), for the analyzer.

It follows fabricbench's topology schema (fabricbench/topology/schema.py, schema_version 1): one node type
`labnode` (no GPUs, one rank per node, one NIC `eth0` at the link rate, link layer `emulated`) and a fabric of
kind `tree` whose switches are the lab's bridges: `spine` above `leaf1..leafL`, each leaf listing its nodes.
Uplinks are unshaped (non-blocking: `uplink_rate` omitted) unless `lab up --oversubscription R:1` or
`--uplink-rate` shaped them: then each leaf switch carries its `uplink_rate` (the tc rate of its uplink, each
direction), so the analyzer knows what a round's cross-leaf pairs can share. The file describes the
healthy lab: degradations are the ground truth an analysis must find, and `fabricbench lab status --json`
reports them separately.
"""

from __future__ import annotations

from fabricbench.lab.plan import Plan

UNSHAPED_NIC_RATE = "9 Gb/s"  # what an unshaped veth pair through Linux bridges carries here (REFERENCE.md)


def rate_text(bps: int | None) -> str:
    """bits/s -> the schema's rate text ('400 Mb/s', '1 Gb/s')."""
    if bps is None:
        return UNSHAPED_NIC_RATE
    if bps >= 10**9:
        return f"{bps / 10**9:g} Gb/s"
    return f"{bps / 10**6:g} Mb/s"


def topology_dict(plan: Plan) -> dict:
    rate = rate_text(plan.link_rate_bps)
    switches = [{"name": "spine", "switches": [leaf.name for leaf in plan.leaves]}]
    for leaf in plan.leaves:
        switch = {"name": leaf.name, "nodes": list(leaf.nodes)}
        if leaf.uplink_rate_bps:
            switch["uplink_rate"] = rate_text(leaf.uplink_rate_bps)
        switches.append(switch)
    uplinks = "uplinks unshaped (non-blocking)"
    if any(leaf.uplink_rate_bps for leaf in plan.leaves):
        uplinks = "uplinks shaped to " + ", ".join(f"{leaf.name} {rate_text(leaf.uplink_rate_bps)}"
                                                   for leaf in plan.leaves if leaf.uplink_rate_bps)
        if plan.oversubscription:
            uplinks += f" ({plan.oversubscription:g}:1 oversubscribed)"
    return {
        "schema_version": 1,
        "name": f"fabricbench-lab-{plan.lab_id}",
        "description": (f"fabricbench lab {plan.lab_id}: {len(plan.nodes)} nodes (network namespaces on one "
                        f"machine) on {len(plan.leaves)} leaf bridge(s) under one spine bridge; node links "
                        f"shaped by tc to {rate}, {uplinks}"),
        "sources": ["fabricbench lab up (tc htb rates on every node veth)"],
        "node_types": {
            "labnode": {
                "description": "a network namespace with its own slurmd; CPU ranks (gloo, MPI) only",
                "gpus": {"count": 0},
                "ranks_per_node": 1,
                "nics": [{"name": "eth0", "rate": rate, "link_layer": "emulated"}],
            }
        },
        "fabric": {
            "kind": "tree",
            "node_type": "labnode",
            "link_layer": "emulated",
            "link_rate": rate,
            "switches": switches,
        },
    }


def render_yaml(plan: Plan) -> str:
    import yaml

    header = ("# fabricbench lab topology (fabricbench topology schema v1), written by 'fabricbench lab up'.\n"
              "# Healthy state only: current degradations are in 'fabricbench lab status --json'.\n")
    return header + yaml.safe_dump(topology_dict(plan), sort_keys=False, default_flow_style=False)
