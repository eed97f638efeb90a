"""What every human-facing report says the same way: the one-line-per-finding summary, sizes and identifiers in
human form, the report's provenance (when, which fabricbench, which inputs)."""

from __future__ import annotations

import datetime as _dt
import math
import os


def human_size(n) -> str:
    """16777216 -> '16 MiB', 1536 -> '1.5 KiB', 8 -> '8 B' (nccl-tests sizes are powers of two)."""
    try:
        n = int(n)
    except (TypeError, ValueError):
        return str(n)
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.3g} {unit}"
    return f"{n} B"


def human_ids(ident: dict) -> str:
    """{'host': 'cn001', 'nic': 'mlx5_0', 'gpu': 3, 'bus_id': '0x1b'} -> 'host cn001, NIC mlx5_0, GPU 3 (bus 0x1b)'."""
    if not ident:
        return ""
    parts = []
    if ident.get("host"):
        parts.append(f"host {ident['host']}")
    if ident.get("nic"):
        parts.append(f"NIC {ident['nic']}" + (f" port {ident['port']}" if ident.get("port") not in (None, 1) else ""))
    if ident.get("gpu") is not None:
        bus = f" (bus {ident['bus_id']})" if ident.get("bus_id") else ""
        parts.append(f"GPU {ident['gpu']}{bus}")
    if ident.get("gpus"):
        parts.append("GPUs " + " and ".join(str(g) for g in ident["gpus"]))
    if ident.get("name"):
        parts.append(str(ident["name"]))
    for key, value in ident.items():
        if key not in ("host", "nic", "port", "gpu", "gpus", "bus_id", "name") and value not in (None, "", [], {}):
            if isinstance(value, (list, tuple)):
                value = ", ".join(str(x) for x in value)
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def below(v) -> str:
    d = getattr(v, "deficit_pct", 0.0) or 0.0
    if d >= 99.5:
        return "down"
    return f"{d:.0f}% below" if d >= 0.5 else "fact"  # a reading true by itself (#wrong, a port down)


BASIS_WORDS = {"fleet": "fleet", "baseline": "baseline", "topology": "topology", "data": "data",
               "group": "other groups", "nothing": "nothing"}


def summary_lines(res) -> list[dict]:
    """One row per finding, worst first: {status, what, below, vs, conf, do, style}. Verdicts, then the cluster
    findings that failed; said in the words an operator acts on at 3 a.m."""
    rows = []
    m = res.thresholds.min_confidence
    for v in sorted(res.verdicts, key=lambda v: (-(v.confidence >= m), -v.confidence, -v.deficit_pct)):
        fault = v.confidence >= m
        rows.append({"status": "FAULT" if fault else "maybe", "what": f"{v.component} ({v.kind})",
                     "what_short": v.component,
                     "below": below(v), "vs": BASIS_WORDS.get(v.basis, v.basis), "conf": f"{v.confidence:.2f}",
                     "do": _action(v.retest[0]) if v.retest else "rerun the measurement",
                     "style": {"critical": "bold red", "major": "red"}.get(v.severity, "yellow") if fault else "dim"})
    for c in res.cluster:
        if not c.get("failed"):
            continue
        ratio = next((e["ratio"] for e in res.expected if e.get("class") == c.get("what")), None)
        rows.append({"status": "FAULT", "what": c.get("what", "cluster"), "what_short": c.get("what", "cluster"),
                     "below": f"{100 * (1 - ratio):.0f}% below" if ratio is not None and math.isfinite(ratio) else "",
                     "vs": BASIS_WORDS.get(c.get("basis", ""), c.get("basis", "")), "conf": "",
                     "do": _cluster_action(c), "style": "bold red"})
    return rows


def _action(retest: str) -> str:
    """Core's retests name pairs ('a<->b'); say them as what to run."""
    return f"retest {retest}" if "<->" in retest or "->" in retest.split(" ")[0] else retest


def _cluster_action(c: dict) -> str:
    text = c.get("summary", "")
    if "TCP sockets" in text:
        return "fix NCCL's network (RDMA driver, NCCL_IB_DISABLE/NCCL_NET, plugin), then rerun"
    if "between hosts" in text or c.get("bound") == "the NICs":
        return "pairwise sweep of these hosts (fabricbench sweep pairwise) to find the NIC or link"
    if c.get("bound", "").startswith("the NVLink"):
        return "nvbandwidth / fabricbench gpu on each host to find the GPU or NVSwitch"
    if c.get("basis") == "baseline":
        return "compare settings and firmware with the baseline run"
    return "see the finding below"


def provenance(res) -> dict:
    from fabricbench import __version__

    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return {"generated": now.isoformat().replace("+00:00", "Z"), "version": __version__,
            "inputs": list(getattr(res, "inputs", []) or []), "topology": res.topology,
            "host": os.uname().nodename if hasattr(os, "uname") else ""}


def measured_words(res) -> str:
    """'12 hosts: 1,320 pair measurements, 160 collective results' (no internal counter names)."""
    c = res.counts or {}
    words = {"pairs": "pair measurements", "pair_rows": "pair measurements", "gpus": "GPU-pair measurements",
             "nics": "NIC measurements", "groups": "collective results"}
    seen, parts = set(), []
    for key, label in words.items():
        n = c.get(key)
        if n and label not in seen:
            seen.add(label)
            parts.append(f"{n:,} {label}")
    extra = []
    if getattr(res, "link_state", None):
        extra.append(f"{len(res.link_state)} NIC ports' link state")
    if getattr(res, "nccl", None):
        extra.append(f"{len(res.nccl)} NCCL log(s)")
    return f"{len(res.hosts)} host{'s' if len(res.hosts) != 1 else ''}: " + (", ".join(parts + extra) or "no measurements")
