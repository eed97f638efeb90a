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
