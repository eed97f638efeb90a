"""report.md / report.html: what was tried, what was rejected and why, and the speed-up per op x size with
its 95% interval; the HTML adds busbw vs size, default vs tuned (decimal GB/s)."""

from __future__ import annotations

import base64
import html
import io
import math


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _rows(summary: dict) -> list[list[str]]:
    rows = []
    for d in summary["decisions"]:
        ci = (f"{_fmt(d['speedup'])}x ({_fmt(d['ci_low'])}-{_fmt(d['ci_high'])}, {d['pairs']} pairs)"
              if d["pairs"] else "-")
        rows.append([d["op"], str(d["size_bytes"]), d["choice"], d["effective"], _fmt(d["default_us"], ".1f"),
                     _fmt(d["tuned_us"], ".1f"), _fmt(d["default_busbw_gbps"], ".4f"), _fmt(d["tuned_busbw_gbps"], ".4f"),
                     ci, d["verdict"]])
    return rows


HEAD = ["op", "size (B)", "best in search", "written", "default (µs)", "tuned (µs)", "default busbw (GB/s)",
        "tuned busbw (GB/s)", "speed-up default/tuned, 95% CI", "verdict"]


def render_md(summary: dict, results) -> str:
    prov = summary["provenance"]
    out = ["# fabricbench tune report", "",
           f"- backend: {prov['backend']}; {prov['topology']['nranks']} ranks on {prov['topology']['nnodes']} node(s): "
           f"{', '.join(prov['topology']['hosts'] or [])}",
           f"- versions: {', '.join(f'{k} {v}' for k, v in prov['versions'].items())}",
           f"- search: {summary['mode']}; " + "; ".join(f"{o['op']}: {o['runs']} runs in {o['elapsed_s']:.0f} s"
                                                         for o in summary["ops"]),
           "- A gain is claimed only when the 95% interval of the speed-up (paired, interleaved default/tuned runs,"
           " t-interval on log ratios) lies above 1; otherwise the default is kept: \"no significant gain\".", ""]
    out += ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(r) + " |" for r in _rows(summary)]
    rejected = [(o["op"], name, why) for o in summary["ops"] for name, why in o["rejected"].items()]
    out += ["", "## Rejected candidates", ""]
    out += [f"- {op} {name}: {why}" for op, name, why in rejected] or ["- none"]
    walks = [(o["op"], w) for o in summary["ops"] for w in o.get("resource_stage", [])]
    out += ["", "## Resource stage (coordinate descent)", ""]
    if not summary.get("resources", True):
        out += ["- off (--no-resources)"]
    elif not walks:
        out += ["- nothing walked (no subspace with resource knobs won a size, or --exhaustive)"]
    for op, w in walks:
        trail = ", ".join(f"{s['axis']}={s['value']}: {_fmt(s['cost_us'], '.1f')} µs{' (kept)' if s['accepted'] else ''}"
                          for s in w["steps"])
        debug = [a for a, info in w["axes"].items() if info.get("debug_only") and not info.get("written")]
        out.append(f"- {op} {w['group']} (sizes {', '.join(map(str, w['sizes']))}; noise {100 * w['noise']:.1f}%): "
                   f"from {w['base']} {_fmt(w['start_cost_us'], '.1f')} µs to {w['chosen']} {_fmt(w['best_cost_us'], '.1f')} µs "
                   f"({_fmt(w['single_run_gain'])}x in single runs) in {w['runs']} run(s)"
                   + (f"; stopped early: {w['stopped']}" if w["stopped"] else "")
                   + (f"; steps: {trail}" if trail else "")
                   + (f"; debug-only in NCCL's docs (recorded, never written to nccl.env): {', '.join(debug)}" if debug else ""))
    for x in summary.get("debug_only_not_written", []):
        out.append(f"- not written (debug-only): {x['op']} {x['size_bytes']} B {' '.join(f'{k}={v}' for k, v in x['env'].items())}"
                   " -- the confirmed speed-up above is of the written configuration, without it")
    if not any(d["kept"] and d["effective"] != "default" for d in summary["decisions"]):
        out += ["", "No significant gain: the written configuration keeps the library's defaults."]
    return "\n".join(out) + "\n"


def _plot_png(summary: dict) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ops = sorted({d["op"] for d in summary["decisions"]})
    fig, axes = plt.subplots(1, max(1, len(ops)), figsize=(5.5 * max(1, len(ops)), 4), squeeze=False)
    for ax, op in zip(axes[0], ops):
        ds = sorted((d for d in summary["decisions"] if d["op"] == op), key=lambda d: d["size_bytes"])
        sizes = [d["size_bytes"] for d in ds]
        ax.plot(sizes, [d["default_busbw_gbps"] for d in ds], "o-", label="default")
        ax.plot(sizes, [d["tuned_busbw_gbps"] for d in ds], "s--", label="tuned")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("size (bytes)")
        ax.set_ylabel("busbw (GB/s, decimal)")
        ax.set_title(op)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(summary: dict, results) -> str:
    md = render_md(summary, results)
    intro = "".join(f"<li>{html.escape(line[2:])}</li>" for line in md.splitlines() if line.startswith("- "))
    table = "<table border=1 cellpadding=3><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in HEAD) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in _rows(summary))
    table += "</table>"
    png = _plot_png(summary)
    img = f'<img alt="busbw vs size, default vs tuned" src="data:image/png;base64,{png}">' if png else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fabricbench tune</title></head><body>"
            f"<h1>fabricbench tune report</h1><ul>{intro}</ul>{table}<h2>busbw vs size</h2>{img}</body></html>\n")
