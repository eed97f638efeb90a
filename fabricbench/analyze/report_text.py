"""Terminal summary (rich): status, verdicts, cluster findings, caveats."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

STYLE = {"critical": "bold red", "major": "red", "minor": "yellow"}


def render(res, criteria: dict | None = None, width: int = 120, color: bool = False) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=color, no_color=not color, highlight=False)
    c = res.counts
    status, code = res.status.upper(), res.exit_code
    if criteria and code == 0 and not criteria["cluster"]["pass"]:
        status, code = "FAULTS", 1  # an acceptance criterion failed: the status says so too
    con.print(f"[bold]fabricbench analyze[/bold]: {status} (exit {code}) - "
              f"{len(res.hosts)} host(s), {c.get('pair_rows', 0)} pair rows, {c.get('gpus', 0)} GPU-pair rows, "
              f"{c.get('nics', 0)} NIC rows, {c.get('groups', 0)} collective rows"
              + (f"; topology {res.topology}" if res.topology else ""))
    if res.verdicts:
        t = Table(title="Verdicts", show_lines=False, expand=False)
        for col in ("kind", "component", "severity", "conf", "below", "why", "retest"):
            t.add_column(col, overflow="fold")
        for v in res.verdicts[:60]:
            t.add_row(v.kind, v.component, f"[{STYLE.get(v.severity, '')}]{v.severity}[/]", f"{v.confidence:.2f}",
                      f"{v.deficit_pct:.0f}%", v.summary, "; ".join(v.retest[:2]))
        con.print(t)
        if len(res.verdicts) > 60:
            con.print(f"... and {len(res.verdicts) - 60} more verdicts (see --format json)")
    else:
        con.print("No faulty component found.")
    for item in res.cluster:
        con.print(f"[bold]cluster ({item['basis']}):[/bold] {item['summary']}")
    for line in res.inconclusive:
        con.print(f"[yellow]inconclusive:[/yellow] {line}")
    for line in res.retests[:10]:
        con.print(f"retest: {line}")
    if len(res.retests) > 10:
        con.print(f"... and {len(res.retests) - 10} more to retest (see --format json)")
    if res.compared:
        seen: dict[str, list[str]] = {}
        for c in res.compared:
            seen.setdefault(c["basis"], []).append(c["what"])
        con.print("compared with: " + "; ".join(f"{b}: {', '.join(dict.fromkeys(w))[:150]}" for b, w in seen.items()))
    if res.intermittent:
        con.print(f"intermittent ({len(res.intermittent)}): " + "; ".join(res.intermittent[:5]))
    for line in res.caveats[:20]:
        con.print(f"caveat: {line}")
    for line in res.notes[:20]:
        con.print(f"note: {line}")
    if criteria:
        cl = criteria["cluster"]
        failed_nodes = sorted(h for h, n in criteria["nodes"].items() if not n["pass"])
        word = "INCONCLUSIVE" if cl.get("inconclusive") else ("PASS" if cl["pass"] else "FAIL")
        con.print(f"criteria ({criteria['source']}): cluster {word}; "
                  + ", ".join(f"{k} {'pass' if t['pass'] else 'FAIL'}" for k, t in cl["tests"].items())
                  + (f"; failing nodes: {', '.join(failed_nodes[:20])}" if failed_nodes else ""))
    return buf.getvalue()
