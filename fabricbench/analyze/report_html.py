"""One self-contained HTML file: verdicts, heatmaps (pair matrix, node x rail, GPU x GPU) and measured-vs-expected
charts as inline base64 PNG (matplotlib, Agg), no external resources."""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _heatmap(values, rows, cols, title, xlabel, ylabel) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = np.array(values, dtype=float)
    pct = 100 * np.exp(arr)
    n = max(arr.shape)
    size = min(12, 3 + 0.12 * n)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(pct, cmap="RdYlGn", vmin=50, vmax=105, interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax, label="% of fleet reference")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(cols) <= 40:
        ax.set_xticks(range(len(cols)), [str(c) for c in cols], rotation=90, fontsize=7)
    if len(rows) <= 40:
        ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=7)
    return _png(fig)


def _bars(res) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res.expected or [{"class": f["class"], "size": f["size"], "measured_gbps": f["median_gbps"],
                             "expected_gbps": None} for f in res.fleet]
    if not rows:
        return None
    labels = [f"{r['class']}\n{r['size'] / 2**20:.0f} MiB" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 3.5))
    ax.bar(x - 0.2, [r["measured_gbps"] for r in rows], width=0.4, label="measured (fleet median)")
    if any(r.get("expected_gbps") for r in rows):
        ax.bar(x + 0.2, [r.get("expected_gbps") or 0 for r in rows], width=0.4, label="expected (topology)")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("GB/s")
    ax.set_title("Measured vs expected" if res.expected else "Fleet medians")
    ax.legend(fontsize=8)
    return _png(fig)


def render(res, criteria: dict | None = None) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>fabricbench analyze</title><style>",
             "body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#eee}"
             ".critical{color:#b00;font-weight:bold}.major{color:#d00}.minor{color:#a60}img{max-width:100%}",
             "</style></head><body>",
             f"<h1>fabricbench analyze: {e(res.status)} (exit {res.exit_code})</h1>",
             f"<p>{len(res.hosts)} host(s); topology: {e(str(res.topology or 'none'))}; "
             + e(", ".join(f"{k} {v}" for k, v in res.counts.items())) + "</p>", "<h2>Verdicts</h2>"]
    if res.verdicts:
        parts.append("<table><tr><th>kind</th><th>component</th><th>severity</th><th>confidence</th><th>below</th>"
                     "<th>why</th><th>evidence</th><th>retest</th><th>identifiers</th></tr>")
        for v in res.verdicts:
            parts.append(f"<tr><td>{e(v.kind)}</td><td>{e(v.component)}</td><td class='{e(v.severity)}'>"
                         f"{e(v.severity)}</td><td>{v.confidence:.2f}</td><td>{v.deficit_pct:.1f}%</td>"
                         f"<td>{e(v.summary)}</td><td>{'<br>'.join(e(x) for x in v.evidence)}</td>"
                         f"<td>{'<br>'.join(e(x) for x in v.retest)}</td><td>{e(str(v.identifiers))}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No faulty component found.</p>")
    for c in res.cluster:
        parts.append(f"<p><b>cluster ({e(c['basis'])}):</b> {e(c['summary'])}</p>")
    img = _bars(res)
    if img:
        parts.append(f"<h2>{'Measured vs expected' if res.expected else 'Fleet'}</h2><img alt='bars' src='{img}'>")
    if res.pair_matrix and res.pair_matrix["names"]:
        pm = res.pair_matrix
        note = f" (every {pm['step']}th node of {pm['n']})" if pm["step"] > 1 else ""
        parts.append(f"<h2>Pair matrix{e(note)}</h2><p>row sends, column receives; % of the fleet reference</p>")
        parts.append(f"<img alt='pair matrix' src='{_heatmap(pm['values'], pm['names'], pm['names'], 'directed pairs', 'receiver', 'sender')}'>")
    if res.rail_matrix and res.rail_matrix.get("hosts"):
        rm = res.rail_matrix
        parts.append("<h2>Node x rail</h2>")
        parts.append(f"<img alt='node x rail' src='{_heatmap(rm['values'], rm['hosts'], rm['rails'], 'node x rail', 'rail', 'host')}'>")
    if res.gpu_mats:
        flagged = {v.identifiers.get("host") for v in res.verdicts if v.kind in ("gpu", "nvlink")}
        show = [m for m in res.gpu_mats if m["host"] in flagged][:8] or res.gpu_mats[:2]
        parts.append("<h2>GPU x GPU</h2>")
        for m in show:
            parts.append(f"<h3>{e(m['host'])}: {e(m['test'])} (vs {e(m['reference'])})</h3>")
            parts.append(f"<img alt='gpu matrix' src='{_heatmap(m['values'], m['gpus'], m['gpus'], m['host'], 'destination GPU', 'source GPU')}'>")
    for title, items in (("Inconclusive", res.inconclusive), ("Intermittent", res.intermittent),
                         ("Caveats", res.caveats), ("Notes", res.notes)):
        if items:
            parts.append(f"<h2>{title}</h2><ul>" + "".join(f"<li>{e(x)}</li>" for x in items) + "</ul>")
    if criteria:
        parts.append(f"<h2>Acceptance criteria</h2><p>cluster: <b>{'PASS' if criteria['cluster']['pass'] else 'FAIL'}"
                     f"</b> ({e(criteria['source'])})</p><table><tr><th>test</th><th>result</th><th>why</th></tr>")
        for name, t in criteria["cluster"]["tests"].items():
            parts.append(f"<tr><td>{e(name)}</td><td>{'pass' if t['pass'] else 'FAIL'}</td>"
                         f"<td>{e('; '.join(t['why'][:10]))}</td></tr>")
        parts.append("</table>")
        bad = {h: n for h, n in criteria["nodes"].items() if not n["pass"]}
        if bad:
            parts.append("<ul>" + "".join(f"<li>{e(h)}: {e('; '.join(n['failed']))}</li>" for h, n in sorted(bad.items())) + "</ul>")
    if res.fleet:
        parts.append("<h2>Fleet statistics</h2><table><tr><th>class</th><th>size</th><th>median GB/s</th><th>spread %</th>"
                     "<th>count</th></tr>" + "".join(
                         f"<tr><td>{e(f['class'])}</td><td>{f['size']}</td><td>{f['median_gbps']:.4g}</td>"
                         f"<td>{f['spread_pct']:.2f}</td><td>{f['count']}</td></tr>" for f in res.fleet
                         if f['median_gbps'] is not None and not math.isnan(f['median_gbps'])) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
