"""Terminal report (rich), for the person paged at 3 a.m.: the status, then one line per finding (component, how
far below what, confidence, what to do), then the details. Tables fit 80 columns and use the terminal's full
width when there is one; colour only on a terminal (and never with NO_COLOR)."""

from __future__ import annotations

import io
import os
import shutil
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fabricbench.analyze.report_common import human_ids, human_size, measured_words, summary_lines

STYLE = {"critical": "bold red", "major": "red", "minor": "yellow"}
STATUS_STYLE = {"healthy": "bold green", "faults": "bold red", "inconclusive": "bold yellow"}
MIN_WIDTH = 80


def _geometry(width: int | None, color: bool | None) -> tuple[int, bool]:
    tty = sys.stdout.isatty()
    if width is None:
        cols = os.environ.get("COLUMNS", "")
        width = (int(cols) if cols.isdigit() else
                 shutil.get_terminal_size((MIN_WIDTH, 24)).columns if tty else MIN_WIDTH)
    if color is None:
        color = tty and not os.environ.get("NO_COLOR")
    return max(width, 40), color


def _styled(style: str, text: str) -> str:
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def render(res, criteria: dict | None = None, width: int | None = None, color: bool | None = None) -> str:
    width, color = _geometry(width, color)
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=color, no_color=not color, highlight=False,
                  color_system="standard" if color else None, emoji=False)
    status, code = res.status.upper(), res.exit_code
    if criteria and code == 0 and not criteria["cluster"]["pass"]:
        status, code = "FAULTS", 1  # an acceptance criterion failed: the status says so too
    measured = measured_words(res)
    con.print(f"[bold]fabricbench analyze[/bold]: [{STATUS_STYLE.get(status.lower(), 'bold')}]{status}[/] "
              f"(exit {code}) - {escape(measured.split(':')[0])}"
              + (f"; topology {escape(res.topology)}" if res.topology else ""))
    rows = summary_lines(res)
    if rows:
        # one line per finding, never wrapped: the component keeps its width, the action is cut first
        wide = width >= 100
        t = Table(show_header=False, box=None, pad_edge=False, expand=True, padding=(0, 1))
        t.add_column("status", no_wrap=True, min_width=5)
        cap = 40 if wide else 22
        t.add_column("what", no_wrap=True, overflow="ellipsis",
                     min_width=min(max(len(r["what_short"]) for r in rows), cap), max_width=cap)
        t.add_column("below", no_wrap=True, min_width=8)
        t.add_column("conf", no_wrap=True, min_width=4)
        t.add_column("do", no_wrap=True, overflow="ellipsis", ratio=1)
        for r in rows:
            below = f"{r['below']} {r['vs']}".strip() if r["below"] not in ("", "fact") else (r["vs"] and f"fact ({r['vs']})")
            t.add_row(_styled(r["style"], r["status"]), escape(r["what"] if wide else r["what_short"]), below or "",
                      r["conf"], "-> " + escape(r["do"]))
        con.print(t)
    else:
        con.print("No faulty component found.")
    con.print(f"[dim]measured:[/dim] {escape(measured.split(': ', 1)[-1])}")
    if res.verdicts:
        t = Table(title="Verdicts", expand=True, show_lines=width >= 100)
        t.add_column("component", overflow="fold", ratio=2)
        t.add_column("sev", no_wrap=True)
        t.add_column("conf", no_wrap=True)
        t.add_column("below", no_wrap=True, justify="right")
        t.add_column("why / evidence", overflow="fold", ratio=6)
        for v in res.verdicts[:60]:
            ids = human_ids(v.identifiers)
            why = escape(v.summary)
            if width >= 100 and v.evidence:
                why += "\n[dim]" + escape("; ".join(v.evidence[:3])) + "[/]"
            if ids and width >= 100:
                why += f"\n[dim]{escape(ids)}[/]"
            t.add_row(escape(v.component), _styled(STYLE.get(v.severity, ""), v.severity), f"{v.confidence:.2f}",
                      f"{v.deficit_pct:.0f}%", why)
        con.print(t)
        if len(res.verdicts) > 60:
            con.print(f"... and {len(res.verdicts) - 60} more verdicts (see --format json)")
    for item in res.cluster:
        style = "bold red" if item.get("failed") else "bold"
        con.print(f"[{style}]cluster ({escape(item['basis'])}):[/] {escape(item['summary'])}")
    if res.expected:
        t = Table(title="Measured vs expected", expand=True)
        for col, kw in (("what", {"ratio": 3, "overflow": "fold"}), ("size", {"no_wrap": True}),
                        ("measured", {"justify": "right", "no_wrap": True}),
                        ("expected", {"justify": "right", "no_wrap": True}), ("%", {"justify": "right", "no_wrap": True})):
            t.add_column(col, **kw)
        for e in res.expected[:40]:
            bad = e.get("failed")
            t.add_row(escape(str(e["class"])), human_size(e["size"]), f"{e['measured_gbps']:.4g} GB/s",
                      f"{e['expected_gbps']:.4g} GB/s", _styled("bold red" if bad else "", f"{100 * e['ratio']:.0f}%"))
        con.print(t)
    nccl = getattr(res, "nccl", None) or []
    for log in nccl:
        con.print(f"[bold]NCCL[/bold] ({escape(os.path.basename(log['source']))}): {escape(log.get('note', ''))}")
    for line in res.inconclusive:
        con.print(f"[yellow]inconclusive:[/yellow] {escape(line)}")
    for line in res.retests[:10]:
        con.print(f"retest: {escape(line)}")
    if len(res.retests) > 10:
        con.print(f"... and {len(res.retests) - 10} more to retest (see --format json)")
    if res.compared:
        seen: dict[str, list[str]] = {}
        for c in res.compared:
            seen.setdefault(c["basis"], []).append(c["what"])
        con.print("compared with: " + escape("; ".join(f"{b}: {', '.join(dict.fromkeys(w))[:150]}"
                                                       for b, w in seen.items())))
    if res.intermittent:
        con.print(f"intermittent ({len(res.intermittent)}): " + escape("; ".join(res.intermittent[:5])))
    for line in res.caveats[:20]:
        con.print(f"[dim]caveat:[/dim] {escape(line)}")
    for line in res.notes[:20]:
        con.print(f"[dim]note:[/dim] {escape(line)}")
    if criteria:
        cl = criteria["cluster"]
        failed_nodes = sorted(h for h, n in criteria["nodes"].items() if not n["pass"])
        word = "INCONCLUSIVE" if cl.get("inconclusive") else ("PASS" if cl["pass"] else "FAIL")
        con.print(f"criteria ({escape(criteria['source'])}): cluster {word}; "
                  + ", ".join(f"{k} {'pass' if t['pass'] else 'FAIL'}" for k, t in cl["tests"].items())
                  + (f"; failing nodes: {', '.join(failed_nodes[:20])}" if failed_nodes else ""))
    return buf.getvalue()
