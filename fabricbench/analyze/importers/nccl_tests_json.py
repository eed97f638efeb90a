"""nccl-tests JSON (`-J FILE`, nccl-tests >= 2.17): version, config{collective?, devices[]}, results[].

Each result's `out_of_place` and `in_place` entries (`time, alg_bw, bus_bw, nwrong`) become group-test
measurements over the hosts of `config.devices[].hostname`. fabricbench's own `--json` files use this layout.
"""

from __future__ import annotations

import math
import re

from fabricbench.analyze.model import GROUP_COLUMNS, Dataset, frame
from fabricbench.errors import UsageError


def _num(value) -> float | None:
    """A finite number, or None ('1e400', NaN, huge ints and non-numbers are malformed entries)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and abs(number) < 1e18 else None


def parse_json(doc: object, source: str) -> Dataset:
    if not isinstance(doc, dict):
        raise UsageError(f"{source}: JSON top level is {type(doc).__name__}, not an nccl-tests -J object")
    results = doc.get("results")
    if not isinstance(results, list):
        raise UsageError(f"{source}: no 'results' list; not an nccl-tests -J file")
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    op = config.get("collective") or doc.get("collective")
    if not op:
        m = re.search(r"(\w+)_perf", str(doc.get("args") or ""))
        op = m.group(1) if m else "unknown"
    devices = config.get("devices") if isinstance(config.get("devices"), list) else []
    hosts = sorted({str(d.get("hostname")) for d in devices if isinstance(d, dict) and d.get("hostname")})
    nranks = _num(config.get("nranks"))
    nranks = int(nranks) if nranks else (len(devices) or -1)
    ds = Dataset(sources=[source], expected_hosts=set(hosts))
    rows = []
    skipped = 0
    for item in results:
        if not isinstance(item, dict):
            skipped += 1
            continue
        size = _num(item.get("size"))
        if size is None:
            skipped += 1
            continue
        for key in ("out_of_place", "in_place"):
            entry = item.get(key)
            if not isinstance(entry, dict):
                continue
            bus = _num(entry.get("bus_bw"))
            if bus is None:
                skipped += 1
                continue
            wrong = _num(entry.get("nwrong"))
            rows.append({"op": str(op), "hosts": ",".join(hosts), "nranks": nranks, "size": int(size), "busbw": bus,
                         "nwrong": wrong, "status": "wrong-data" if (wrong or 0) > 0 else "ok", "source": source})
    if skipped:
        ds.caveats.append(f"{source}: {skipped} malformed result entr{'y' if skipped == 1 else 'ies'} skipped")
    if not hosts:
        ds.caveats.append(f"{source}: no config.devices hostnames; rows count for the cluster only")
    if not rows:
        raise UsageError(f"{source}: the JSON has no usable results (empty or truncated run)")
    ds.groups = frame(GROUP_COLUMNS, rows)
    return ds
