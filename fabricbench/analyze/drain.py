"""Opt-in Slurm draining of hosts named by confident verdicts (LBNL NHC convention).

For each host: read `scontrol show node HOST` first; a node already drained (or down) with a reason that does
not start with our prefix was drained by someone else and is left alone. Otherwise print (and with apply=True
run) `scontrol update NodeName=HOST State=DRAIN Reason="fabricbench: ..."`. Only host-side kinds drain a host
(node, nic, gpu, nvlink); a link, uplink or switch is not one host's fault.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

from fabricbench.errors import UsageError

PREFIX = "fabricbench:"
HOST_KINDS = ("node", "nic", "gpu", "nvlink")


def _reason(v) -> str:
    text = f"{PREFIX} {v.kind} {v.component} {v.deficit_pct:.0f}% low (conf {v.confidence:.2f})"
    return re.sub(r"[\"'\\\n]", "", text)[:120]


def show_node(host: str, scontrol: str) -> tuple[str, str] | None:
    try:
        out = subprocess.run([scontrol, "show", "node", host], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UsageError(f"scontrol show node {host}: {err}") from None
    if out.returncode != 0:
        return None
    state = re.search(r"\bState=(\S+)", out.stdout)
    reason = re.search(r"\bReason=(.*?)(?:\s+\w+=|\s*$)", out.stdout, re.S)
    return (state.group(1) if state else "", (reason.group(1).strip() if reason else "").strip())


def plan(verdicts, min_confidence: float = 0.9) -> list[tuple[str, str]]:
    chosen: dict[str, str] = {}
    for v in verdicts:
        if v.kind not in HOST_KINDS or v.confidence < min_confidence:
            continue
        host = (v.identifiers or {}).get("host") or (v.hosts[0] if len(v.hosts) == 1 else None)
        if host and host not in chosen:
            chosen[host] = _reason(v)
    return list(chosen.items())


def drain(verdicts, apply: bool = False, min_confidence: float = 0.9, echo=print) -> int:
    """Print (and run) the drain commands; returns how many nodes were (or would be) drained."""
    scontrol = shutil.which("scontrol")
    todo = plan(verdicts, min_confidence)
    if not todo:
        echo(f"# drain: no host-side verdict at confidence >= {min_confidence}")
        return 0
    if apply and not scontrol:
        raise UsageError("--drain --apply: scontrol is not on PATH")
    count = 0
    for host, reason in todo:
        if scontrol:
            info = show_node(host, scontrol)
            if info is None:
                echo(f"# skip {host}: scontrol does not know this node")
                continue
            state, current = info
            if current and current not in ("none", "(null)") and not current.startswith(PREFIX):
                echo(f"# skip {host}: already has a reason set by someone else ({current}); not overwritten")
                continue
        else:
            echo(f"# {host}: scontrol not on PATH, current reason not checked")
        cmd = [scontrol or "scontrol", "update", f"NodeName={host}", "State=DRAIN", f"Reason={reason}"]
        echo(f"scontrol update NodeName={host} State=DRAIN Reason={shlex.quote(reason) if False else chr(34) + reason + chr(34)}")
        if apply:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if out.returncode != 0:
                echo(f"# failed to drain {host}: {' '.join((out.stderr or out.stdout).split())[:200]}")
                continue
        count += 1
    return count
