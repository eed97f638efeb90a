"""Opt-in Slurm draining of hosts named by confident verdicts (`analyze --drain [--apply]`).

Only a host-side verdict (node, nic, gpu, nvlink) that rests on measurements of its own can drain a host: a
verdict made only from a host list (a host named in run.json with no measurement, basis "data") never does,
and neither does a host that is not among the measured hosts. Each host then goes through
fabricbench.slurm.nodes.drain: one plain node name, exactly one Slurm node, someone else's reason never
overwritten, the reason re-read right before the update, the printed command shell-quoted.
"""

from __future__ import annotations

import re

from fabricbench.slurm import nodes

HOST_KINDS = ("node", "nic", "gpu", "nvlink")
PREFIX = nodes.OWNED_PREFIX


def reason(v) -> str:
    """The owned drain reason for verdict `v`: printable, no quotes, bounded."""
    text = f"{PREFIX} {v.kind} {v.component} {v.deficit_pct:.0f}% low (conf {v.confidence:.2f})"
    text = re.sub(r"[^A-Za-z0-9 .,:%()_{}/+-]", "", text)
    return text[:nodes.MAX_REASON]


def drainable_host(v, min_confidence: float) -> str | None:
    """The one host verdict `v` accuses, when it may drain it; None otherwise."""
    if v.kind not in HOST_KINDS or not v.confidence >= min_confidence:
        return None
    if getattr(v, "basis", "") == "data" or not v.measurements and not v.evidence:
        return None  # a verdict with no measurements of its own (e.g. a host only listed in run.json)
    if hasattr(type(v), "drainable_host"):  # the analyzer's own rule: a measured host's own hardware only
        host = v.drainable_host
    else:
        host = (v.identifiers or {}).get("host") or (v.hosts[0] if len(v.hosts) == 1 else None)
    return host if isinstance(host, str) and host else None


def plan(verdicts, measured_hosts, min_confidence: float = 0.9) -> list[tuple[str, str]]:
    chosen: dict[str, str] = {}
    for v in verdicts:
        host = drainable_host(v, min_confidence)
        if host and host not in chosen:
            chosen[host] = reason(v)
    return list(chosen.items())


def drain(verdicts, measured_hosts, apply: bool = False, min_confidence: float = 0.9, echo=print,
          scontrol: str | None = None) -> list[nodes.Outcome]:
    """Print (and with apply run) one shell-quoted scontrol line per drainable host; the outcomes, in order."""
    todo = plan(verdicts, measured_hosts, min_confidence)
    echo(f"# fabricbench drain ({'applied' if apply else 'printed only'}): one shell-quoted scontrol line per node; "
         "lines starting with '#' are comments")
    if not todo:
        echo(f"# drain: no host-side verdict with its own measurements at confidence >= {min_confidence}")
        return []
    if apply:
        nodes._scontrol(scontrol)  # --apply without scontrol is bad input, before anything is printed
    measured = set(measured_hosts or ())
    return [nodes.drain(host, why, apply=apply, echo=echo, measured_hosts=measured, scontrol=scontrol)
            for host, why in todo]
