"""nccl-tests text output (`all_reduce_perf` and friends), lenient.

Tolerates (shared fixtures INDEX.md): old and new headers, launcher prefixes (`[0] `, `[1,0]<stdout>:`,
`0: `), doc indentation, NCCL INFO lines interleaved with rows, several runs in one file separated by script
markers (`%%%%% sendrecv_perf %%%%%`) or `# Collective test starting:` lines, elided device lists (`...`),
hand re-spaced rows, `#wrong` as N/A or huge floats, footers with or without trailing spaces. Each data row
becomes a group-test measurement over the hosts named in the `Rank` lines (out-of-place and in-place both kept).
"""

from __future__ import annotations

import re

from pathlib import Path

from fabricbench.analyze.importers.nccl_ops import Row, canonical, infer_op, name_in
from fabricbench.analyze.model import GROUP_COLUMNS, Dataset, frame
from fabricbench.errors import UsageError

PREFIX = re.compile(r"^\s*(?:\[[^\]]*\](?:<std(?:out|err)>)?:?\s*|\d+:\s+)?")
# "#  Rank  0 Group  0 Pid 1234 on host device  0 [0x07] NVIDIA A100" (older versions: no Group; fabricbench's CPU
# ranks: device -1 [cpu])
RANK = re.compile(r"#\s*Rank\s+(\d+)\s+(?:Group\s+(\d+)\s+)?Pid\s+(\d+)\s+on\s+(\S+)\s+device\s+(-?\d+)\s+\[([^\]]*)\]\s*(.*)")
TAG = re.compile(r"^\s*(\[\d+\])(?=\s|#)")
HEADER = re.compile(r"#\s*nThread\s+(\d+)\s+nGpus\s+(\d+)")
START = re.compile(r"#\s*Collective test starting:\s*(\S+)")
MARKER = re.compile(r"^%{3,}\s*(\S+?)\s*%{3,}")
CMD = re.compile(r"(\w+)_perf\b")
AVG = re.compile(r"#\s*Avg bus bandwidth\s*:\s*([-+0-9.eE]+|nan|inf)", re.I)
OOB = re.compile(r"#\s*Out of bounds values\s*:\s*(\d+)\s*(OK|FAILED)", re.I)
NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)"
VAL = rf"(?:{NUM}|N/A|nan|-?inf)"  # any column may read N/A (e.g. #wrong of in-place sendrecv, -c 0 runs)
# Columns after nccl-tests' thirteen (fabricbench's extras, nccl-tests' -S timestamp) are ignored.
ROW = re.compile(rf"^(\d+)\s+(\d+)\s+([A-Za-z][\w]*)\s+(?:([A-Za-z]+)\s+)?(-?\d+)\s+({VAL})\s+({VAL})\s+({VAL})\s+({VAL})"
                 rf"(?:\s+({VAL})\s+({VAL})\s+({VAL})\s+({VAL}))?(?:\s+\S.*)?\s*$")


def _op_name(name: str) -> str:
    name = name.strip().strip("%").strip()
    return name[:-5] if name.endswith("_perf") else name


class _Run:
    def __init__(self, op: str | None, named_by: str = ""):
        self.op = op
        self.named_by = named_by
        self.per_process: int | None = None
        self.ranks: dict[int, str] = {}
        self.rows: list[dict] = []
        self.avg: float | None = None
        self.oob_failed = False
        self.elided = False


def parse_text(text: str, source: str) -> Dataset:
    ds = Dataset(sources=[source])
    runs: list[_Run] = []
    current: _Run | None = None
    pending_op: str | None = None
    pending_by = ""
    for raw in text.splitlines():
        raw = raw.replace("\x00", "")
        tag = TAG.match(raw)
        if tag:  # "[0]" output tags repeated inside the line (interleaved streams, nccl#1453)
            raw = raw.replace(tag.group(1), " ")
        line = PREFIX.sub("", raw).strip()
        if not line:
            continue
        m = MARKER.match(line)
        if m:
            pending_op, pending_by = _op_name(m.group(1)), "a script marker"
            current = None
            continue
        m = START.search(line)
        if m:
            if not (current is not None and not current.rows and current.op == _op_name(m.group(1))):
                current = None
            pending_op, pending_by = _op_name(m.group(1)), "the 'Collective test starting' line"
            continue
        if line.startswith(("$ ", "srun ", "mpirun ", "mpiexec ")) or re.match(r"^\S*/\w+_perf\b", line):
            m = CMD.search(line)
            if m:
                pending_op, pending_by = m.group(1), "the command line"
                current = None
            continue
        m = HEADER.search(line)
        if m:
            current = _Run(pending_op, pending_by)
            current.per_process = int(m.group(1)) * int(m.group(2))
            runs.append(current)
            continue
        m = RANK.search(line)
        if m:
            if current is None or current.rows:
                current = _Run(pending_op, pending_by)
                runs.append(current)
            current.ranks[int(m.group(1))] = m.group(4)
            gpus = ds.identifiers.setdefault(m.group(4), {}).setdefault("gpus", {})
            gpus[int(m.group(5))] = {"bus_id": m.group(6), "name": m.group(7).strip()}
            continue
        if line in ("...", "…") and current is not None:
            current.elided = True
            continue
        m = AVG.search(line)
        if m and current is not None:
            try:
                current.avg = float(m.group(1))
            except ValueError:
                pass
            pending_op = None if current.rows else pending_op
            continue
        m = OOB.search(line)
        if m and current is not None:
            current.oob_failed = m.group(2).upper() == "FAILED"
            continue
        if line.startswith("#"):
            continue
        m = ROW.match(line)
        if m:
            if current is None or (current.avg is not None):
                current = _Run(pending_op, pending_by)
                runs.append(current)
            g = m.groups()
            base = {"size": int(g[0]), "count": int(g[1]), "type": g[2], "redop": g[3], "root": int(g[4])}
            for placement, (t, alg, bus, wrong) in (("out-of-place", g[5:9]), ("in-place", g[9:13])):
                if t is None or bus == "N/A":
                    continue
                try:
                    busbw = float(bus)
                    algbw = float(alg) if alg != "N/A" else float("nan")
                    nwrong = None if wrong == "N/A" else float(wrong)
                except ValueError:
                    continue
                current.rows.append(dict(base, placement=placement, busbw=busbw, algbw=algbw, nwrong=nwrong))
    rows = []
    tables = [r for r in runs if r.rows]
    file_hint = name_in(Path(source).name) if len(tables) == 1 else None
    for run in tables:
        hosts = sorted(set(run.ranks.values()))
        if run.ranks and set(run.ranks) != set(range(max(run.ranks) + 1)):
            run.elided = True
        # a tail that kept only the last Rank line still tells the rank count; a '...' elision may not
        known_n = max(run.ranks) + 1 if run.ranks else None
        named, named_by = (canonical(run.op), run.named_by) if canonical(run.op) else (file_hint, "file name")
        out_of_place = [r for r in run.rows if r["placement"] == "out-of-place"] or run.rows
        table = [Row(r["size"], r["count"], r["type"], r["redop"], r["root"], r["algbw"], r["busbw"])
                 for r in out_of_place]
        inf = infer_op(table, known_n, named, named_by or "file name", run.per_process)
        if run.elided and (not inf.ops or inf.conflicts):
            known_n = None
            inf = infer_op(table, None, named, named_by or "file name", run.per_process)
        op = inf.op if inf.ops else (run.op or "unknown")
        ds.extra.setdefault("op_inference", []).append({"source": source, "op": op, "how": inf.how,
                                                         "nranks": known_n or inf.nranks})
        if not inf.how.startswith("named by") or inf.conflicts:  # a guess is said where people read
            ds.caveats.append(f"{source}: collective {op}: {inf.how}")
        for conflict in inf.conflicts:
            ds.caveats.append(f"{source}: {op}: {conflict}; check the binary and the rank count")
        if not inf.ops:
            ds.caveats.append(f"{source}: an nccl-tests table whose collective is neither named nor inferable from "
                              "its columns; recorded as op 'unknown' and not compared with a topology")
        if run.elided or not hosts:
            if run.elided:
                hosts = []
            ds.caveats.append(f"{source}: {op}: the device list is {'elided' if run.elided else 'missing'}; "
                              "its rows count for the cluster but cannot implicate a host")
        nranks = known_n or inf.nranks or (max(run.ranks) + 1 if run.ranks else -1)
        wrong_total = sum(r["nwrong"] or 0 for r in run.rows)
        for r in run.rows:
            status = "wrong-data" if (r["nwrong"] or 0) > 0 else "ok"
            rows.append({"op": op, "hosts": ",".join(hosts), "nranks": nranks, "size": r["size"],
                         "busbw": r["busbw"], "nwrong": r["nwrong"], "status": status, "source": source})
        if run.oob_failed or wrong_total > 0:
            ds.caveats.append(f"{source}: {op}: nccl-tests found wrong data (#wrong {wrong_total:g}"
                              f"{', out-of-bounds FAILED' if run.oob_failed else ''})")
        for host in hosts:
            ds.expected_hosts.add(host)
    if not rows:
        raise UsageError(f"{source}: no nccl-tests result rows found (not an nccl-tests output, or truncated "
                         "before the first row)")
    ds.groups = frame(GROUP_COLUMNS, rows)
    return ds
