"""One self-contained HTML file (no external resources): when and from what it was made, one line per finding,
the verdicts with their evidence, measured vs expected, and the matrices.

Readable by everyone: the colour scale is cividis (perceptually uniform and colour-blind safe, matplotlib's
`cividis`), every coloured cell also carries its number (small matrices) or a hover title with both host names
(large ones), sizes and identifiers are in human form. Host names are kept at any scale: matrices up to
MAX_TABLE_HOSTS hosts are HTML tables (hover: sender -> receiver and the value); larger ones are a picture plus a
per-host table of every host, paginated in pages of PAGE hosts.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os

import numpy as np

from fabricbench.analyze.report_common import human_ids, human_size, measured_words, provenance, summary_lines

MAX_TABLE_HOSTS = 64
NUMBERS_UP_TO = 16  # cells show their number up to this many rows/columns
PAGE = 200
LOW, HIGH = 50.0, 105.0  # % of reference mapped onto the colour scale


def _cmap():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps

    return colormaps["cividis"]


def _colour(pct: float) -> tuple[str, str]:
    """Background and readable text colour for a % of reference (NaN: grey)."""
    if pct is None or not math.isfinite(pct):
        return "#dddddd", "#000000"
    x = min(max((pct - LOW) / (HIGH - LOW), 0.0), 1.0)
    r, g, b, _ = _cmap()(x)
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}", ("#000000" if lum > 0.5 else "#ffffff")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _rate(gbps) -> str:
    return "" if gbps is None else f"{gbps:g} Gb/s"


def _legend() -> str:
    stops = "".join(f"<span style='background:{_colour(p)[0]};color:{_colour(p)[1]}'>{p:.0f}%</span>"
                    for p in (50, 60, 70, 80, 90, 100))
    return f"<p class='legend'>% of reference: {stops} (cividis; grey: not measured)</p>"


def _matrix_table(values, rows, cols, corner: str, what: str) -> str:
    """An HTML heatmap: cells coloured, titled 'row -> col: value', numbered when small."""
    e = html.escape
    arr = 100 * np.exp(np.array(values, dtype=float))
    numbers = max(arr.shape) <= NUMBERS_UP_TO
    out = [f"<table class='matrix{'' if numbers else ' dense'}'><tr><th>{e(corner)}</th>"]
    out += [f"<th class='col' title='{e(str(c))}'>{e(str(c))}</th>" for c in cols]
    out.append("</tr>")
    for i, r in enumerate(rows):
        out.append(f"<tr><th>{e(str(r))}</th>")
        for j, c in enumerate(cols):
            v = arr[i, j]
            bg, fg = _colour(v)
            text = f"{v:.0f}" if numbers and math.isfinite(v) else ""
            label = f"{r} {what} {c}: " + (f"{v:.1f}% of reference" if math.isfinite(v) else "not measured")
            out.append(f"<td style='background:{bg};color:{fg}' title='{e(label)}'>{text}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _heatmap_png(values, title: str, xlabel: str, ylabel: str, rows=None, cols=None) -> str:
    """A picture for matrices too large for a table; about 40 ticks per axis carry host names, not indices."""
    import matplotlib.pyplot as plt

    _cmap()
    arr = 100 * np.exp(np.array(values, dtype=float))
    fig, ax = plt.subplots(figsize=(11, 10))
    im = ax.imshow(arr, cmap="cividis", vmin=LOW, vmax=HIGH, interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax, label="% of reference")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for names, setter in ((cols, ax.set_xticks), (rows, ax.set_yticks)):
        if names:
            k = max(1, math.ceil(len(names) / 40))
            idx = list(range(0, len(names), k))
            if setter is ax.set_xticks:
                setter(idx, [str(names[i]) for i in idx], rotation=90, fontsize=6)
            else:
                setter(idx, [str(names[i]) for i in idx], fontsize=6)
    return _png(fig)


def _per_host_pages(levels: dict, values=None, names=None) -> str:
    """Every host by name, worst first: its sending and receiving level (% of the fleet, from the pair fit over
    all its partners; else the median of its matrix row and column), in pages of PAGE hosts."""
    e = html.escape
    if levels:
        hosts = list(levels)
        send = np.array([100 * math.exp(levels[h]["send"]) for h in hosts])
        recv = np.array([100 * math.exp(levels[h]["recv"]) for h in hosts])
        partners = [f"{levels[h].get('send_n', '')}/{levels[h].get('recv_n', '')}" for h in hosts]
    else:
        hosts = list(names)
        arr = 100 * np.exp(np.array(values, dtype=float))
        with np.errstate(all="ignore"):
            send = np.nanmedian(arr, axis=1)
            recv = np.nanmedian(arr, axis=0)
        partners = [""] * len(hosts)
    key = [min(a, b) if math.isfinite(min(a, b)) else 1e9 for a, b in zip(send, recv)]
    order = sorted(range(len(hosts)), key=lambda i: key[i])
    out = []
    for start in range(0, len(order), PAGE):
        chunk = order[start:start + PAGE]
        rows = "".join(
            f"<tr><td>{e(str(hosts[i]))}</td>" + "".join(
                f"<td style='background:{_colour(x)[0]};color:{_colour(x)[1]}'>"
                f"{'' if not math.isfinite(x) else f'{x:.0f}%'}</td>" for x in (send[i], recv[i]))
            + f"<td>{e(partners[i])}</td></tr>" for i in chunk)
        table = (f"<table><tr><th>host</th><th>sending</th><th>receiving</th><th>partners (send/recv)</th></tr>"
                 f"{rows}</table>")
        label = f"hosts {start + 1}-{start + len(chunk)} of {len(order)} (worst first)"
        out.append(f"<details{' open' if start == 0 else ''}><summary>{label}</summary>{table}</details>")
    return "".join(out)


def _bars(rows) -> str | None:
    import matplotlib.pyplot as plt

    _cmap()
    if not rows:
        return None
    labels = [f"{r['class']}\n{human_size(r['size'])}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 3.6))
    cmap = _cmap()
    ax.bar(x - 0.2, [r["measured_gbps"] for r in rows], width=0.4, label="measured", color=cmap(0.15))
    if any(r.get("expected_gbps") for r in rows):
        ax.bar(x + 0.2, [r.get("expected_gbps") or 0 for r in rows], width=0.4, label="expected", color=cmap(0.85),
               edgecolor="#555555", hatch="//")
    ax.set_xticks(x, labels, fontsize=7, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center")
    ax.set_ylabel("GB/s")
    ax.legend(fontsize=8)
    return _png(fig)


CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1500px;color:#111}"
       "table{border-collapse:collapse;font-size:13px;margin:.4em 0}"
       "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left}th{background:#eee}"
       ".matrix td{text-align:center;min-width:2.2em;font-variant-numeric:tabular-nums}"
       ".matrix.dense td{min-width:9px;height:9px;padding:0;border:0}.matrix.dense th{font-size:9px;padding:0 2px}"
       ".matrix th.col{writing-mode:vertical-rl;transform:rotate(180deg)}"
       ".FAULT{color:#fff;background:#b00;padding:0 4px;font-weight:bold}.maybe{color:#555}"
       ".critical{font-weight:bold}.meta{color:#444;font-size:13px}.legend span{padding:2px 6px}"
       ".status-healthy{color:#1a7f37}.status-faults{color:#b00}.status-inconclusive{color:#9a6700}"
       "img{max-width:100%}code{font-size:12px}table.wide{width:100%}td.why{min-width:22em}")


def render(res, criteria: dict | None = None) -> str:
    e = html.escape
    prov = provenance(res)
    inputs = prov["inputs"]
    shown = ", ".join(f"<code title='{e(p)}'>{e(os.path.basename(p.rstrip('/')) or p)}</code>" for p in inputs[:12])
    if len(inputs) > 12:
        shown += f" and {len(inputs) - 12} more"
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>fabricbench analyze: {e(res.status)}</title><style>{CSS}</style></head><body>",
             f"<h1>fabricbench analyze: <span class='status-{e(res.status)}'>{e(res.status.upper())}</span> "
             f"(exit {res.exit_code})</h1>",
             f"<p class='meta'>generated {e(prov['generated'])} by fabricbench {e(prov['version'])}"
             f" &middot; inputs: {shown or 'none'}"
             f" &middot; topology: {e(str(res.topology or 'none'))}</p>",
             f"<p>{e(measured_words(res))}</p>"]
    rows = summary_lines(res)
    parts.append("<h2>Findings</h2>")
    if rows:
        parts.append("<table><tr><th></th><th>component</th><th>how far below</th><th>confidence</th>"
                     "<th>what to do</th></tr>")
        for r in rows:
            below = f"{r['below']} {r['vs']}".strip() if r["below"] not in ("", "fact") else f"fact ({r['vs']})"
            parts.append(f"<tr><td><span class='{e(r['status'])}'>{e(r['status'])}</span></td><td>{e(r['what'])}</td>"
                         f"<td>{e(below)}</td><td>{e(r['conf'])}</td><td>{e(r['do'])}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No faulty component found.</p>")
    for c in res.cluster:
        parts.append(f"<p><b>cluster ({e(c['basis'])}):</b> {e(c['summary'])}</p>")
    if res.verdicts:
        parts.append("<h2>Verdicts</h2><table class='wide'><tr><th>component</th><th>kind</th><th>severity</th><th>confidence</th>"
                     "<th>below</th><th>why</th><th>evidence</th><th>retest</th><th>identifiers</th></tr>")
        for v in res.verdicts:
            parts.append(f"<tr><td>{e(v.component)}</td><td>{e(v.kind)}</td><td class='{e(v.severity)}'>"
                         f"{e(v.severity)}</td><td>{v.confidence:.2f}</td><td>{v.deficit_pct:.0f}%</td>"
                         f"<td class='why'>{e(v.summary)}</td><td>{'<br>'.join(e(x) for x in v.evidence)}</td>"
                         f"<td>{'<br>'.join(e(x) for x in v.retest)}</td><td>{e(human_ids(v.identifiers))}</td></tr>")
        parts.append("</table>")
    if res.expected:
        parts.append("<h2>Measured vs expected</h2><table><tr><th>what</th><th>size</th><th>measured</th>"
                     "<th>expected</th><th>%</th><th>bound / formula</th></tr>")
        for x in res.expected:
            pct = 100 * x["ratio"] if x.get("ratio") is not None and math.isfinite(x["ratio"]) else float("nan")
            bg, fg = _colour(pct)
            parts.append(f"<tr><td>{e(str(x['class']))}</td><td>{human_size(x['size'])}</td>"
                         f"<td>{x['measured_gbps']:.4g} GB/s</td><td>{x['expected_gbps']:.4g} GB/s</td>"
                         f"<td style='background:{bg};color:{fg}'>{pct:.0f}%</td>"
                         f"<td>{e(str(x.get('bound') or ''))} {e(str(x.get('algorithm') or ''))}"
                         f"<br><small>{e(str(x.get('formula') or ''))[:200]}</small></td></tr>")
        parts.append("</table>")
    bars = _bars(res.expected or [{"class": f["class"], "size": f["size"], "measured_gbps": f["median_gbps"],
                                   "expected_gbps": None} for f in res.fleet
                                  if f.get("median_gbps") is not None and math.isfinite(f["median_gbps"])])
    if bars:
        parts.append(f"<img alt='measured and expected bandwidth per class and size' src='{bars}'>")
    if res.pair_matrix and res.pair_matrix["names"]:
        pm = res.pair_matrix
        names = pm["names"]
        parts.append("<h2>Pair matrix</h2><p>row sends, column receives; % of the fleet reference; hover a cell for "
                     "both hosts</p>" + _legend())
        if pm.get("step", 1) > 1:
            parts.append(f"<p>{pm['n']} hosts: one host in {pm['step']} is drawn in the matrix; every host is in "
                         "the table below.</p>")
        if len(names) <= MAX_TABLE_HOSTS:
            parts.append(_matrix_table(pm["values"], names, names, "send \\ recv", "->"))
        else:
            img = _heatmap_png(pm["values"], "directed pairs", "receiver", "sender", names, names)
            parts.append(f"<img alt='pair matrix' src='{img}'>")
        parts.append("<h3>Every host</h3>" + _per_host_pages(res.node_levels, pm["values"], names))
    if res.rail_matrix and res.rail_matrix.get("hosts"):
        rm = res.rail_matrix
        parts.append("<h2>Host x rail</h2>" + _legend())
        if len(rm["hosts"]) <= 4 * MAX_TABLE_HOSTS:
            parts.append(_matrix_table(rm["values"], rm["hosts"], rm["rails"], "host \\ rail", "rail"))
        else:
            img = _heatmap_png(rm["values"], "host x rail", "rail", "host", rm["hosts"], rm["rails"])
            parts.append(f"<img alt='host x rail' src='{img}'>")
    if res.gpu_mats:
        flagged = {v.identifiers.get("host") for v in res.verdicts if v.kind in ("gpu", "nvlink")}
        show = [m for m in res.gpu_mats if m["host"] in flagged][:8] or res.gpu_mats[:2]
        parts.append("<h2>GPU x GPU</h2>" + _legend())
        for m in show:
            parts.append(f"<h3>{e(m['host'])}: {e(m['test'])} (vs {e(m['reference'])})</h3>")
            parts.append(_matrix_table(m["values"], [f"GPU{g}" for g in m["gpus"]], [f"GPU{g}" for g in m["gpus"]],
                                       "src \\ dst", "->"))
    nccl = getattr(res, "nccl", None) or []
    for log in nccl:
        parts.append(f"<h2>NCCL: {e(os.path.basename(log['source']))}</h2><p>{e(log.get('note', ''))}</p>")
        ranks = log.get("ranks") or []
        if ranks:
            parts.append("<details><summary>per rank</summary><table><tr><th>rank</th><th>host</th><th>GPU</th>"
                         "<th>transport</th><th>network</th><th>GPUDirect RDMA</th><th>NICs</th></tr>")
            for r in ranks[:2048]:
                gdr = {True: "yes", False: "NO", None: ""}[r.get("gdr")]
                parts.append(f"<tr><td>{e(str(r.get('rank')))}</td><td>{e(str(r.get('host') or ''))}</td>"
                             f"<td>{e(str(r.get('device') if r.get('device') is not None else ''))}</td>"
                             f"<td>{e(str(r.get('transport') or 'not reported'))}</td>"
                             f"<td>{e(str(r.get('network') or ''))}</td><td>{gdr}</td>"
                             f"<td>{e(', '.join(r.get('nics') or []))}</td></tr>")
            parts.append("</table></details>")
    link = getattr(res, "link_state", None) or []
    if link:
        parts.append("<h2>Link state</h2><details open><summary>ports</summary><table><tr><th>host</th><th>port</th>"
                     "<th>state</th><th>physical</th><th>rate</th><th>link layer</th><th>read from</th></tr>")
        for p in link[:4096]:
            parts.append(f"<tr><td>{e(str(p['host'] or ''))}</td><td>{e(p['port'])}</td><td>{e(p['state'])}</td>"
                         f"<td>{e(p['physical_state'])}</td><td>{_rate(p['rate_gbps'])}</td>"
                         f"<td>{e(p['link_layer'])}</td><td>{e(p['source'])}</td></tr>")
        parts.append("</table></details>")
    compared = getattr(res, "compared", None) or []
    if compared:
        parts.append("<h2>What was compared with what</h2><ul>" + "".join(
            f"<li>{e(c['what'])}: {e(c['basis'])}{(' (' + e(c['detail']) + ')') if c.get('detail') else ''}</li>"
            for c in compared) + "</ul>")
    for title, items in (("Inconclusive", res.inconclusive), ("Intermittent", res.intermittent),
                         ("Retest", getattr(res, "retests", None) or []), ("Caveats", res.caveats), ("Notes", res.notes)):
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
        parts.append("<h2>Fleet statistics</h2><table><tr><th>class</th><th>size</th><th>median</th><th>spread</th>"
                     "<th>measurements</th></tr>" + "".join(
                         f"<tr><td>{e(f['class'])}</td><td>{human_size(f['size'])}</td><td>{f['median_gbps']:.4g} GB/s</td>"
                         f"<td>{f['spread_pct']:.1f}%</td><td>{f['count']}</td></tr>" for f in res.fleet
                         if f['median_gbps'] is not None and not math.isnan(f['median_gbps'])) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
