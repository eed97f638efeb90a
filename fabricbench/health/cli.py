"""`fabricbench health ...` (registered by fabricbench.cli through `register(app)`). Thin: parse, call the library."""

from __future__ import annotations

import json
import re
import os
from pathlib import Path
from typing import List, Optional

import typer

from fabricbench.errors import UsageError

health_app = typer.Typer(help="Periodic fabric health: node checks, budgeted sweeps, history, regressions, "
                              "drain/resume, Prometheus metrics, reports.", no_args_is_help=True)


def _default_state_dir() -> Path:
    env = os.environ.get("FABRICBENCH_STATE_DIR")
    if env:
        return Path(env)
    system = Path("/var/lib/fabricbench/health")
    if os.access(system.parent if system.parent.exists() else Path("/var/lib"), os.W_OK):
        return system
    return Path.home() / ".cache" / "fabricbench" / "health"


def _node_type(topology: Optional[str]):
    if not topology:
        return None
    from fabricbench.topology.load import load_topology

    topo = load_topology(topology)
    return topo.node_types[topo.fabric.node_type]


def _path(value: Optional[str], option: str) -> Optional[Path]:
    if value is None:
        return None
    p = Path(value)
    if not p.exists():
        raise UsageError(f"{option} {value}: no such file or directory")
    return p


@health_app.command("node")
def node_cmd(
    quick: bool = typer.Option(False, "--quick", help="Slurm HealthCheckProgram mode: node-local checks only, no "
                               "network traffic, no retry delay; prints one line per check."),
    check: Optional[List[str]] = typer.Option(None, "--check", help="Run only this check (repeatable); "
                                              "'fabricbench health checks' lists them."),
    topology: Optional[str] = typer.Option(None, "--topology", help="Topology file or name: what this node should have."),
    node: Optional[str] = typer.Option(None, "--node", help="This node's Slurm name [default: short hostname]."),
    sysfs_root: str = typer.Option("/sys", "--sysfs-root", help="sysfs mount to read (a saved tree in tests)."),
    nvidia_smi_q: Optional[str] = typer.Option(None, "--nvidia-smi-q", help="Saved `nvidia-smi -q` output."),
    nvlink_status: Optional[str] = typer.Option(None, "--nvlink-status", help="Saved `nvidia-smi nvlink -s` output."),
    ib_ports: Optional[str] = typer.Option(None, "--ib-ports", help="Saved ibstat/ibstatus/ibv_devinfo output."),
    kernel_log: Optional[str] = typer.Option(None, "--kernel-log", help="Kernel log (kern.log, dmesg or journalctl -k output) for XIDs."),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help="Where the XID log position is remembered "
                                            "[default: $FABRICBENCH_STATE_DIR, /var/lib/fabricbench/health or ~/.cache/fabricbench/health]."),
    live: bool = typer.Option(True, "--live/--no-live", help="Run nvidia-smi here for outputs not given as files."),
    history: Optional[str] = typer.Option(None, "--history", help="Also append the results to this history directory."),
    textfile: Optional[str] = typer.Option(None, "--textfile", help="Also write the Prometheus .prom file into DIR."),
    drain: bool = typer.Option(False, "--drain", help="Drain this node on a failed check (reason "
                               "'fabricbench:{auto} check: ...'); resume it when all pass and the reason is ours."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --drain: print the scontrol commands, change nothing."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Write the results as JSON to FILE ('-': stdout)."),
) -> None:
    """Node-local checks (GPUs, NVLink, PCIe, IB/RoCE ports, XID, ECC/row remap): seconds, no network traffic.

    Exit codes: 0 all passed, 1 a check failed, 2 bad input, 3 inconclusive (something could not be checked)."""
    from fabricbench.health import nodecheck
    from fabricbench.health.checks import Sources

    root = Path(sysfs_root)
    if not root.is_dir():
        raise UsageError(f"--sysfs-root {sysfs_root}: not a directory")
    src = Sources(sysfs_root=root, nvidia_smi_q=_path(nvidia_smi_q, "--nvidia-smi-q"),
                  nvlink_status=_path(nvlink_status, "--nvlink-status"), ib_ports=_path(ib_ports, "--ib-ports"),
                  kernel_log=_path(kernel_log, "--kernel-log"),
                  state_dir=Path(state_dir) if state_dir else _default_state_dir(), node_type=_node_type(topology),
                  live=live)
    report = nodecheck.run_checks(src, check, node=node, retry=not quick)
    if json_out == "-":
        typer.echo(json.dumps({"node": report.node, "status": report.status,
                               "checks": [r.as_dict() for r in report.results]}, indent=1))
    else:
        typer.echo(nodecheck.render(report), nl=False)
        if json_out:
            from fabricbench.results import atomic_write_json

            atomic_write_json(json_out, {"node": report.node, "status": report.status,
                                         "checks": [r.as_dict() for r in report.results]})
    if history or textfile:
        from fabricbench.health import runner

        runner.record_node_report(report, history, textfile)
    if drain:
        from fabricbench.health import lifecycle

        if report.failed:
            why = "; ".join(f"{r.name}: {r.summary}" for r in report.failed)
            lifecycle.drain_check(report.node, why, apply=not dry_run, echo=typer.echo)
        elif report.status == "pass":
            lifecycle.resume(report.node, lifecycle.CHECK_TAG, apply=not dry_run, echo=typer.echo)
    raise typer.Exit(report.exit_code)


@health_app.command("checks")
def checks_cmd() -> None:
    """List the node checks."""
    from fabricbench.health.checks import all_checks

    for c in all_checks().values():
        typer.echo(f"{c.name:8s} {c.description}")


@health_app.command("query")
def query_cmd(
    sql: str = typer.Argument(..., help="SQL over the views `measurements` and `states` (docs/health.md)."),
    history: str = typer.Option("results/history", "--history", help="History directory."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
) -> None:
    """Run SQL (DuckDB) over the history store."""
    from fabricbench.health import history as hist

    table = hist.query(history, sql)
    df = table.to_pandas()
    if fmt == "csv":
        typer.echo(df.to_csv(index=False), nl=False)
    elif fmt == "json":
        typer.echo(df.to_json(orient="records", date_format="iso"))
    elif fmt == "table":
        typer.echo(df.to_string(index=False) if len(df) else "(no rows)")
    else:
        raise UsageError(f"--format {fmt!r}: choose table, csv or json")


@health_app.command("history")
def history_cmd(
    history: str = typer.Option("results/history", "--history", help="History directory."),
    component: Optional[str] = typer.Option(None, "--component", help="Show this component's readings (SQL LIKE pattern)."),
    all_states: bool = typer.Option(False, "--all", help="List every component's state, not only those not ok."),
) -> None:
    """Runs in the store, and the components whose state is not ok (with first-seen and last good run)."""
    from fabricbench.health import history as hist
    from fabricbench.health import report as rep

    typer.echo(rep.history_text(history, component, all_states), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(health_app, name="health")


def _seconds(text: str) -> float:
    """--budget: 900s, 20m, 1.5h; a bare number is minutes."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smh]?)\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--budget {text!r}: give a positive duration like 900s, 20m or 1h")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "": 60}[m.group(2)]


@health_app.command("run")
def run_cmd(
    budget: str = typer.Option("20m", "--budget", help="Time budget for the sweep, e.g. 20m, 1h, 900s."),
    nodelist: Optional[str] = typer.Option(None, "--nodelist", help="Nodes to sweep (Slurm host list)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", help="With --local: how many local processes act as nodes."),
    local: bool = typer.Option(False, "--local", help="No Slurm: local processes act as the nodes."),
    history: str = typer.Option("results/history", "--history", help="History directory."),
    topology: Optional[str] = typer.Option(None, "--topology", help="Topology (leaves: uplink series, verdicts)."),
    gpus_per_node: int = typer.Option(0, "--gpus-per-node", help="GPUs per node, for the GPU-hours estimate."),
    partition: Optional[str] = typer.Option(None, "--partition", "-p", help="Slurm partition."),
    per_rail: bool = typer.Option(False, "--per-rail", help="GPU nodes: rank k of each node tests rail k (one rank "
                                  "per GPU, --gpus-per-node of them): one NIC series per rail."),
    hca: Optional[str] = typer.Option(None, "--hca", help="With --per-rail: the HCA of each rail, comma-separated."),
    minbytes: str = typer.Option("1M", "-b", "--minbytes", help="Smallest message size."),
    maxbytes: str = typer.Option("1M", "-e", "--maxbytes", help="Largest message size."),
    iters: int = typer.Option(5, "-n", "--iters", help="Timed iterations per size."),
    warmup: int = typer.Option(1, "-w", "--warmup", help="Warm-up iterations per size."),
    round_seconds: Optional[float] = typer.Option(None, "--round-seconds", help="Seconds one round takes [default: from the last runs]."),
    fixed_seconds: Optional[float] = typer.Option(None, "--fixed-seconds", help="Fixed seconds per run (allocation, start) [default: from the last runs]."),
    drop: float = typer.Option(0.15, "--drop", help="Smallest drop below a component's baseline called low (fraction)."),
    confirm: str = typer.Option("2/3", "--confirm", help="k/m: drain after k of the last m runs read low, with >= k partners."),
    drain: bool = typer.Option(False, "--drain", help="Drain confirmed nodes and resume fabricbench-drained nodes that pass a retest."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, the sweep command and scontrol commands; run nothing."),
    textfile: Optional[str] = typer.Option(None, "--textfile", help="Write the Prometheus .prom file into DIR."),
    out: Optional[str] = typer.Option(None, "--out", help="Sweep results directory [default: results/health/<run>]."),
    collectives: Optional[bool] = typer.Option(None, "--collectives/--no-collectives", help="After the sweep, "
                                               "all_reduce over subsets (each leaf and all nodes; without a topology "
                                               "groups of 4 nodes and all): busbw per subset into the history, judged "
                                               "against its own history and the topology. Default: in the time the "
                                               "sweep leaves in the budget; --collectives reserves their time first."),
    collective_size: str = typer.Option("64M", "--collective-size", help="Message size of the collectives "
                                        "(judged against the topology from 256M, or when one operation takes >= 10 ms "
                                        "at the expected busbw)."),
    verify_tuning: Optional[List[str]] = typer.Option(None, "--verify-tuning", help="After the sweep, within the "
                                                      "budget: 'fabricbench tune verify DIR' (repeatable); outcome in "
                                                      "the history, the .prom file and the report."),
    verify_pairs: int = typer.Option(3, "--verify-pairs", help="Interleaved default/tuned pairs per --verify-tuning."),
) -> None:
    """A health sweep within a time budget: plan, sweep, collectives over subsets, analyze, history, states,
    drain/resume, metrics.

    Exit codes: 0 healthy, 1 a component is regressed/flapping/failed, 2 bad input, 3 inconclusive (no baseline
    yet, a suspect reading, or a --verify-tuning that could not run), 4 a --verify-tuning gain is gone."""
    from fabricbench.engine.sizes import parse_size
    from fabricbench.health import runner, states
    from fabricbench.slurm.templates import expand_nodes

    parse_size(collective_size, "--collective-size")

    if local:
        if not nodes:
            raise UsageError("--local needs --nodes N")
        names = [f"node{i}" for i in range(nodes)]
    else:
        if not nodelist:
            raise UsageError("--nodelist is needed (the nodes to sweep), or --local --nodes N")
        names = expand_nodes(nodelist, "--nodelist")
    m = re.fullmatch(r"(\d+)/(\d+)", confirm.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UsageError(f"--confirm {confirm!r}: k/m with 1 <= k <= m, e.g. 2/3")
    if not 0 < drop < 1:
        raise UsageError(f"--drop must be in (0, 1), got {drop}")
    for d in verify_tuning or []:
        if not (Path(d) / "tuning.json").is_file():
            raise UsageError(f"--verify-tuning {d}: not a tuning directory (no tuning.json); run 'fabricbench tune' first")
    if verify_pairs < 2:
        raise UsageError("--verify-pairs must be at least 2: an interval needs two pairs")
    opts = runner.RunOptions(nodes=names, budget_s=_seconds(budget), history=history, local=local, topology=topology,
                             gpus_per_node=gpus_per_node, sizes=(minbytes, maxbytes), iters=iters, warmup=warmup,
                             partition=partition, per_rail=per_rail, hca=hca, textfile=textfile, drain=drain, dry_run=dry_run,
                             confirm_k=int(m.group(1)), confirm_m=int(m.group(2)), round_s=round_seconds,
                             overhead_s=fixed_seconds, out=out, params=states.Params(drop=drop), echo=typer.echo,
                             collectives=collectives, collective_size=collective_size,
                             verify_tuning=list(verify_tuning or []), verify_pairs=verify_pairs)
    raise typer.Exit(runner.run(opts))


@health_app.command("report")
def report_cmd(
    since: str = typer.Option("30d", "--since", help="Period: 30d, 12h, 2w."),
    history: str = typer.Option("results/history", "--history", help="History directory."),
    fmt: str = typer.Option("html", "--format", help="html | md | junit"),
    out: Optional[str] = typer.Option(None, "--out", help="Write to FILE [default: stdout]."),
    plots: int = typer.Option(24, "--plots", help="Trend plots at most (components not ok first)."),
) -> None:
    """Trend plots per component, the latest heatmap and the regression list (self-contained HTML), or
    Markdown / JUnit. Exit codes as analyze: 0 healthy, 1 regressions, 3 inconclusive."""
    from fabricbench.health import report as rep

    if fmt not in ("html", "md", "junit"):
        raise UsageError(f"--format {fmt!r}: choose html, md or junit")
    data = rep.gather(history, rep.parse_since(since), since)
    body = {"html": lambda: rep.render_html(data, plots), "md": lambda: rep.render_md(data),
            "junit": lambda: rep.render_junit(data)}[fmt]()
    if out:
        from fabricbench.results import atomic_write_text

        atomic_write_text(out, body)
        typer.echo(f"wrote {out} ({fmt}); {len(rep.regressions(data['states']))} component(s) not ok")
    else:
        typer.echo(body, nl=False)
    raise typer.Exit(rep.exit_code(data))


@health_app.command("schedule")
def schedule_cmd(
    at: str = typer.Option("0 2 * * *", "--at", help="Cron schedule (five fields)."),
    partition: Optional[str] = typer.Option(None, "--partition", "-p", help="Partition of the scrontab job."),
    time_limit: str = typer.Option("60", "--time", help="Time limit of the scrontab job (Slurm format)."),
    install: bool = typer.Option(False, "--install", help="Install into your scrontab (keeps its other entries)."),
    args: Optional[List[str]] = typer.Argument(None, help="Arguments for 'fabricbench health run' (after --)."),
) -> None:
    """Write a Slurm scrontab entry that runs 'fabricbench health run ...' (needs ScronParameters=enable)."""
    import sys

    from fabricbench.health import schedule

    block = schedule.entry(at, list(args or []), partition, time_limit, sys.executable)
    if install:
        schedule.install(block)
        typer.echo(f"installed into scrontab:\n{block}", nl=False)
    else:
        typer.echo(block, nl=False)
