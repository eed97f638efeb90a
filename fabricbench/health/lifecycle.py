"""Drain and resume decisions, on top of fabricbench.slurm.nodes (which owns the Slurm side: one plain node
name, the owned reason prefix, re-reading the node right before each update, never overwriting another reason).

What this module adds is *when*:
- a fabric finding drains a node only after k of the last m runs confirmed it, the confirmations together
  involving at least k different partners (one bad partner, or one noisy night, never drains a node);
- a node check drains at once (a check already retried itself), and only a node-check drain is lifted by a
  passing node check; a fabric drain is lifted only by a fabric retest that passes;
- each drain reason says which kind it is: '<prefix> check: ...' or '<prefix> fabric: ...'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from fabricbench.slurm import nodes as slurm_nodes

CHECK_TAG = " check: "
FABRIC_TAG = " fabric: "


@dataclass
class Confirmation:
    node: str
    runs: list[str] = field(default_factory=list)  # runs in which the node read low against >= 2 partners
    partners: set[str] = field(default_factory=set)
    detail: str = ""


def reason(tag: str, text: str) -> str:
    body = slurm_nodes.printable(" ".join(text.split()), slurm_nodes.MAX_REASON - len(slurm_nodes.OWNED_PREFIX) - 12)
    return (slurm_nodes.OWNED_PREFIX + tag + body)[: slurm_nodes.MAX_REASON]


def confirmations(pairs: pd.DataFrame, node: str, runs: list[str], drop: float) -> Confirmation:
    """Runs (among `runs`) in which `node`'s pairs, both directions, read below (1 - drop) x that run's median
    pair bandwidth against >= 2 different partners. `pairs`: history rows of component_kind 'pair'."""
    conf = Confirmation(node)
    for run in runs:
        r = pairs[pairs["run_id"] == run]
        if r.empty:
            continue
        ok = r[r["value"].notna()]
        if ok.empty:
            continue
        median = float(ok["value"].median())
        mine = r[(r["node"] == node) | (r["partner"] == node)]
        low = mine[mine["value"].isna() | (mine["value"] < (1.0 - drop) * median)]
        partners = set(low["partner"].where(low["node"] == node, low["node"]))
        if len(partners) >= 2:
            conf.runs.append(run)
            conf.partners |= partners
    conf.detail = f"low in {len(conf.runs)} run(s) against {len(conf.partners)} partner(s)"
    return conf


def should_drain(conf: Confirmation, k: int) -> bool:
    return len(conf.runs) >= k and len(conf.partners) >= k


def drain_fabric(node: str, why: str, *, apply: bool, echo, measured: set[str]):
    return slurm_nodes.drain(node, reason(FABRIC_TAG, why), apply=apply, echo=echo, measured_hosts=measured)


def drain_check(node: str, why: str, *, apply: bool, echo):
    return slurm_nodes.drain(node, reason(CHECK_TAG, why), apply=apply, echo=echo, measured_hosts={node})


def ours(node: str, tag: str) -> bool:
    """The node's current reason is fabricbench's and of this kind ('check' or 'fabric')."""
    info = slurm_nodes.node_info(node)
    return info is not None and slurm_nodes.owned(info.reason) and info.reason[len(slurm_nodes.OWNED_PREFIX):].startswith(tag)


def drained_by_us(candidates, tag: str) -> list[str]:
    out = []
    for node in candidates:
        try:
            if ours(node, tag):
                out.append(node)
        except Exception:  # noqa: BLE001 - a node we cannot read is simply not ours to touch
            continue
    return out


def resume(node: str, tag: str, *, apply: bool, echo):
    """Resume only if the reason is ours and of this kind; fabricbench.slurm.nodes re-checks the prefix."""
    if not ours(node, tag):
        return slurm_nodes.Outcome(node, "skipped", f"reason is not fabricbench's{tag.strip()} reason; not resumed")
    return slurm_nodes.resume(node, apply=apply, echo=echo)


def in_service(candidates, retest) -> tuple[list[str], list[tuple[str, str]]]:
    """Nodes a sweep job can run on: out-of-service nodes are left out (a job asking for them would wait
    forever), except the ones fabricbench drained and retests now."""
    keep, skipped = [], []
    for node in candidates:
        info = slurm_nodes.node_info(node)
        if info is None:
            skipped.append((node, "is not known to Slurm"))
        elif info.out_of_service and node not in retest:
            skipped.append((node, f"is {'+'.join(sorted(info.states))} ({slurm_nodes.printable(info.reason, 60) or 'no reason'}); left alone"))
        else:
            keep.append(node)
    return keep, skipped
