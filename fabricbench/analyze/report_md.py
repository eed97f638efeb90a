"""Markdown report."""

from __future__ import annotations

from fabricbench.analyze.report_common import human_size, measured_words


def _esc(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(res, criteria: dict | None = None) -> str:
    out = [f"# fabricbench analyze: {res.status} (exit {res.exit_code})", ""]
    out.append(f"{measured_words(res)}; topology: {res.topology or 'none'}")
    out.append("")
    out.append("## Verdicts")
    out.append("")
    if res.verdicts:
        out.append("| kind | component | severity | confidence | below reference | why | evidence | retest |")
        out.append("|---|---|---|---|---|---|---|---|")
        for v in res.verdicts:
            out.append(f"| {v.kind} | {_esc(v.component)} | {v.severity} | {v.confidence:.2f} | {v.deficit_pct:.1f}% | "
                       f"{_esc(v.summary)} | {_esc('; '.join(v.evidence))} | {_esc('; '.join(v.retest))} |")
    else:
        out.append("No faulty component found.")
    if res.cluster:
        out += ["", "## Cluster findings", ""] + [f"- ({c['basis']}) {c['summary']}" for c in res.cluster]
    if res.expected:
        out += ["", "## Measured vs expected", "", "| class | size | measured GB/s | expected GB/s | ratio |",
                "|---|---|---|---|---|"]
        out += [f"| {e['class']} | {human_size(e['size'])} | {e['measured_gbps']:.3g} | {e['expected_gbps']:.3g} | "
                f"{e['ratio']:.2f} |" for e in res.expected]
    if res.fleet:
        out += ["", "## Fleet", "", "| class | size | median GB/s | spread % | count |", "|---|---|---|---|---|"]
        out += [f"| {f['class']} | {human_size(f['size'])} | {f['median_gbps']:.4g} | {f['spread_pct']:.2f} | {f['count']} |"
                for f in res.fleet]
    for title, items in (("Inconclusive", res.inconclusive), ("Intermittent", res.intermittent),
                         ("Caveats", res.caveats), ("Notes", res.notes)):
        if items:
            out += ["", f"## {title}", ""] + [f"- {_esc(x)}" for x in items]
    if criteria:
        out += ["", "## Acceptance criteria", "", f"Cluster: **{'PASS' if criteria['cluster']['pass'] else 'FAIL'}** "
                f"({criteria['source']})", "", "| test | result | why |", "|---|---|---|"]
        for name, t in criteria["cluster"]["tests"].items():
            out.append(f"| {name} | {'pass' if t['pass'] else 'FAIL'} | {_esc('; '.join(t['why'][:5]))} |")
        bad = {h: n for h, n in criteria["nodes"].items() if not n["pass"]}
        out += ["", f"Nodes: {len(criteria['nodes']) - len(bad)} pass, {len(bad)} fail"]
        out += [f"- {h}: {_esc('; '.join(n['failed']))}" for h, n in sorted(bad.items())]
    return "\n".join(out) + "\n"
