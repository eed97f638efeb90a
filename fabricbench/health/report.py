"""Reports over the history: the terminal view (`health history`), and `health report` as self-contained HTML
(trend plots per component and the latest heatmap as embedded PNGs, no network), Markdown and JUnit.

Exit codes as `analyze`: 0 healthy, 1 a component regressed/failed/flaps (or is suspect), 3 inconclusive (no
run in the period, or every component still new).
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timedelta, timezone

import pandas as pd

from fabricbench.errors import UsageError
from fabricbench.health import history as hist

BAD = ("suspect", "regressed", "flapping", "failed")
SHOWN_KINDS = ("nic", "uplink", "node", "gpu", "nvlink", "pcie", "port")


def parse_since(text: str) -> timedelta:
    t = text.strip().lower()
    units = {"d": 86400, "h": 3600, "m": 60, "w": 7 * 86400}
    try:
        if t and t[-1] in units:
            return timedelta(seconds=float(t[:-1]) * units[t[-1]])
        return timedelta(days=float(t))
    except ValueError:
        raise UsageError(f"--since {text!r}: give a duration like 30d, 12h or 2w") from None


def latest_states(con) -> pd.DataFrame:
    return con.execute("SELECT * FROM states WHERE run_ts = (SELECT max(run_ts) FROM states)").df()


def history_text(directory, component: str | None, all_states: bool) -> str:
    con = hist.connect(directory)
    runs = hist.runs(directory)
    lines = [f"# history {hist.root(directory)}: {len(runs)} run(s)"]
    for r in runs[-10:]:
        lines.append(f"{r.get('run_id')}  {r.get('kind', '?'):10s} {r.get('analyze', {}).get('status', r.get('status', ''))}"
                     f"  {len(r.get('nodes', []) or [r.get('node')])} node(s)  {r.get('spent_s', r.get('seconds', 0)):.0f} s")
    if component:
        df = con.execute("SELECT run_id, component, metric, value, status FROM measurements WHERE component LIKE ? "
                         "ORDER BY component, metric, run_ts", [component]).df()
        lines.append(df.to_string(index=False) if len(df) else f"(no readings of {component})")
        return "\n".join(lines) + "\n"
    st = latest_states(con)
    shown = st if all_states else st[st["state"].isin(BAD + ("recovered",))]
    shown = shown[shown["component_kind"] != "pair"] if not all_states else shown
    if shown.empty:
        lines.append("every component ok or new" if len(st) else "no states yet (no sweep run)")
    lines += state_lines(shown, limit=10_000)
    return "\n".join(lines) + "\n"


def _s(v) -> str:
    return "-" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)


def _fmt(v, metric: str) -> str:
    if v is None or pd.isna(v):
        return "-"
    return f"{v / 1e9:.4g} GB/s" if "bytes_per_second" in metric else f"{v:.4g}"


def gather(directory, since: timedelta, label: str | None = None) -> dict:
    con = hist.connect(directory)
    cutoff = datetime.now(timezone.utc) - since
    st = latest_states(con)
    trend = con.execute(
        "SELECT component_kind, component, metric, run_ts, median(value) AS value FROM measurements "
        "WHERE run_ts >= ? AND component_kind IN ('nic', 'uplink', 'collective') AND value IS NOT NULL AND unit = 'bytes_per_second' "
        "GROUP BY ALL ORDER BY component, metric, run_ts", [cutoff]).df()
    last_run = con.execute("SELECT max(run_ts) FROM measurements WHERE source = 'sweep'").fetchone()[0]
    heat = con.execute("SELECT node, partner, median(value) AS value FROM measurements WHERE component_kind = 'pair' "
                       "AND run_ts = ? GROUP BY ALL", [last_run]).df() if last_run is not None else pd.DataFrame()
    nruns = con.execute("SELECT count(DISTINCT run_id) FROM measurements WHERE run_ts >= ?", [cutoff]).fetchone()[0]
    return {"states": st, "trend": trend, "heat": heat, "runs": nruns, "since": label or str(since), "last_run": last_run}


CONFIRMED = ("regressed", "flapping", "failed")


def exit_code_of(st: pd.DataFrame, runs: int) -> int:
    """1: a confirmed problem (regressed, flapping, a failed check); 3: only a suspect reading (one night is not
    a fault: nobody is woken up for it) or nothing to compare with yet; 0: every component ok or recovered."""
    if not st.empty and st["state"].isin(CONFIRMED).any():
        return 1
    if runs == 0 or st.empty or (st["state"] == "new").all() or st["state"].eq("suspect").any():
        return 3
    return 0


def exit_code(data: dict) -> int:
    return exit_code_of(data["states"], data["runs"])


def state_lines(st: pd.DataFrame, limit: int = 40) -> list[str]:
    """One line per component not ok (NICs, uplinks, checks first; then pairs), with first seen and last good."""
    if st.empty:
        return []
    order = st.assign(_pair=st["component_kind"].eq("pair")).sort_values(["_pair", "state", "component", "metric"])
    lines = [f"{r.state:9s} {r.component} {r.metric}: {_fmt(r.value, r.metric)} vs baseline {_fmt(r.baseline, r.metric)}"
             f" (first seen {_s(r.first_seen_run)}, last good {_s(r.last_good_run)})"
             for r in order.itertuples(index=False)]
    return lines[:limit] + ([f"... and {len(lines) - limit} more (fabricbench health history --all)"] if len(lines) > limit else [])


def regressions(st: pd.DataFrame) -> pd.DataFrame:
    if st.empty:
        return st
    bad = st[st["state"].isin(BAD + ("recovered",))]
    return bad.sort_values(["state", "drop"], ascending=[True, False])


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _trend_plots(data: dict, limit: int) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trend, st = data["trend"], data["states"]
    if trend.empty:
        return []
    # Components not ok first, then the rest, up to `limit` plots (a fleet of thousands gets its worst ones).
    order = list(regressions(st)["component"]) if not st.empty else []
    present = set(trend["component"].unique())
    comps = [c for c in dict.fromkeys(order + sorted(present)) if c in present][:limit]
    out = []
    by_comp = {c: g for c, g in trend[trend["component"].isin(comps)].groupby("component")}
    for comp in comps:
        g = by_comp[comp]
        fig, ax = plt.subplots(figsize=(5, 2.2))
        for metric, m in g.groupby("metric"):
            ax.plot(m["run_ts"], m["value"] / 1e9, marker="o", ms=3, label=metric.split("_")[0])
            base = st[(st["component"] == comp) & (st["metric"] == metric)]["baseline"] if not st.empty else []
            if len(base) and pd.notna(base.iloc[0]):
                ax.axhline(base.iloc[0] / 1e9, ls="--", lw=0.8, color="grey")
        ax.set_ylabel("GB/s")
        ax.set_title(comp, fontsize=9)
        ax.legend(fontsize=7)
        fig.autofmt_xdate()
        out.append((comp, _png(fig)))
    return out


def _heatmap(data: dict, max_nodes: int = 128) -> str | None:
    heat = data["heat"]
    if heat is None or heat.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    nodes = sorted(set(heat["node"]) | set(heat["partner"]))[:max_nodes]
    idx = {n: i for i, n in enumerate(nodes)}
    mat = np.full((len(nodes), len(nodes)), np.nan)
    for r in heat.itertuples(index=False):
        if r.node in idx and r.partner in idx and pd.notna(r.value):
            mat[idx[r.node], idx[r.partner]] = r.value / 1e9
    fig, ax = plt.subplots(figsize=(5, 4.2))
    im = ax.imshow(mat, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="GB/s")
    if len(nodes) <= 32:
        ax.set_xticks(range(len(nodes)), nodes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(nodes)), nodes, fontsize=7)
    ax.set_xlabel("receiver")
    ax.set_ylabel("sender")
    ax.set_title(f"last sweep: pair bandwidth (first {len(nodes)} nodes)", fontsize=9)
    return _png(fig)


def render_html(data: dict, plots: int = 24) -> str:
    st = data["states"]
    reg = regressions(st)
    rows = "".join(
        f"<tr><td>{html.escape(r.state)}</td><td>{html.escape(r.component)}</td><td>{html.escape(r.metric)}</td>"
        f"<td>{_fmt(r.value, r.metric)}</td><td>{_fmt(r.baseline, r.metric)}</td>"
        f"<td>{'' if pd.isna(r.drop) else f'{100 * r.drop:.0f}%'}</td><td>{html.escape(_s(r.first_seen_run))}</td>"
        f"<td>{html.escape(_s(r.last_good_run))}</td><td>{html.escape(str(r.evidence or ''))}</td></tr>"
        for r in reg.itertuples(index=False))
    counts = st["state"].value_counts().to_dict() if not st.empty else {}
    plots_html = "".join(f'<figure><img alt="trend {html.escape(c)}" src="{p}"></figure>' for c, p in _trend_plots(data, plots))
    heat = _heatmap(data)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>fabricbench health</title>
<style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px}}
figure{{display:inline-block;margin:4px}}</style></head><body>
<h1>fabricbench health report</h1>
<p>{data['runs']} run(s) in the last {data['since']}; latest sweep {data['last_run']}. States:
{html.escape(', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none')}. Each state compares a component
with its own baseline (median of its recent good runs); 'new' has no baseline yet.</p>
<h2>Regressions and changes ({len(reg)})</h2>
<table><tr><th>state</th><th>component</th><th>metric</th><th>latest</th><th>baseline</th><th>drop</th>
<th>first seen</th><th>last good</th><th>readings</th></tr>{rows}</table>
<h2>Trends</h2>{plots_html or '<p>no NIC or uplink readings in this period</p>'}
<h2>Latest heatmap</h2>{f'<img alt="heatmap" src="{heat}">' if heat else '<p>no pair readings</p>'}
</body></html>
"""


def render_md(data: dict) -> str:
    reg = regressions(data["states"])
    lines = [f"# fabricbench health: {data['runs']} run(s) in the last {data['since']}", "",
             "| state | component | metric | latest | baseline | drop | first seen | last good |", "|---|---|---|---|---|---|---|---|"]
    for r in reg.itertuples(index=False):
        lines.append(f"| {r.state} | {r.component} | {r.metric} | {_fmt(r.value, r.metric)} | {_fmt(r.baseline, r.metric)} | "
                     f"{'' if pd.isna(r.drop) else f'{100 * r.drop:.0f}%'} | {_s(r.first_seen_run)} | {_s(r.last_good_run)} |")
    if reg.empty:
        lines.append("| - | nothing regressed | | | | | | |")
    return "\n".join(lines) + "\n"


def render_junit(data: dict) -> str:
    st = data["states"]
    st = st[st["component_kind"] != "pair"] if not st.empty else st
    cases = []
    for r in st.itertuples(index=False):
        name = html.escape(f"{r.component} {r.metric}", quote=True)
        if r.state in BAD:
            msg = html.escape(f"{r.state}: {_fmt(r.value, r.metric)} vs baseline {_fmt(r.baseline, r.metric)}, first seen "
                              f"{_s(r.first_seen_run)}", quote=True)
            cases.append(f'<testcase classname="health.{r.component_kind}" name="{name}"><failure message="{msg}"/></testcase>')
        elif r.state == "new":
            cases.append(f'<testcase classname="health.{r.component_kind}" name="{name}"><skipped message="new: no baseline yet"/></testcase>')
        else:
            cases.append(f'<testcase classname="health.{r.component_kind}" name="{name}"/>')
    fails = sum(1 for c in cases if "<failure" in c)
    skips = sum(1 for c in cases if "<skipped" in c)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="fabricbench-health" tests="{len(cases)}" '
            f'failures="{fails}" skipped="{skips}">\n' + "\n".join(cases) + "\n</testsuite>\n")
