"""nvbandwidth output: text (v0.4..v0.7, single and multi-node) and JSON (`--json`).

A matrix `memcpy CE GPU(row) -> GPU(column)` becomes GPU-pair measurements (row = source for `->`, column =
source for `<-`); multi-node runs map matrix indices to (host, device) through the `Process N (host): device K`
lines. SUM-only outputs (grep'ed) carry no per-GPU information: they are kept as cluster numbers with a caveat.
"""

from __future__ import annotations

import re
from pathlib import Path

from fabricbench.analyze.model import GPU_COLUMNS, GROUP_COLUMNS, Dataset, frame
from fabricbench.errors import UsageError

RUNNING = re.compile(r"^Running\s+(\S+?)\.?$")
TITLE = re.compile(r"GPU\(row\)\s*(->|<-)\s*GPU\(column\)")
PROCESS = re.compile(r"Process\s+(\d+)\s+\(([^)]*)\):\s*device\s+(\d+)(?::\s*([^(]*?)\s*\(([^)]*)\))?")
DEVICE = re.compile(r"^Device\s+(\d+):\s*(.*?)\s*(?:\(([^)]*)\))?$")
SUM = re.compile(r"^SUM\s+(\S+)\s+([-+0-9.eE]+)")
HEADER = re.compile(r"^(\d+\s+)*\d+$")


def _value(tok: str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None


def _emit(rows, test, arrow, matrix, procs, host):
    for i, row in enumerate(matrix):
        for j, val in enumerate(row):
            if i == j or val is None:
                continue
            src, dst = (i, j) if arrow == "->" else (j, i)
            sh, sg = procs.get(src, (host, src))
            dh, dg = procs.get(dst, (host, dst))
            rows.append({"src_host": sh, "src_gpu": sg, "dst_host": dh, "dst_gpu": dg, "test": test, "bw": val,
                         "status": "ok"})


def parse_text(text: str, source: str, host: str | None = None) -> Dataset:
    ds = Dataset(sources=[source])
    host = host or Path(source).stem
    procs: dict[int, tuple[str, int]] = {}
    rows: list[dict] = []
    sums: list[dict] = []
    test = None
    arrow = None
    matrix: list[list[float | None]] | None = None
    ncols = 0
    for raw in text.splitlines():
        line = raw.strip()
        m = PROCESS.search(line)
        if m:
            procs[int(m.group(1))] = (m.group(2), int(m.group(3)))
            ident = {"name": (m.group(4) or "").strip()}
            if m.group(5):
                ident["pci"] = m.group(5)
            ds.identifiers.setdefault(m.group(2), {}).setdefault("gpus", {})[int(m.group(3))] = ident
            continue
        m = DEVICE.match(line)
        if m:
            ident = {"name": m.group(2)}
            if m.group(3):
                ident["pci"] = m.group(3)
            ds.identifiers.setdefault(host, {}).setdefault("gpus", {})[int(m.group(1))] = ident
            continue
        m = RUNNING.match(line)
        if m:
            if matrix:
                _emit(rows, test, arrow, matrix, procs, host)
            test, arrow, matrix = m.group(1), None, None
            continue
        m = TITLE.search(line)
        if m:
            arrow = m.group(1)
            matrix = []
            ncols = 0
            continue
        m = SUM.match(line)
        if m:
            if matrix:
                _emit(rows, test, arrow, matrix, procs, host)
                matrix = None
            sums.append({"op": m.group(1), "hosts": "", "nranks": -1, "size": -1, "busbw": float(m.group(2)),
                         "nwrong": None, "status": "ok", "source": source})
            continue
        if matrix is not None:
            toks = line.split()
            if not toks:
                continue
            if HEADER.match(line) and not matrix and ncols == 0:
                ncols = len(toks)
                continue
            if toks[0].isdigit() and len(toks) >= 2:
                vals = [_value(t) for t in toks[1:]]
                matrix.append(vals)
    if matrix:
        _emit(rows, test, arrow, matrix, procs, host)
    if procs and not rows:
        pass
    if not rows and not sums:
        raise UsageError(f"{source}: no nvbandwidth matrix or SUM line found (truncated, or not nvbandwidth output)")
    if rows:
        ds.gpus = frame(GPU_COLUMNS, [dict(r, source=source) for r in rows])
        if not procs:
            ds.caveats.append(f"{source}: nvbandwidth output names no host; GPUs are attributed to {host!r} "
                              "(from the file name)")
    if sums and not rows:
        ds.caveats.append(f"{source}: nvbandwidth SUM lines only (no matrices): no per-GPU localization possible")
    if sums:
        ds.groups = frame(GROUP_COLUMNS, sums)
    return ds


def parse_json(doc: object, source: str) -> Dataset:
    ds = Dataset(sources=[source])
    host = Path(source).stem
    root = doc.get("nvbandwidth", doc) if isinstance(doc, dict) else None
    cases = root.get("testcases") if isinstance(root, dict) else None
    if not isinstance(cases, list):
        raise UsageError(f"{source}: no nvbandwidth 'testcases' list in this JSON")
    rows: list[dict] = []
    sums = []
    for case in cases:
        if not isinstance(case, dict):
            continue
        name = str(case.get("name") or "unknown")
        matrix = case.get("bandwidth_matrix")
        desc = str(case.get("bandwidth_description") or "")
        arrow = "<-" if "<-" in desc else "->"
        if isinstance(matrix, list):
            parsed = []
            for row in matrix:
                if not isinstance(row, list):
                    continue
                parsed.append([_value(str(v)) if v is not None else None for v in row])
            _emit(rows, name, arrow, parsed, {}, host)
        s = case.get("sum")
        try:
            if s is not None:
                sums.append({"op": name, "hosts": "", "nranks": -1, "size": -1, "busbw": float(s), "nwrong": None,
                             "status": "ok" if str(case.get("status", "Passed")).lower().startswith("pass") else "failed",
                             "source": source})
        except (TypeError, ValueError):
            pass
    if not rows and not sums:
        raise UsageError(f"{source}: nvbandwidth JSON without matrices or sums")
    if rows:
        ds.gpus = frame(GPU_COLUMNS, [dict(r, source=source) for r in rows])
        ds.caveats.append(f"{source}: nvbandwidth JSON names no host; GPUs are attributed to {host!r}")
    if sums:
        ds.groups = frame(GROUP_COLUMNS, sums)
    return ds
