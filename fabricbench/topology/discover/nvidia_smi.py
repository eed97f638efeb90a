"""`nvidia-smi topo -m` text: GPUs, NVLink counts (NV#), GPU↔NIC PCIe relations, NUMA affinity.

Tolerates TABs or spaces, ANSI escapes, indentation, old mlx5_N column labels or NICn + 'NIC Legend', a missing
'GPU NUMA ID' column, and output cut short (by `head` or a job script): it reads what is there and says what is not.
"""

from __future__ import annotations

import re

from fabricbench.errors import UsageError
from fabricbench.topology.discover.facts import HostFacts, NicFact, Report

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RELATIONS = {"X", "PIX", "PXB", "PHB", "NODE", "SYS", "SOC", "NV#"}
_NV = re.compile(r"^NV(\d{1,3})$")
_MAX_DIRECT_LINKS = 18  # no GPU has more NVLinks than this: more in all means the links go through NVSwitch


def _label_kind(label: str) -> str | None:
    if re.fullmatch(r"GPU\d{1,4}", label):
        return "gpu"
    if re.fullmatch(r"NIC\d{1,4}", label) or re.fullmatch(r"(mlx\d+_\d+|[a-z][a-z0-9_]*\d)", label):
        return "nic"
    return None


_GLUED_CELLS = re.compile(r"(?:X|NV\d{1,3}|PIX|PXB|PHB|NODE|SYS|SOC)+")
_GLUED_LABELS = re.compile(r"(?:GPU\d{1,4}|NIC\d{1,4}|mlx\d+_\d+)+")


def _unglue(tokens: list[str], pattern: re.Pattern, piece: str) -> list[str]:
    """Split cells that lost their separator in a log ('NV18NV18PXB' → NV18, NV18, PXB)."""
    out = []
    for tok in tokens:
        if pattern.fullmatch(tok) and not _NV.match(tok) and tok not in _RELATIONS and not _label_kind(tok):
            out.extend(re.findall(piece, tok))
        else:
            out.append(tok)
    return out


def parse(text: str, source: str = "nvidia-smi topo -m") -> tuple[HostFacts, Report]:
    report = Report()
    text = _ANSI.sub("", text.replace("\r", ""))
    lines = text.split("\n")
    header_at = None
    labels: list[str] = []
    for i, line in enumerate(lines):
        tokens = _unglue(line.split(), _GLUED_LABELS, r"GPU\d{1,4}|NIC\d{1,4}|mlx\d+_\d+")
        if tokens and tokens[0] == "GPU0" and "X" not in tokens[:2]:
            cut = []
            for tok in tokens:
                if tok in ("CPU", "NUMA", "GPU") or not _label_kind(tok):
                    break
                cut.append(tok)
            if cut:
                header_at, labels = i, cut
                break
    if header_at is None:
        raise UsageError(f"{source}: no `nvidia-smi topo -m` matrix (a header line starting with GPU0) found")
    if len(set(labels)) != len(labels):
        raise UsageError(f"{source}: the matrix header repeats a column label")
    rows: dict[str, list[str]] = {}
    tails: dict[str, list[str]] = {}
    legend: dict[str, str] = {}
    for line in lines[header_at + 1:]:
        tokens = line.split()
        if not tokens:
            continue
        match = re.fullmatch(r"(NIC\d+):\s*(\S+)", line.strip())
        if match:
            legend[match.group(1)] = match.group(2)
            continue
        if tokens[0] in labels and tokens[0] not in rows:
            tokens = tokens[:1] + _unglue(tokens[1:], _GLUED_CELLS, r"X|NV\d{1,3}|PIX|PXB|PHB|NODE|SYS|SOC")
            cells = tokens[1:1 + len(labels)]
            if len(cells) < len(labels):
                report.unread.append(f"{source}: row {tokens[0]} is cut short ({len(cells)} of {len(labels)} cells)")
            rows[tokens[0]] = cells
            tails[tokens[0]] = tokens[1 + len(labels):]
    gpu_labels = [x for x in labels if _label_kind(x) == "gpu"]
    nic_labels = [x for x in labels if _label_kind(x) == "nic"]
    missing = [x for x in labels if x not in rows]
    if missing:
        report.unread.append(f"{source}: output ends early, no rows for {', '.join(missing)} "
                             "(read from the columns of the rows present)")
    if not rows:
        raise UsageError(f"{source}: the matrix header is there but no row follows (output truncated?)")

    def rel(a: str, b: str) -> str | None:
        for x, y in ((a, b), (b, a)):
            cells = rows.get(x)
            if cells is not None:
                j = labels.index(y)
                if j < len(cells):
                    return cells[j]
        return None

    unknown = sorted({c for cells in rows.values() for c in cells if c not in _RELATIONS and not _NV.match(c)})
    if unknown:
        report.unread.append(f"{source}: unknown matrix entries {', '.join(unknown[:5])} (ignored)")
    facts = HostFacts(source=source, gpus=len(gpu_labels))
    n = len(gpu_labels)
    # NVLink
    pair_links: dict[tuple[int, int], int] = {}
    for a in range(n):
        for b in range(a + 1, n):
            r = rel(gpu_labels[a], gpu_labels[b])
            m = _NV.match(r or "")
            if m:
                pair_links[a, b] = int(m.group(1))
    if pair_links:
        per_gpu = [sum(v for k, v in pair_links.items() if g in k) for g in range(n)]
        counts = set(pair_links.values())
        full = len(pair_links) == n * (n - 1) // 2
        if full and len(counts) == 1 and max(per_gpu) > _MAX_DIRECT_LINKS:
            facts.nvswitch = True
            facts.nvlink_links_per_gpu = counts.pop()
        else:
            facts.nvswitch = False
            facts.nvlink_pairs = pair_links
            facts.nvlink_links_per_gpu = max(per_gpu)
        report.read.append(f"{source}: {n} GPUs, NVLink {'through NVSwitch' if facts.nvswitch else 'direct'} "
                           f"({facts.nvlink_links_per_gpu} links per GPU)")
    else:
        report.read.append(f"{source}: {n} GPUs, no NVLink between them")
    if n == 1:
        report.unread.append(f"{source}: only one GPU is visible (a Slurm/cgroup allocation?): NVLink between "
                             "GPUs cannot be read from this output")
    # NUMA affinity per GPU: after the CPU affinity cell
    for g in gpu_labels:
        tail = tails.get(g, [])
        numa = None
        if len(tail) >= 2 and re.fullmatch(r"\d+", tail[1]):
            numa = int(tail[1])
        facts.gpu_numa.append(numa)
    if any(x is None for x in facts.gpu_numa):
        report.unread.append(f"{source}: NUMA affinity missing or N/A for some GPUs")
    # NICs
    for label in nic_labels:
        name = legend.get(label, label)
        nic = NicFact(name=name)
        for g, glabel in enumerate(gpu_labels):
            if rel(glabel, label) in ("PIX", "PXB"):
                nic.gpus.append(g)
        facts.nics.append(nic)
    if nic_labels and any(re.fullmatch(r"NIC\d+", x) for x in nic_labels) and not legend:
        report.unread.append(f"{source}: no 'NIC Legend' (NICn → device names); NICs keep their NICn labels")
    # PCIe switches: GPUs and NICs joined by PIX/PXB
    parent = {x: x for x in labels}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if rel(a, b) in ("PIX", "PXB"):
                parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for x in labels:
        groups.setdefault(find(x), []).append(x)
    k = 0
    for members in groups.values():
        gpus = [gpu_labels.index(x) for x in members if x in gpu_labels]
        nics = [legend.get(x, x) for x in members if x in nic_labels]
        if len(members) > 1 and gpus:
            facts.pcie_switches.append({"name": f"pcisw{k}", "gpus": gpus, "nics": nics})
            k += 1
    known = [x for x in facts.gpu_numa if x is not None]
    if known:
        facts.numa_nodes = max(known) + 1
        for nic, label in zip(facts.nics, nic_labels):
            for g, glabel in enumerate(gpu_labels):
                if rel(glabel, label) in ("PIX", "PXB", "PHB", "NODE") and facts.gpu_numa[g] is not None:
                    nic.numa = facts.gpu_numa[g]
                    break
    report.unread.append(f"{source}: gives no NVLink generation, PCIe generation/width or NIC speeds")
    return facts, report
