"""The terminal table, in the shape of nccl-tests' output (so its readers and parsers feel at home)."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping

_FMT = "{:>12} {:>12} {:>8} {:>6} {:>6} {:>10} {:>10} {:>8} {:>8} {:>7}"


def _num(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "N/A"
    if abs(x) >= 1e6:
        return f"{x:.4g}"
    return f"{x:.{digits}f}"


class TablePrinter:
    def __init__(self, stream=None, per_iter: bool = False, groups: bool = False):
        self.out = stream or sys.stdout
        self.per_iter = per_iter
        self.groups = groups  # split communicator: one row per group, with its number first

    def _p(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run_header(self, title: str, lines: list[str]) -> None:
        self._p(f"# {title}")
        for line in lines:
            self._p(f"#  {line}")
        self._p("#")

    def op_header(self, op: str, note: str) -> None:
        extra = "        p50        p99     cv" if self.per_iter else ""
        self._p(f"# {op}: {note}")
        self._p("#" + ("group " if self.groups else "") + _FMT.format("size", "count", "type", "redop", "root", "time", "max", "algbw", "busbw",
                                  "#wrong")[1:] + extra)
        unit_extra = "       (us)       (us)    (%)" if self.per_iter else ""
        self._p("#" + ("      " if self.groups else "") + _FMT.format("(B)", "(elements)", "", "", "", "(us)", "(us)", "(GB/s)", "(GB/s)", "")[1:]
                + unit_extra)

    def row(self, r: Mapping) -> None:
        line = (f"{r['group']:>5} " if self.groups else "") + _FMT.format(r["size_bytes"], r["count"], r["dtype"], r["redop"], r["root"],
                           _num(r["time_us"]), _num(r["time_max_us"]), _num(r["algbw_gbps"]),
                           _num(r["busbw_gbps"]), r["nwrong"])
        if self.per_iter:
            line += f" {_num(r.get('p50_us')):>10} {_num(r.get('p99_us')):>10} {_num(r.get('cv_pct'), 1):>6}"
        self._p(line)

    def note(self, text: str) -> None:
        self._p(f"# {text}")

    def op_footer(self, rows: list[Mapping]) -> None:
        wrong = sum(int(r["nwrong"]) for r in rows)
        avg = sum(r["busbw_gbps"] for r in rows) / len(rows) if rows else float("nan")
        self._p(f"# Out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}")
        self._p(f"# Avg bus bandwidth    : {_num(avg, 4)} GB/s")
        self._p("#")
