"""NVLink state per link against the topology (`nvidia-smi nvlink -s`, saved or run on a live node).

Output format (nvidia-smi since R450): a 'GPU 0: <name> (UUID: GPU-...)' line, then one
'Link N: <speed> GB/s' line per link, or 'Link N: <inactive>' for a link that is down.
"""

from __future__ import annotations

import re

from fabricbench.health.checks import CheckResult, Finding, Sources, register, tool_text, worst

_GPU = re.compile(r"^GPU (\d+):")
_LINK = re.compile(r"^\s*Link (\d+):\s*(.*?)\s*$")


def parse(text: str) -> dict[int, dict[int, float | None]]:
    """{gpu: {link: GB/s, or None when inactive}}."""
    out: dict[int, dict[int, float | None]] = {}
    gpu = None
    for line in text.splitlines():
        m = _GPU.match(line.strip())
        if m:
            gpu = int(m.group(1))
            out[gpu] = {}
            continue
        m = _LINK.match(line)
        if m and gpu is not None:
            speed = re.match(r"([0-9.]+)\s*GB/s", m.group(2))
            out[gpu][int(m.group(1))] = float(speed.group(1)) if speed else None
    return out


@register("nvlink", "NVLink link state and speed per link (nvidia-smi nvlink -s) against the topology")
def check(src: Sources) -> CheckResult:
    res = CheckResult("nvlink", "unknown", "")
    nt = src.node_type
    nv = getattr(nt, "nvlink", None) if nt is not None else None
    if nt is not None and nv is None:
        res.status, res.summary = "pass", "the topology's node type has no NVLink; nothing to check"
        res.compared_with = "topology (no NVLink)"
        return res
    want_links = nv.links_per_gpu if nv is not None else None
    want_rate = float(nv.link_rate) if nv is not None else None  # topology Rate: GB/s per direction
    res.compared_with = (f"topology: {want_links} links per GPU at {want_rate:g} GB/s" if nv is not None
                         else "nothing (no --topology): inactive links are still reported")
    text, how = tool_text(src.nvlink_status, src.live, ["nvidia-smi", "nvlink", "-s"])
    if text is None:
        res.not_checked.append(f"NVLink state: {how}")
        res.summary = "nothing could be checked: " + how
        return res
    links = parse(text)
    if not links:
        res.not_checked.append(f"NVLink state: no 'GPU N:' / 'Link N:' lines in {how}")
    for gpu, per in sorted(links.items()):
        for link, speed in sorted(per.items()):
            comp = f"gpu{gpu}/nvlink{link}"
            if speed is None:
                res.findings.append(Finding(comp, "nvlink", "fail", "inactive", "link_speed_bytes_per_second", 0.0,
                                            want_rate * 1e9 if want_rate else None))
            elif want_rate and speed < 0.95 * want_rate:
                res.findings.append(Finding(comp, "nvlink", "fail", f"{speed:g} GB/s, expected {want_rate:g} GB/s",
                                            "link_speed_bytes_per_second", speed * 1e9, want_rate * 1e9))
            else:
                res.findings.append(Finding(comp, "nvlink", "pass", f"{speed:g} GB/s", "link_speed_bytes_per_second",
                                            speed * 1e9, want_rate * 1e9 if want_rate else None))
        if want_links is not None and len(per) < want_links:
            res.findings.append(Finding(f"gpu{gpu}", "gpu", "fail", f"{len(per)} NVLinks listed, the topology "
                                        f"says {want_links}"))
    res.status = worst(f.status for f in res.findings)
    if nv is None and res.status == "pass":
        res.status = "unknown"  # all links up, but nothing said how many there should be
    bad = [f"{f.component} {f.detail}" for f in res.findings if f.status == "fail"]
    active = sum(1 for f in res.findings if f.kind == "nvlink" and f.status != "fail")
    res.summary = (f"{len(bad)} problem(s): " + "; ".join(bad[:6])) if bad else \
        f"{active} link(s) active on {len(links)} GPU(s) ({how})"
    return res
