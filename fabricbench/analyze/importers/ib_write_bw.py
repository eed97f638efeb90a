"""perftest `ib_write_bw` output (client sweep, server single row, multi-QP rdma_cm).

Rows `#bytes #iterations BW peak BW average MsgRate` become NIC measurements: device from the `Device :`
header, bandwidth from BW average converted to decimal GB/s (Gb/sec / 8, or MB/sec / 1000). The host is not
in the output: it comes from `--host` or from the file name (`HOST.txt`, `HOST_NIC.txt`), and the report says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from fabricbench.analyze.model import NIC_COLUMNS, Dataset, frame
from fabricbench.errors import UsageError

DEVICE = re.compile(r"Device\s*:\s*(\S+)")
UNIT = re.compile(r"BW average\[([^\]]+)\]")
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$")
LINK = re.compile(r"Link type\s*:\s*(\S+)")


def parse_text(text: str, source: str, host: str | None = None) -> Dataset:
    ds = Dataset(sources=[source])
    m = DEVICE.search(text)
    device = m.group(1) if m else "unknown"
    unit = UNIT.search(text)
    unit_text = unit.group(1) if unit else "Gb/sec"
    scale = 1 / 8 if unit_text.lower().startswith("gb") else (1 / 1000 if unit_text.upper().startswith("MB") else 1 / 8)
    if host is None:
        stem = Path(source).name.split(".")[0]
        host = stem.split("__")[0] if "__" in stem else stem
        ds.caveats.append(f"{source}: ib_write_bw output names no host; using {host!r} from the file name")
    rows = []
    for line in text.replace("\t", " ").splitlines():
        m = ROW.match(line)
        if not m:
            continue
        rows.append({"host": host, "nic": device, "peer": None, "size": int(m.group(1)),
                     "bw": float(m.group(4)) * scale, "status": "ok", "source": source})
    if not rows:
        raise UsageError(f"{source}: no ib_write_bw result rows (the run did not finish, or this is not its output)")
    if not device or device == "unknown":
        ds.caveats.append(f"{source}: no 'Device :' line; the NIC is unnamed")
    ds.nics = frame(NIC_COLUMNS, rows)
    return ds
