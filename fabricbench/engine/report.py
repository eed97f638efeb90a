"""The terminal table, laid out as nccl-tests 2.19.6 prints it, so its readers and parsers work on ours.

Field positions per data row (whitespace-separated, as src/util.cu writes them):
  1 size  2 count  3 type  4 redop  5 root | 6 time  7 algbw  8 busbw  9 #wrong (out-of-place)
  | 10 time  11 algbw  12 busbw  13 #wrong (in-place) | fabricbench's extra columns after those.
`#wrong` is `N/A` when no check ran (-c 0); a placement the library cannot run shows `N/A` in its four
fields. The footer lines are nccl-tests' own (`# Avg bus bandwidth    : <number>` with no unit after the
number, so `awk '{print $NF}'` reads it; GB/s, decimal), and the `# nThread ...`, `# Using devices` and
`#  Rank ...` lines precede each table.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping


def _val(value):
    """None for missing values (None, NaN, pandas' NA: rows read back from results.parquet)."""
    if value is None:
        return None
    try:
        if value != value:  # NaN
            return None
    except TypeError:  # pandas.NA refuses comparison
        return None
    return value


def float_field(value: float | None, width: int) -> str:
    """nccl-tests' getFloatStr: 2 decimals, then fewer, then an exponent, whatever fits `width`."""
    value = _val(value)
    if value is None:
        return f"{'N/A':>{width}}"
    for fmt in (f"{{:{width}.2f}}", f"{{:{width}.1f}}", f"{{:{width}.0f}}"):
        text = fmt.format(value)
        if len(text) <= width:
            return text
    return (f"{{:{width}.1e}}" if width >= 7 else f"{{:{width}.0e}}").format(value)


def _g(value: float) -> str:
    """C's %g (6 significant digits, no trailing zeros)."""
    return "nan" if math.isnan(value) else f"{value:g}"


def preamble(size: int, count: int, dtype: str, redop: str, root: int) -> str:
    return f"{size:12d}  {count:12d}  {dtype:>8}  {redop:>6}  {root:6d}"


def body(row: Mapping | None, checked: bool) -> str:
    """One placement's `time algbw busbw #wrong` (nccl-tests widths 7, 6, 6, 6)."""
    if row is None:
        return f"  {'N/A':>7}  {'N/A':>6}  {'N/A':>6}  {'N/A':>6}"
    t, alg, bus = (float_field(row[k], w) for k, w in (("time_us", 7), ("algbw_gbps", 6), ("busbw_gbps", 6)))
    nwrong = _val(row.get("nwrong"))
    wrong = f"{_g(float(nwrong)):>6}" if checked and nwrong is not None else f"{'N/A':>6}"
    return f"  {t}  {alg}  {bus}  {wrong}"


def nccl_row_root(row: Mapping) -> int:
    root = _val(row.get("root"))
    return int(root) if root is not None else -1


def average_busbw(rows: list[Mapping]) -> float:
    """nccl-tests' `Avg bus bandwidth`: the mean of busbw over every measurement of the table, out-of-place
    and in-place alike (args->bw / bw_count in src/common.cu)."""
    values = [float(_val(r.get("busbw_gbps"))) for r in rows if _val(r.get("busbw_gbps")) is not None]
    return sum(values) / len(values) if values else float("nan")


def min_bw_verdict(avg: float, min_bw: float | None) -> str:
    """NCCL_TESTS_MIN_BW: nccl-tests fails when the average is below 0.9 x the value (src/util.cu)."""
    if min_bw is None:
        return ""
    return "FAILED" if not (avg >= min_bw * 0.9) else "OK"


class TablePrinter:
    def __init__(self, stream=None, per_iter: bool = False, groups: bool = False):
        self.out = stream or sys.stdout
        self.per_iter = per_iter
        self.groups = groups  # split communicator: the group number is an extra column after nccl-tests'
        self.checked = True

    def _p(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run_header(self, title: str, lines: list[str]) -> None:
        self._p(f"# {title}")
        for line in lines:
            self._p(f"#  {line}")
        self._p("#")

    def test_header(self, op: str, params: str, devices: list[str], blocking: str | None = None) -> None:
        """nccl-tests' preamble of one test: what the text importers key on to start a table."""
        self._p(f"# Collective test starting: {op}")
        self._p(f"# {params}")
        if blocking:
            self._p(f"# {blocking}")
        self._p("#")
        self._p("# Using devices")
        for line in devices:
            self._p(line)

    def op_header(self, op: str, note: str, checked: bool = True) -> None:
        self.checked = checked
        extra = "  oop_max   ip_max"
        extra_units = "     (us)     (us)"
        if self.per_iter:
            extra += "    i_p50    i_p99   i_cv%"
            extra_units += "     (us)     (us)     (%)"
        if self.groups:
            extra += "  group"
            extra_units += "       "
        extra += "  algo/proto/transport"
        self._p(f"# {op}: {note}")
        self._p("#")
        self._p(f"# {'':>10}  {'':>12}  {'':>8}  {'':>6}  {'':>6}           out-of-place                       in-place")
        self._p(f"# {'size':>10}  {'count':>12}  {'type':>8}  {'redop':>6}  {'root':>6}  {'time':>7}  {'algbw':>6}  "
                f"{'busbw':>6}  {'#wrong':>6}  {'time':>7}  {'algbw':>6}  {'busbw':>6}  {'#wrong':>6}{extra}")
        self._p(f"# {'(B)':>10}  {'(elements)':>12}  {'':>8}  {'':>6}  {'':>6}  {'(us)':>7}  {'(GB/s)':>6}  "
                f"{'(GB/s)':>6}  {'':>6}  {'(us)':>7}  {'(GB/s)':>6}  {'(GB/s)':>6}  {'':>6}{extra_units}")

    def row_pair(self, oop: Mapping | None, ip: Mapping | None) -> None:
        first = oop or ip
        assert first is not None
        line = preamble(int(first["size_bytes"]), int(first["count"]), first["dtype"], first["redop"],
                        nccl_row_root(first))
        line += body(oop, self.checked) + body(ip, self.checked)
        line += f"  {float_field(oop['time_max_us'] if oop else None, 7)}"
        line += f"  {float_field(ip['time_max_us'] if ip else None, 7)}"
        if self.per_iter:
            main = oop or ip
            line += (f"  {float_field(main.get('p50_us'), 7)}  {float_field(main.get('p99_us'), 7)}"
                     f"  {float_field(main.get('cv_pct'), 6)}")
        if self.groups:
            line += f"  {int(_val(first.get('group')) or 0):5d}"
        line += f"  {algo_cell(first)}"
        self._p(line)

    def row(self, r: Mapping) -> None:
        """One measurement in its placement's half (readers of fabricbench's results files use this)."""
        if r.get("placement") == "in-place":
            self.row_pair(None, r)
        else:
            self.row_pair(r, None)

    def note(self, text: str) -> None:
        self._p(f"# {text}")

    def op_footer(self, rows: list[Mapping], op: str | None = None, min_bw: float | None = None) -> None:
        wrong = sum(int(_val(r.get("nwrong")) or 0) for r in rows)
        avg = average_busbw(rows)
        self._p(f"# {'Out of bounds values':<20} : {wrong} {'FAILED' if wrong else 'OK'}")
        self._p(f"# {'Avg bus bandwidth':<20} : {_g(avg)} {min_bw_verdict(avg, min_bw)}")
        self._p("#")
        if op:
            self._p(f"# Collective test concluded: {op}")
        self._p("#")


def algo_cell(row: Mapping) -> str:
    """What NCCL used for this size, or '-' with the reason kept in the results (column `algo_note`)."""
    parts = [str(_val(row.get(k)) or "") for k in ("algo", "proto", "transport")]
    if any(parts):
        return "/".join(p or "?" for p in parts)
    return "-"
