"""nccl-tests text output (`all_reduce_perf` and friends), lenient.

Tolerates (shared fixtures INDEX.md): old and new headers, launcher prefixes (`[0] `, `[1,0]<stdout>:`,
`0: `), doc indentation, NCCL INFO lines interleaved with rows, several runs in one file separated by script
markers (`%%%%% sendrecv_perf %%%%%`) or `# Collective test starting:` lines, elided device lists (`...`),
hand re-spaced rows, `#wrong` as N/A or huge floats, footers with or without trailing spaces. Each data row
becomes a group-test measurement over the hosts named in the `Rank` lines (out-of-place and in-place both kept).
"""

from __future__ import annotations

import re

from fabricbench.analyze.model import GROUP_COLUMNS, Dataset, frame
from fabricbench.errors import UsageError

PREFIX = re.compile(r"^\s*(?:\[[^\]]*\](?:<std(?:out|err)>)?:?\s*|\d+:\s+)?")
RANK = re.compile(r"#\s*Rank\s+(\d+)\s+Group\s+(\d+)\s+Pid\s+(\d+)\s+on\s+(\S+)\s+device\s+(-?\d+)\s+\[([^\]]*)\]\s*(.*)")
START = re.compile(r"#\s*Collective test starting:\s*(\S+)")
MARKER = re.compile(r"^%{3,}\s*(\S+?)\s*%{3,}")
CMD = re.compile(r"(\w+)_perf\b")
AVG = re.compile(r"#\s*Avg bus bandwidth\s*:\s*([-+0-9.eE]+|nan|inf)", re.I)
OOB = re.compile(r"#\s*Out of bounds values\s*:\s*(\d+)\s*(OK|FAILED)", re.I)
NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)"
WRONG = rf"(?:{NUM}|N/A)"
VAL = rf"(?:{NUM}|N/A)"  # fabricbench prints N/A for a placement the library cannot run
# Columns after nccl-tests' thirteen (fabricbench's extras, nccl-tests' -S timestamp) are ignored.
ROW = re.compile(rf"^(\d+)\s+(\d+)\s+([A-Za-z][\w]*)\s+(?:([A-Za-z]+)\s+)?(-?\d+)\s+({VAL})\s+({VAL})\s+({VAL})\s+({WRONG})"
                 rf"(?:\s+({VAL})\s+({VAL})\s+({VAL})\s+({WRONG}))?(?:\s+\S.*)?\s*$")


def _op_name(name: str) -> str:
    name = name.strip().strip("%").strip()
    return name[:-5] if name.endswith("_perf") else name


class _Run:
    def __init__(self, op: str | None):
        self.op = op
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
    for raw in text.splitlines():
        line = PREFIX.sub("", raw.replace("\x00", "")).strip()
        if not line:
            continue
        m = MARKER.match(line)
        if m:
            pending_op = _op_name(m.group(1))
            current = None
            continue
        m = START.search(line)
        if m:
            pending_op = _op_name(m.group(1))
            current = None
            continue
        if line.startswith("$ ") or line.startswith("srun ") or line.startswith("mpirun "):
            m = CMD.search(line)
            if m:
                pending_op = m.group(1)
                current = None
            continue
        if line.startswith("# nThread") or line.startswith("#  nThread"):
            current = _Run(pending_op)
            runs.append(current)
            continue
        m = RANK.search(line)
        if m:
            if current is None or current.rows:
                current = _Run(pending_op)
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
                current = _Run(pending_op)
                runs.append(current)
            g = m.groups()
            base = {"size": int(g[0]), "count": int(g[1]), "type": g[2], "redop": g[3]}
            for placement, (t, alg, bus, wrong) in (("out-of-place", g[5:9]), ("in-place", g[9:13])):
                if t is None:
                    continue
                try:
                    busbw = float(bus)
                    nwrong = None if wrong == "N/A" else float(wrong)
                except ValueError:
                    continue
                current.rows.append(dict(base, placement=placement, busbw=busbw, nwrong=nwrong))
    rows = []
    for run in runs:
        if not run.rows:
            continue
        hosts = sorted(set(run.ranks.values()))
        if run.ranks and set(run.ranks) != set(range(max(run.ranks) + 1)):
            run.elided = True
        op = run.op or "unknown"
        if run.op is None:
            ds.caveats.append(f"{source}: an nccl-tests run without its collective's name (no header line); "
                              "recorded as op 'unknown'")
        if run.elided or not hosts:
            if run.elided:
                hosts = []
            ds.caveats.append(f"{source}: {op}: the device list is {'elided' if run.elided else 'missing'}; "
                              "its rows count for the cluster but cannot implicate a host")
        nranks = max(run.ranks) + 1 if run.ranks else -1
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
