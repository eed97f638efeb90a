"""NVIDIA XID errors written to the kernel log since the last run.

Lines look like `NVRM: Xid (PCI:0000:b7:00): 79, pid=..., GPU has fallen off the bus.` (dmesg, kern.log,
journalctl -k; any prefix). The position reached is remembered in the state directory (file identity, offset
and a digest of the file's first bytes): the next run reads only what is new, and an XID is reported once, so
a node does not stay failed until logrotate (a complaint about syslog-based checks). A rotated or truncated log
is read again from its start.

Which XIDs fail (hardware or driver faults that need the node out of service) and which only warn (usually
the application's own fault) follows NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from fabricbench.health.checks import CheckResult, Finding, Sources, register

_XID = re.compile(r"NVRM: Xid \(PCI:([0-9A-Fa-f:.]+)\): (\d+)(?:, (.*))?")
# Hardware/driver faults: DBE (48), micro-controller halts (61, 62), ECC page retirement / row remapping (63, 64),
# NVLink (74), fallen off the bus (79), high SBE rate (92), contained/uncontained ECC (94, 95), GSP (119, 120),
# unrecovered ECC (140), recovery action required (154).
FAIL_XIDS = {48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140, 154}
HEAD_BYTES = 256
STATE_FILE = "xid-position.json"


def _identity(path: Path) -> tuple[int, str]:
    with path.open("rb") as fh:
        head = fh.read(HEAD_BYTES)
    return os.stat(path).st_size, hashlib.sha256(head).hexdigest()


def new_text(path: Path, state_dir: Path | None) -> tuple[str, int, bool]:
    """(text since the remembered position, that position, whether the log was read from its start again)."""
    size, digest = _identity(path)
    start, restarted = 0, False
    state_path = state_dir / STATE_FILE if state_dir else None
    if state_path and state_path.exists():
        try:
            saved = json.loads(state_path.read_text()).get(str(path.resolve()), {})
        except (OSError, ValueError):
            saved = {}
        if saved.get("head") == digest and 0 <= saved.get("offset", -1) <= size:
            start = saved["offset"]
        elif saved:
            restarted = True
    with path.open("rb") as fh:
        fh.seek(start)
        data = fh.read(size - start)
    return data.decode(errors="replace"), start, restarted


def remember(path: Path, state_dir: Path, offset: int) -> None:
    from fabricbench.results import atomic_write_json

    _, digest = _identity(path)
    state_path = state_dir / STATE_FILE
    try:
        data = json.loads(state_path.read_text()) if state_path.exists() else {}
    except (OSError, ValueError):
        data = {}
    data[str(path.resolve())] = {"offset": offset, "head": digest}
    atomic_write_json(state_path, data)


def parse(text: str) -> list[tuple[str, int, str]]:
    return [(m.group(1).lower(), int(m.group(2)), (m.group(3) or "").strip()) for m in _XID.finditer(text)]


@register("xid", "NVIDIA XID errors in the kernel log since the last run (position remembered)")
def check(src: Sources) -> CheckResult:
    res = CheckResult("xid", "unknown", "", compared_with="no XID allowed; " + ", ".join(map(str, sorted(FAIL_XIDS)))
                      + " fail, others warn")
    path = src.kernel_log
    if path is None:
        res.not_checked.append("XID errors: no kernel log given (--kernel-log FILE: kern.log, or dmesg/journalctl -k "
                               "output)")
        res.summary = "nothing could be checked: no kernel log given"
        return res
    path = Path(path)
    try:
        text, start, restarted = new_text(path, src.state_dir)
    except OSError as err:
        res.not_checked.append(f"XID errors: {path}: {err.strerror or err}")
        res.summary = f"nothing could be checked: {path} not readable"
        return res
    xids = parse(text)
    for bus, code, detail in xids:
        status = "fail" if code in FAIL_XIDS else "warn"
        res.findings.append(Finding(f"pci:{bus}", "gpu", status, f"Xid {code}" + (f": {detail[:120]}" if detail else ""),
                                    "xid", float(code)))
    if src.state_dir is not None:
        remember(path, Path(src.state_dir), start + len(text.encode()))
    else:
        res.not_checked.append("no --state-dir: the log position is not remembered, the whole log was read")
    since = "the start of the log" + (" (rotated or truncated since the last run)" if restarted else "") if start == 0 \
        else f"byte {start} (the last run)"
    if not xids:
        res.status, res.summary = "pass", f"no XID since {since} of {path}"
    else:
        res.status = "fail" if any(f.status == "fail" for f in res.findings) else "warn"
        codes = sorted({c for _, c, _ in xids})
        res.summary = f"{len(xids)} XID line(s) since {since}: codes {', '.join(map(str, codes))}"
    return res
