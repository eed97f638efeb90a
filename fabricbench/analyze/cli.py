"""`fabricbench analyze` and `fabricbench simulate` (registered by fabricbench.cli through `register(app)`)."""

from __future__ import annotations

from typing import List, Optional

import typer

from fabricbench.errors import UsageError

FORMATS = ("text", "md", "html", "json", "junit")


def _parse_size(text: str) -> int:
    t = text.strip().upper().rstrip("B")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        value = int(float(t) * mult)
    except (ValueError, OverflowError):  # '1e400' is inf
        raise UsageError(f"--sizes: {text!r} is not a size (e.g. 256M, 1G)") from None
    if value > 1 << 40:
        raise UsageError(f"--sizes: {text!r} is above the 1 TiB limit")
    if value <= 0:
        raise UsageError(f"--sizes: {text!r} must be positive")
    return value


def analyze_cmd(
    results: List[str] = typer.Argument(..., help="Results directories, results.parquet, or tool outputs "
                                              "(nccl-tests text/JSON, nvbandwidth text/JSON, ib_write_bw)."),
    topology: Optional[str] = typer.Option(None, "--topology", help="Topology file or name (leaves, spines, expectation); "
                                           "default: the shipped one matching the inputs' GPUs, for collectives; "
                                           "'none' opts out."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="A previous `analyze --format json` file or results."),
    fmt: str = typer.Option("text", "--format", help="text | md | html | json | junit"),
    out: Optional[str] = typer.Option(None, "--out", help="Write the report to FILE (the text summary still prints)."),
    criteria: Optional[str] = typer.Option(None, "--criteria", help="Acceptance criteria YAML (docs/analyze.md)."),
    drain: bool = typer.Option(False, "--drain", help="Print scontrol commands draining hosts named by confident verdicts."),
    apply: bool = typer.Option(False, "--apply", help="With --drain: run them (never overwrites someone else's reason)."),
    drain_confidence: float = typer.Option(0.9, "--drain-confidence", help="Minimum confidence to drain a host."),
    host: Optional[str] = typer.Option(None, "--host", help="Host name for tool outputs that do not name one."),
) -> None:
    """Judge measurements against the fleet, a baseline and the topology; name the faulty components.

    Exit codes: 0 healthy, 1 faults found, 2 bad input, 3 inconclusive (not enough evidence)."""
    from fabricbench.analyze import criteria as crit_mod
    from fabricbench.analyze.analysis import Thresholds, analyze, load_baseline
    from fabricbench.analyze.importers import load_all
    from fabricbench.analyze.topo_adapter import load_fabric
    from fabricbench.results import atomic_write_text

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if apply and not drain:
        raise UsageError("--apply only makes sense with --drain")
    from fabricbench import limits

    limits.number(drain_confidence, "--drain-confidence", lo=0, hi=1)
    if out:
        limits.writable_output(out, "--out")
    crit = crit_mod.load_criteria(criteria) if criteria else crit_mod.default()
    th = Thresholds.from_dict(crit.thresholds) if crit.thresholds else Thresholds()
    opt_out = (topology or "").lower() == "none"
    fabric = load_fabric(topology) if topology and not opt_out else None
    base = load_baseline(baseline) if baseline else None
    ds = load_all(results, host=host)
    ds.extra["topology_opt_out"] = opt_out
    res = analyze(ds, fabric, base, th)
    res.inputs = list(results)  # the reports' provenance: the inputs as given
    evaluation = crit_mod.evaluate(crit, res)
    from fabricbench.analyze import report_html, report_json, report_junit, report_md, report_text

    renderers = {"text": lambda: report_text.render(res, evaluation), "md": lambda: report_md.render(res, evaluation),
                 "html": lambda: report_html.render(res, evaluation), "json": lambda: report_json.render(res, evaluation),
                 "junit": lambda: report_junit.render(res, evaluation)}
    body = renderers[fmt]()
    if out:
        atomic_write_text(out, body)
        typer.echo(report_text.render(res, evaluation), nl=False)
        typer.echo(f"wrote {out} ({fmt})")
    else:
        typer.echo(body, nl=False)
    if drain:
        from fabricbench.analyze.drain import drain as do_drain

        # only verdicts about a measured host's own hardware may drain it (Analysis.drain_candidates)
        do_drain(res.drain_candidates(0.0), measured_hosts=ds.hosts(), apply=apply,
                 min_confidence=drain_confidence, echo=typer.echo)
    code = res.exit_code
    if code == 0 and not evaluation["cluster"]["pass"]:
        code = 1  # a failed acceptance criterion (the criteria line says FAIL; the status line is re-rendered)
    raise typer.Exit(code)


def simulate_cmd(
    out: str = typer.Option(..., "--out", help="Results directory to write."),
    topology: Optional[str] = typer.Option(None, "--topology", help="Take hosts and leaves from this topology."),
    nodes: int = typer.Option(16, "--nodes", help="Number of nodes (without --topology)."),
    leaves: int = typer.Option(4, "--leaves", help="Number of leaf switches (without --topology)."),
    spines: int = typer.Option(1, "--spines", help="Number of spines."),
    rails: int = typer.Option(1, "--rails", help="NICs (rails) per node; >1 writes per-rail pair rows."),
    gpus: int = typer.Option(0, "--gpus", help="GPUs per node: also write GPU x GPU rows (NVSwitch-like)."),
    pattern: str = typer.Option("all", "--pattern", help="all | fitted (all pairs, rounds fitted to oversubscribed uplinks, as the sweep does) | random-K"),
    sizes: str = typer.Option("256M,1G", "--sizes", help="Comma-separated sizes."),
    repeats: int = typer.Option(1, "--repeats", help="Times every pair is measured (in different rounds)."),
    fault: Optional[List[str]] = typer.Option(None, "--fault", help="KIND:TARGET[:FACTOR], repeatable (docs/analyze.md)."),
    noise: float = typer.Option(0.03, "--noise", help="Log-normal noise sigma (0.03 = 3%)."),
    intermittent: float = typer.Option(0.0, "--intermittent", help="Probability a pair dips 20-50% for one round."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    heavy: bool = typer.Option(False, "--heavy-tails", help="Student-t (3 d.o.f.) noise instead of Gaussian."),
    dips: float = typer.Option(0.0, "--dips", help="Probability a single measurement dips to 20-70% (transient)."),
    failures: float = typer.Option(0.0, "--failures", help="Probability a pair fails to measure in a round."),
    oversubscription: float = typer.Option(1.0, "--oversubscription", help="Leaf downlink:uplink capacity (2 = 2:1)."),
    routing: str = typer.Option("adaptive", "--routing", help="adaptive | static (ECMP hash per pair over --spines)."),
    retest_rounds: int = typer.Option(0, "--retest-rounds", help="Then analyze the sweep and run the paths it "
                                      "blames or cannot clear (64 at most) this many more rounds each, as `sweep "
                                      "pairwise --retest --retest-rounds K` does (0: the sweep only)."),
) -> None:
    """Write a synthetic pairwise sweep (and GPU matrices) with injected faults, in the normal results format."""
    from fabricbench.analyze.simulate import SimSpec, parse_fault, write

    if nodes < 2 or leaves < 1 or spines < 1 or rails < 1 or gpus < 0 or repeats < 1:
        raise UsageError("simulate: --nodes >= 2, --leaves/--spines/--rails/--repeats >= 1, --gpus >= 0")
    if not 0 <= noise < 1 or not 0 <= intermittent < 1 or not 0 <= dips < 1 or not 0 <= failures < 1:
        raise UsageError("simulate: --noise, --intermittent, --dips and --failures must be in [0, 1)")
    if oversubscription < 1 or routing not in ("adaptive", "static"):
        raise UsageError("simulate: --oversubscription >= 1 and --routing adaptive|static")
    if not 0 <= retest_rounds <= 100:
        raise UsageError("simulate: --retest-rounds must be 0 to 100")
    from fabricbench.analyze.simulate_limits import check_simulation

    size_list = [_parse_size(s) for s in sizes.split(",") if s.strip()]
    check_simulation(nodes, leaves, spines, rails, gpus, repeats, len(size_list), pattern)
    spec = SimSpec(nodes=nodes, leaves=leaves, spines=spines, rails=rails, gpus=gpus, pattern=pattern,
                   sizes=size_list, repeats=repeats, noise=noise,
                   intermittent=intermittent, seed=seed, faults=[parse_fault(f) for f in fault or []],
                   heavy=heavy, dips=dips, failures=failures, oversubscription=oversubscription, routing=routing)
    if topology:
        from fabricbench.analyze.topo_adapter import load_fabric

        fab = load_fabric(topology)
        if not fab.leaf_of:
            raise UsageError(f"--topology {topology}: no hosts with leaves in it")
        spec.names = list(fab.leaf_of)
        spec.leaf_of = fab.leaf_of
        spec.spines = max(len(fab.spines), 1)
    path, truth = write(spec, out)
    typer.echo(f"wrote {path} ({len(spec.hosts())} nodes, pattern {pattern}, {len(spec.faults)} fault(s), seed {seed})")
    if retest_rounds:
        _simulate_retest(spec, path, truth, topology, retest_rounds)


def _simulate_retest(spec, path, truth, topology: str | None, rounds: int) -> None:
    """The sweep's second stage as `sweep pairwise --retest-rounds` runs it: analyze the sweep, then the same
    seed's sweep again with the paths the analysis blames or cannot clear measured `rounds` more times."""
    import dataclasses

    from fabricbench.analyze.analysis import analyze
    from fabricbench.analyze.importers import load
    from fabricbench.analyze.simulate import write
    from fabricbench.analyze.topo_adapter import fabric_from_leaves, load_fabric
    from fabricbench.slurm.planning import MAX_RETEST_PATHS

    fab = load_fabric(topology) if topology else fabric_from_leaves(
        truth["leaves"], spines=spec.spines, oversubscription=spec.oversubscription)
    again = analyze(load(path), fab).retest_paths()[:MAX_RETEST_PATHS]
    if not again:
        typer.echo("retest: the analysis suspects no path; nothing to run again")
        return
    path, _ = write(dataclasses.replace(spec, retest=again, retest_rounds=rounds), path)
    typer.echo(f"retest: {len(again)} suspect path(s) in {rounds} more round(s) each, added to {path} "
               "(phase = retest)")


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_cmd)
    app.command("simulate")(simulate_cmd)
