"""Which collective an nccl-tests table measured, from the numbers themselves.

nccl-tests (src/*.cu, NVIDIA/nccl-tests 2.x) prints per row: size = max(send, receive bytes), count = the
per-rank parameter count, the reduction op (`sum`, or `none`/blank for data movement; some builds print `sum`
for sendrecv), root (-1 unless rooted) and algbw/busbw with busbw = algbw x factor(n):

    op              factor(n)     count           redop   root
    all_reduce      2(n-1)/n      size/e          yes     -1
    reduce_scatter  (n-1)/n       size/(e n)      yes     -1
    all_gather      (n-1)/n       size/(e n)      no      -1
    alltoall        (n-1)/n       size/(e n)      no      -1
    gather, scatter (n-1)/n       size/(e n)      no      >=0
    broadcast       1             size/e          no      >=0
    reduce          1             size/e          yes     >=0
    sendrecv        1             size/e          either  -1
    hypercube       1             size/(e n)      no      -1

e is the element size of the type column. `infer_op` keeps the operations every column agrees with; a name
(binary on a command line, a '# Collective test starting:' line, a script marker, the file name) picks among
them. What is left ambiguous is reported as candidates, judged later against the most permissive one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ELEMENT_BYTES = {"int8": 1, "uint8": 1, "char": 1, "int32": 4, "uint32": 4, "int": 4, "int64": 8, "uint64": 8,
                 "half": 2, "float16": 2, "bfloat16": 2, "float": 4, "float32": 4, "double": 8, "float64": 8,
                 "f8e4m3": 1, "f8e5m2": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}

# op -> (factor kind, count divisor kind, has a reduction op (None: either), rooted)
SIGNATURES = {
    "all_reduce": ("2(n-1)/n", "1", True, False),
    "reduce_scatter": ("(n-1)/n", "n", True, False),
    "all_gather": ("(n-1)/n", "n", False, False),
    "alltoall": ("(n-1)/n", "n", False, False),
    "gather": ("(n-1)/n", "n", False, True),
    "scatter": ("(n-1)/n", "n", False, True),
    "broadcast": ("1", "1", False, True),
    "reduce": ("1", "1", True, True),
    "sendrecv": ("1", "1", None, False),
    "hypercube": ("1", "n", False, False),
}
REDOPS = {"sum", "prod", "min", "max", "avg", "mulsum", "premulsum"}

# names people and tools use, longest first so that 'allreduce' is not read as 'reduce'
_ALIASES = [("reduce_scatter", "reduce_scatter"), ("reducescatter", "reduce_scatter"),
            ("all_reduce", "all_reduce"), ("allreduce", "all_reduce"), ("all_gather", "all_gather"),
            ("allgather", "all_gather"), ("alltoall", "alltoall"), ("all_to_all", "alltoall"),
            ("all2all", "alltoall"), ("sendrecv", "sendrecv"), ("send_recv", "sendrecv"),
            ("hypercube", "hypercube"), ("broadcast", "broadcast"), ("bcast", "broadcast"),
            ("scatter", "scatter"), ("gather", "gather"), ("reduce", "reduce")]


def canonical(name: str | None) -> str | None:
    """'all_reduce_perf', 'AllReduce', 'allreduce' -> 'all_reduce'; None when no collective is named."""
    if not name:
        return None
    low = name.lower().replace("-", "_")
    low = low[:-5] if low.endswith("_perf") else low
    for alias, op in _ALIASES:
        if low == alias:
            return op
    return None


def name_in(text: str) -> str | None:
    """The collective a file name or command line names ('allreduce-h100-64gpu.txt' -> 'all_reduce')."""
    low = text.lower().replace("-", "_")
    m = re.search(r"([a-z_0-9]+)_perf\b", low)
    if m:
        for alias, op in _ALIASES:
            if m.group(1).endswith(alias):
                return op
    for alias, op in _ALIASES:
        if re.search(rf"(?:^|[^a-z]){alias}(?:[^a-z]|$)", low):
            return op
    return None


def factor(kind: str, n: int) -> float:
    return {"2(n-1)/n": 2 * (n - 1) / n, "(n-1)/n": (n - 1) / n, "1": 1.0}[kind]


@dataclass
class Row:
    size: int
    count: int
    type: str
    redop: str | None
    root: int
    algbw: float
    busbw: float


@dataclass
class Inference:
    ops: list[str]  # one op, or the candidates every column allows
    nranks: int | None  # the rank count, given or inferred
    how: str  # how the op (and rank count) was decided, for the report
    named: str | None = None
    conflicts: list[str] = field(default_factory=list)

    @property
    def op(self) -> str:
        return self.ops[0] if len(self.ops) == 1 else "|".join(self.ops) if self.ops else "unknown"


def _count_divisor(row: Row) -> float | None:
    e = ELEMENT_BYTES.get(row.type.lower())
    if not e or row.count <= 0:
        return None
    return row.size / (row.count * e)


def _fits(op: str, row: Row, n: int) -> bool:
    fkind, cdiv, redop, rooted = SIGNATURES[op]
    has_redop = (row.redop or "").lower() in REDOPS
    if redop is not None and has_redop != redop:
        return False
    if rooted != (row.root >= 0):
        return False
    q = _count_divisor(row)
    if q is not None:
        want = 1 if cdiv == "1" else n
        # nccl-tests aligns per-rank counts to 16 bytes; at large sizes the divisor is exact
        if abs(q - want) > max(0.02 * want, 0.02):
            return False
    if row.algbw > 0 and row.busbw > 0:
        ratio = row.busbw / row.algbw
        # values are printed with 2 decimals: allow their rounding plus 0.5%
        tol = ratio * (0.006 / row.algbw + 0.006 / row.busbw) + 0.005 * ratio
        if abs(ratio - factor(fkind, n)) > tol:
            return False
    return True


def _n_candidates(op: str, row: Row, per_process: int | None) -> list[int]:
    """Rank counts that make `row` fit `op` when the table does not say how many ranks ran."""
    fkind, cdiv, _, _ = SIGNATURES[op]
    out: set[int] = set()
    q = _count_divisor(row)
    if cdiv == "n" and q is not None and q > 1.5:
        out.add(int(round(q)))
    if row.algbw > 0 and row.busbw > 0:
        r = row.busbw / row.algbw
        if fkind == "2(n-1)/n" and r < 2:
            out.add(int(round(2 / (2 - r))) if 2 - r > 1e-6 else 0)
        elif fkind == "(n-1)/n" and r < 1:
            out.add(int(round(1 / (1 - r))) if 1 - r > 1e-6 else 0)
    cands = [n for n in out if n >= 2 and (not per_process or n % per_process == 0)]
    return sorted(cands)


def infer_op(rows: list[Row], nranks: int | None, name: str | None = None, name_from: str = "",
             per_process: int | None = None) -> Inference:
    """The op of one nccl-tests table. `nranks` from the Rank lines (None when elided or absent); `name` a
    collective named in or about the file; `per_process` nThread x nGpus from the header."""
    usable = sorted((r for r in rows if r.size > 0), key=lambda r: r.size)[-3:]
    if not usable:
        named = canonical(name)
        return Inference([named] if named else [], nranks, f"named by {name_from}" if named else "no rows", named)
    scores: dict[tuple[str, int], int] = {}
    for op in SIGNATURES:
        ns = [nranks] if nranks else sorted({n for r in usable for n in _n_candidates(op, r, per_process)})
        for n in ns:
            if n and n >= 2:
                scores[(op, n)] = sum(_fits(op, r, n) for r in usable)
    best = max(scores.values(), default=0)
    fitting = [(op, n) for (op, n), s in scores.items() if s == best and s > 0]
    named = canonical(name)
    ratio = usable[-1].busbw / usable[-1].algbw if usable[-1].algbw > 0 else float("nan")
    last = usable[-1]
    divisor = _count_divisor(last) or float("nan")
    signs = (f"busbw/algbw {ratio:.3f}, redop {last.redop or 'blank'}, root {last.root}, "
             f"count = size/{divisor:.3g}/{ELEMENT_BYTES.get(last.type.lower(), '?')} B")
    if named:
        match = [(op, n) for op, n in fitting if op == named]
        if match:
            n = match[0][1]
            return Inference([named], nranks or n, f"named by {name_from}; the numbers agree ({signs}"
                             + (f", {n} ranks inferred" if not nranks else "") + ")", named)
        if name_from != "file name":
            return Inference([named], nranks, f"named by {name_from}", named,
                             conflicts=[f"the numbers do not fit {named} ({signs}"
                                        + (f", {nranks} ranks" if nranks else "") + ")"])
    if not fitting:
        return Inference([], nranks, f"not inferable ({signs}" + (f", {nranks} ranks" if nranks else "") + ")")
    ops = sorted({op for op, _ in fitting}, key=list(SIGNATURES).index)
    ns = sorted({n for _, n in fitting})
    n = nranks or (ns[0] if len(ns) == 1 else None)
    if n is None and len(ops) == 1:
        # rows disagree by rounding: trust the row with the largest algbw (its ratio is the most precise)
        sharp = max(usable, key=lambda r: r.algbw if r.algbw == r.algbw else -1)
        fit = [c for c in _n_candidates(ops[0], sharp, per_process) if _fits(ops[0], sharp, c)]
        n = fit[0] if len(fit) == 1 else None
    how = (f"inferred from the numbers ({signs}" + (f", {nranks} ranks" if nranks else
                                                     f", {n} ranks inferred" if n else "") + ")")
    if named:
        how += f"; the file name says {named}, which they do not fit"
    if len(ops) > 1:
        how += f"; candidates {', '.join(ops)}: judged against the most permissive"
    return Inference(ops, n, how, named)

