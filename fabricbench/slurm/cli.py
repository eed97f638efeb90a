"""`fabricbench submit`, `fabricbench collect` and `fabricbench sweep pairwise` (Slurm, or --local).

The measurement options are `fabricbench run`'s own: they are read from the registered `run` command's
signature (names, help, defaults), so the two can never drift apart; `submit` passes the ones given on to
`fabricbench run` inside the job.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import sys
import typing
from pathlib import Path

import typer

from fabricbench.errors import UsageError

KW = inspect.Parameter.KEYWORD_ONLY
# run's options that mean something else (or nothing) for a job: the ranks come from Slurm, --out is ours.
RUN_SKIP = ("nprocs", "out", "quiet")
SWEEP_FROM_RUN = ("backend", "minbytes", "maxbytes", "stepfactor", "stepbytes", "iters", "warmup", "timeout")


def _p(name: str, annotation, info) -> inspect.Parameter:
    return inspect.Parameter(name, KW, default=info, annotation=annotation)


def _run_params(app: typer.Typer) -> dict[str, inspect.Parameter]:
    for cmd in app.registered_commands:
        if cmd.callback is not None and (cmd.name or cmd.callback.__name__) == "run":
            hints = typing.get_type_hints(cmd.callback)
            return {name: p.replace(kind=KW, annotation=hints.get(name, p.annotation))
                    for name, p in inspect.signature(cmd.callback).parameters.items()}
    raise RuntimeError("fabricbench.slurm.cli needs the 'run' command registered first (fabricbench.run_cli)")


def _slurm_params() -> list[inspect.Parameter]:
    O = typer.Option  # noqa: N806
    return [
        _p("nodes", int, O(None, "--nodes", help="Nodes to allocate (sbatch --nodes).", show_default=False)),
        _p("nodelist", str, O(None, "--nodelist", help="Exactly these nodes (Slurm host list, e.g. "
                              "'gpu[01-04]').", show_default=False)),
        _p("exclude", str, O(None, "--exclude", "-x", help="Never these nodes (Slurm host list).",
                             show_default=False)),
        _p("gpus_per_node", int, O(None, "--gpus-per-node", help="GPUs per node (one rank per GPU; default: "
                                   "none, one rank per node on CPU nodes).", show_default=False)),
        _p("ntasks_per_node", int, O(None, "--ntasks-per-node", help="Ranks per node [default: --gpus-per-node, "
                                     "or 1].", show_default=False)),
        _p("partition", str, O(None, "--partition", "-p", help="Slurm partition.", show_default=False)),
        _p("account", str, O(None, "--account", "-A", help="Slurm account.", show_default=False)),
        _p("time_limit", str, O(None, "--time", "-t", help="Job time limit (Slurm format, e.g. 30 or 1:00:00).",
                                show_default=False)),
        _p("qos", str, O(None, "--qos", help="Slurm QOS.", show_default=False)),
        _p("reservation", str, O(None, "--reservation", help="Slurm reservation.", show_default=False)),
        _p("constraint", str, O(None, "--constraint", "-C", help="Node features (Slurm --constraint).",
                                show_default=False)),
        _p("exclusive", bool, O(False, "--exclusive", help="Whole nodes (sbatch --exclusive).")),
        _p("env", list[str], O(None, "--env", help="NAME=VALUE exported in the job (repeatable), e.g. --env "
                               "NCCL_IB_HCA=mlx5_0. Values are quoted; names must be variable names.",
                               show_default=False)),
        _p("sbatch_arg", list[str], O(None, "--sbatch-arg", help="Any other sbatch option, one per use, e.g. "
                                      "--sbatch-arg=--mail-type=END.", show_default=False)),
        _p("srun_mpi", str, O(None, "--srun-mpi", help="srun --mpi plugin for --backend mpi [default: pmix].",
                              show_default=False)),
        _p("python", str, O(None, "--python", help="Python on the compute nodes [default: this one, or "
                            "$FABRICBENCH_PYTHON].", show_default=False)),
        _p("dry_run", bool, O(False, "--dry-run", help="Print the batch script and exit (nothing is submitted).")),
        _p("no_wait", bool, O(False, "--no-wait", help="Print the job id and return; 'fabricbench collect JOBID' "
                              "gathers the results later.")),
        _p("poll", float, O(2.0, "--poll", help="Seconds between job-state checks.")),
        _p("out", str, O(None, "--out", help="Results directory, on a filesystem every node sees [default: "
                         "results/<run-id>].", show_default=False)),
        _p("quiet", bool, O(False, "--quiet", "-q", help="Print no table (files are still written).")),
    ]


def _command(name: str, doc: str, params: list[inspect.Parameter], body):
    def wrapper(**kwargs):
        return body(kwargs)

    wrapper.__name__ = name
    wrapper.__doc__ = doc
    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _check_numbers(kw: dict) -> None:
    """Every numeric Slurm/sweep option finite and in range, before anything is submitted or started."""
    from fabricbench import limits

    checks = (("poll", "--poll", 0, 3600, True), ("nodes", "--nodes", 1, limits.MAX_NODES, False),
              ("ntasks_per_node", "--ntasks-per-node", 1, limits.MAX_RANKS_PER_NODE, False),
              ("gpus_per_node", "--gpus-per-node", 0, limits.MAX_RANKS_PER_NODE, False),
              ("timeout", "--timeout", 0, 30 * 86400, True), ("pair_timeout", "--pair-timeout", 0, 86400, True), ("connect_timeout", "--connect-timeout", 0, 86400, True),
              ("retest_below", "--retest-below", 0, 1, True), ("partners", "--partners", 1, limits.MAX_NODES, False),
              ("repeat", "--repeat", 1, 1000, False), ("retest_rounds", "--retest-rounds", 0, 100, False))
    for key, option, lo, hi, lo_open in checks:
        if kw.get(key) is not None:
            limits.number(kw[key], option, lo=lo, hi=hi, lo_open=lo_open)


def _job_spec(kw: dict, name: str, ntasks_default: int = 1, no_kill: bool = False):
    from fabricbench.slurm.templates import JobSpec, expand_nodes, parse_sbatch_arg

    nodelist = expand_nodes(kw["nodelist"], "--nodelist") if kw.get("nodelist") else None
    exclude = expand_nodes(kw["exclude"], "--exclude") if kw.get("exclude") else None
    nodes = kw.get("nodes")
    if nodes is None and nodelist:
        nodes = len(nodelist)
    if nodes is None:
        raise UsageError("--nodes N (or --nodelist) is needed: how many nodes the job runs on")
    _check_numbers(kw)
    gpus = kw.get("gpus_per_node")
    ntasks = kw["ntasks_per_node"] if kw.get("ntasks_per_node") is not None else (gpus if gpus else ntasks_default)
    spec = JobSpec(job_name=name, nodes=nodes, nodelist=nodelist, exclude=exclude, ntasks_per_node=ntasks,
                   gpus_per_node=gpus, partition=kw.get("partition"), account=kw.get("account"),
                   time=kw.get("time_limit"), qos=kw.get("qos"), reservation=kw.get("reservation"),
                   constraint=kw.get("constraint"), exclusive=kw.get("exclusive", False), no_kill=no_kill,
                   extra=[parse_sbatch_arg(a) for a in kw.get("sbatch_arg") or []])
    return spec.validate()


def _submission(kw: dict, spec, out: Path, backend: str):
    from fabricbench.slurm.submit import MPI_DEFAULT, Submission, default_python
    from fabricbench.slurm.templates import parse_env

    mpi = kw.get("srun_mpi") or (MPI_DEFAULT if backend == "mpi" else None)
    if mpi is not None and mpi != "none":
        from fabricbench.slurm.templates import check_name

        check_name(mpi, "--srun-mpi")
    return Submission(spec=spec, out=out, env=parse_env(kw.get("env") or []), python=kw.get("python") or
                      default_python(), srun_mpi=None if mpi == "none" else mpi)


def _out_dir(kw: dict, run_id: str) -> Path:
    return Path(kw.get("out") or (Path("results") / run_id)).absolute()


def _finish(out: Path, job_id: str, final, quiet: bool, sweep: bool) -> int:
    from fabricbench.slurm.collect import collect_run, collect_sweep

    if sweep:
        code = collect_sweep(out, quiet=quiet, echo=typer.echo)
        if final is not None and final.ok is False and code == 0:
            typer.echo(f"# job {job_id} ended {final.state} (exit {final.exit_code})")
            code = 1
        return code
    return collect_run(out, final, quiet=quiet, echo=typer.echo)


def _report_fixed_cost(out: Path) -> None:
    """Submission to first rank running: from job.json and the ranks' first records/logs."""
    from fabricbench.slurm.submit import read_job

    meta = read_job(out)
    starts = []
    for path in (out / "records").glob("*-rank*.jsonl"):
        try:
            first = json.loads(path.read_text().splitlines()[0])
            starts.append(first["t_ns"] / 1e9)
        except (OSError, ValueError, IndexError, KeyError):
            continue
    if meta.get("submitted") and starts:
        meta["first_rank_started"] = min(starts)
        meta["fixed_cost_s"] = min(starts) - meta["submitted"]
        from fabricbench.results import atomic_write_json

        atomic_write_json(out / "job.json", meta)


def register(app: typer.Typer) -> None:
    run_params = _run_params(app)

    # -- submit ---------------------------------------------------------------------------------------------
    submit_params = [p for n, p in run_params.items() if n not in RUN_SKIP]
    names = {p.name for p in submit_params}
    submit_params += [p for p in _slurm_params() if p.name not in names]

    def submit_body(kw: dict) -> None:
        import contextlib

        with contextlib.ExitStack() as held:  # the results directory's lock, once it exists
            _submit(kw, held)

    def _submit(kw: dict, held) -> None:
        _check_numbers(kw)
        from fabricbench.results.io import results_lock
        from fabricbench.run_cli import build_config, validate_for_ranks
        from fabricbench.slurm.submit import check_out, ensure_shared, run_args_from, run_script, submit_and_follow

        cfg = build_config(kw["ops"] or [], kw["backend"], kw["minbytes"], kw["maxbytes"], kw["stepfactor"],
                           kw["stepbytes"], kw["iters"], kw["warmup"], kw["dtype"], kw["redop"], kw["root"],
                           kw["check"], kw["timing"], kw["time_reduce"], kw["in_place"], None, kw["json_path"],
                           kw["timeout"], False, kw["split"], kw["cuda_graph"], kw["cpu_bind"])
        spec = _job_spec(kw, "fabricbench")
        backend = cfg.backend if cfg.backend != "auto" else ("nccl" if kw.get("gpus_per_node") else "gloo")
        nranks = spec.nodes * spec.ntasks_per_node
        validate_for_ranks(cfg, backend, nranks)
        out = _out_dir(kw, cfg.run_id)
        sub = _submission(kw, spec, out, backend)
        script = run_script(sub, run_args_from(run_params, kw, skip=RUN_SKIP))
        if kw["dry_run"]:
            typer.echo(script, nl=False)
            return
        out = check_out(out)
        held.enter_context(results_lock(out, ["fabricbench", *sys.argv[1:]]))
        ensure_shared(out)
        meta = {"kind": "run", "run_id": cfg.run_id, "command_line": ["fabricbench", *sys.argv[1:]],
                "nodes": spec.nodes, "ranks": nranks}
        deadline = None if kw.get("time_limit") else cfg.timeout_s + 3600
        job_id, final = submit_and_follow(script, out, meta, not kw["no_wait"], kw["poll"], deadline)
        if kw["no_wait"]:
            typer.echo(job_id)
            return
        raise typer.Exit(_finish(out, job_id, final, kw["quiet"], sweep=False))

    app.command("submit", no_args_is_help=False)(_command(
        "submit", "Submit a benchmark to Slurm (one rank per GPU, or per node on CPU nodes), follow the job, "
        "collect and print the results. Every measurement option of 'run' applies.", submit_params, submit_body))

    # -- collect --------------------------------------------------------------------------------------------
    @app.command("collect")
    def collect(
        job: str = typer.Argument(..., help="Job id (its --out is found from job.json under results/ or --out) "
                                  "or a results directory."),
        out: str = typer.Option(None, "--out", help="Where the job's results are (its --out).", show_default=False),
        wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow a job that is still queued or running."),
        poll: float = typer.Option(2.0, "--poll", help="Seconds between job-state checks."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Write the tables; print nothing."),
        in_job: bool = typer.Option(False, "--in-job", hidden=True, help="Run by the job's own batch script, "
                                    "while its submitter holds the results directory's lock."),
    ) -> None:
        """Gather the results of a submitted job (or rebuild a sweep's tables from its records)."""
        from fabricbench.slurm import jobs
        from fabricbench.slurm.collect import is_sweep_dir, results_dir_for_job

        _check_numbers({"poll": poll})

        path = Path(job)
        final = None
        job_id = None
        if path.is_dir():
            directory = path.absolute()
        elif job.isdigit():
            job_id = job
            roots = [Path(out)] if out else []
            directory = Path(out).absolute() if out and (Path(out) / "job.json").exists() else \
                results_dir_for_job(job, [*roots, Path("results")])
            if directory is None:
                raise UsageError(f"no results directory of job {job} under {', '.join(map(str, roots or ['results']))}; "
                                 "give --out DIR (the directory the job was submitted with)")
            st = jobs.job_state(job)
            if st.phase in ("pending", "running"):
                if not wait:
                    typer.echo(f"job {job} is still {st.state.lower()}; results will be in {directory}")
                    raise typer.Exit(1)
                from fabricbench.slurm.submit import StatusLine

                line = StatusLine(job)
                try:
                    st = jobs.follow(job, line, poll_s=poll)
                except KeyboardInterrupt:
                    line.close()
                    typer.echo(f"fabricbench: stopped waiting; job {job} keeps running", err=True)
                    raise
                finally:
                    line.close()
            final = st if st.phase == "done" else None
        else:
            raise UsageError(f"'{job}' is neither a job id nor a results directory")
        from fabricbench.results.io import results_lock

        if in_job:  # the batch script's own collect: the waiting submitter holds the lock and collects after it
            raise typer.Exit(_finish(directory, job_id or "", final, quiet, sweep=is_sweep_dir(directory)))
        with results_lock(directory, ["fabricbench", *sys.argv[1:]]):  # the tables it writes: one writer at a time
            code = _finish(directory, job_id or "", final, quiet, sweep=is_sweep_dir(directory))
        raise typer.Exit(code)

    # -- sweep ----------------------------------------------------------------------------------------------
    sweep_app = typer.Typer(help="Fabric sweeps: every node pair in concurrent rounds.", no_args_is_help=True)
    app.add_typer(sweep_app, name="sweep")
    O = typer.Option  # noqa: N806
    sweep_params = [
        _p("local", bool, O(False, "--local", help="No Slurm: --nodes local processes act as the nodes.")),
        _p("pattern", str, O("circle", "--pattern", help="circle: every pair once (n-1 rounds for even n, n for "
                             "odd) | random: --partners random partners per node | rotation: --partners consecutive "
                             "rounds of the circle, slice number --seed (slices 0, 1, 2, ... meet every pair)")),
        _p("partners", int, O(3, "--partners", help="random and rotation patterns: partners (rounds) per node.")),
        _p("repeat", int, O(1, "--repeat", help="Run the whole schedule this many times.")),
        _p("seed", int, O(0, "--seed", help="Seed of the random pattern and of retest partners; the slice of the "
                          "rotation pattern.")),
        _p("retest", bool, O(False, "--retest/--no-retest", help="Measure the nodes of suspect pairs again, each "
                             "with a partner it has not met (one more step).")),
        _p("retest_rounds", int, O(4, "--retest-rounds", help="--retest: also run each suspect path (the 64 "
                                  "that `fabricbench analyze` of the sweep finds most suspect) this many more "
                                  "times, with different co-runners each time: a path's own repeated readings "
                                  "are what tell a modest deficit from noise (0: off).")),
        _p("retest_below", float, O(0.8, "--retest-below", help="A pair is suspect below this fraction of the "
                                    "median pair bandwidth (or with latency above 2.1x the lowest).")),
        _p("serial", bool, O(False, "--serial", help="Run the same pairs one at a time (one pair per round): the "
                             "baseline that shows what concurrent rounds cost in interference and save in time.")),
        _p("per_rail", bool, O(False, "--per-rail", help="GPU nodes: rank k of each node tests rail (NIC) k "
                               "against rank k of the others (one rank per GPU).")),
        _p("hca", str, O(None, "--hca", help="Per-rail: comma-separated HCA of each rail, in local-rank order "
                         "(mlx5_0,mlx5_1,...): NCCL_IB_HCA='=<hca k>' for rank k.", show_default=False)),
        _p("pair_timeout", float, O(60.0, "--pair-timeout", help="Seconds a pair's first exchange (one warm-up "
                                    "round trip at the largest size) may take; later steps get deadlines from "
                                    "what it measured. Past one, the pair is recorded failed (what it measured "
                                    "before is kept).")),
        _p("topology", str, O(None, "--topology", help="Topology file or name: which leaf each node is on and "
                              "what its uplink carries [default: the lab's topology.yaml when "
                              "$FABRICBENCH_LAB_DIR is set]. Rows then record the uplinks each pair shared in "
                              "its round.", show_default=False)),
        _p("fit_uplinks", bool, O(True, "--fit-uplinks/--no-fit-uplinks", help="With a topology whose leaves are "
                                  "oversubscribed: never put more cross-leaf pairs on one uplink in a round than "
                                  "it carries at full rate (more rounds, no contention).")),
        _p("measure_time", float, O(2.0, "--measure-time", help="Seconds one measurement (one size, one "
                                    "direction) aims at: its iterations (at most -n) are chosen from a timed "
                                    "round trip of that size. 0 = always -n iterations.")),
        _p("connect_timeout", float, O(30.0, "--connect-timeout", help="Seconds to wait for a pair's peer to "
                                       "show up (it may still be in its previous round).")),
    ]
    sweep_run = [run_params[n] for n in SWEEP_FROM_RUN]
    sweep_all = sweep_params + sweep_run + [p for p in _slurm_params() if p.name not in
                                            {q.name for q in sweep_params + sweep_run}]

    def sweep_body(kw: dict) -> None:
        _sweep(kw)

    sweep_app.command("pairwise", no_args_is_help=False)(_command(
        "pairwise", "All node pairs in concurrent rounds (circle method), both directions and ping-pong "
        "latency per pair, in one allocation and one long-lived step; --local runs it on this machine.",
        sweep_all, sweep_body))

    @sweep_app.command("_rank", hidden=True)
    def sweep_rank(plan: str = typer.Option(..., "--plan")) -> None:
        """One sweep process (inside the job step)."""
        from fabricbench.slurm.sweep import run_rank

        raise typer.Exit(run_rank(plan))

    @sweep_app.command("_plan", hidden=True)
    def sweep_plan(directory: str = typer.Option(..., "--dir")) -> None:
        """Inside the batch script: the schedule for this allocation's nodes."""
        from fabricbench.slurm.templates import expand_nodes

        out = Path(directory)
        meta = json.loads((out / "sweep.json").read_text())
        nodes = expand_nodes(os.environ.get("SLURM_JOB_NODELIST", ""), "SLURM_JOB_NODELIST")
        job_id = int(os.environ.get("SLURM_JOB_ID", "0") or 0)
        plan = _build_plan(meta["config"], nodes, str(out), meta["run_id"], local=False, job_id=job_id)
        from fabricbench.slurm.planning import plan_path

        plan.save(plan_path(out))
        typer.echo(f"fabricbench: plan: {len(nodes)} nodes, {len(plan.rounds)} rounds, {plan.pair_count()} pairs",
                   err=True)

    @sweep_app.command("_retest", hidden=True)
    def sweep_retest(directory: str = typer.Option(..., "--dir")) -> None:
        """Inside the batch script: exit 0 with plan-retest.json written when some pair is suspect, else 1."""
        raise typer.Exit(0 if _plan_retest(Path(directory)) else 1)


def _resolve_sweep_backend(name: str) -> str:
    name = (name or "auto").lower()
    if name == "auto":
        from fabricbench.backends import cuda_available

        return "nccl" if cuda_available() else "gloo"
    if name not in ("gloo", "nccl"):
        raise UsageError(f"--backend {name}: the pairwise sweep runs over torch.distributed; choose gloo "
                         "(CPU, TCP) or nccl (GPUs)")
    return name


def _sweep_config(kw: dict) -> dict:
    from fabricbench.engine.sizes import parse_size, size_sweep
    from fabricbench.slurm.planning import PATTERNS

    min_b, max_b = parse_size(kw["minbytes"], "-b/--minbytes"), parse_size(kw["maxbytes"], "-e/--maxbytes")
    step_b = parse_size(kw["stepbytes"], "-i/--stepbytes") if kw.get("stepbytes") is not None else None
    sizes = size_sweep(min_b, max_b, kw.get("stepfactor"), step_b)
    if any(s % 4 for s in sizes):
        raise UsageError("sweep sizes must be multiples of 4 bytes (float32 messages)")
    for value, option in ((kw["iters"], "-n/--iters"), (kw["timeout"], "--timeout"),
                          (kw["pair_timeout"], "--pair-timeout"), (kw["connect_timeout"], "--connect-timeout")):
        if value <= 0:
            raise UsageError(f"{option} must be positive, got {value}")
    if kw["measure_time"] < 0:
        raise UsageError(f"--measure-time must be 0 (fixed iterations) or more seconds, got {kw['measure_time']}")
    if kw["warmup"] < 0:
        raise UsageError(f"-w/--warmup must be 0 or more, got {kw['warmup']}")
    if kw["pattern"] not in PATTERNS:
        raise UsageError(f"--pattern '{kw['pattern']}': choose circle, random or rotation")
    if kw["backend"].lower() not in ("auto", "gloo", "nccl"):
        _resolve_sweep_backend(kw["backend"])
    if not 0 < kw["retest_below"] <= 1:
        raise UsageError(f"--retest-below must be in (0, 1], got {kw['retest_below']}")
    hcas = [h.strip() for h in kw["hca"].split(",") if h.strip()] if kw.get("hca") else None
    if hcas:
        from fabricbench.slurm.templates import check_name

        for h in hcas:
            check_name(h.split(":")[0], "--hca")
    from fabricbench.slurm.fabric_map import default_topology, fabric_map

    topology = kw.get("topology") or (None if kw.get("local") else default_topology())
    fabric = fabric_map(topology) if topology else None
    return dict(sizes=sizes, iters=kw["iters"], warmup=kw["warmup"], backend=kw["backend"],
                fabric=fabric, fit_uplinks=bool(kw.get("fit_uplinks", True)),
                pattern=kw["pattern"], partners=kw["partners"], repeat=kw["repeat"], seed=kw["seed"],
                retest=kw["retest"], retest_below=kw["retest_below"],
                retest_rounds=int(kw.get("retest_rounds", 0) or 0), per_rail=kw["per_rail"], hcas=hcas,
                serial=kw["serial"],
                pair_timeout_s=float(kw["pair_timeout"]), connect_timeout_s=float(kw["connect_timeout"]),
                measure_target_s=float(kw["measure_time"]),
                timeout_s=float(kw["timeout"]))


def _build_plan(config: dict, nodes: list[str], out: str, run_id: str, local: bool, job_id: int = 0,
                tasks_per_node: int = 1):
    from fabricbench.slurm.planning import free_port_block, make_rounds, port_base_for_job
    from fabricbench.slurm.sweep import Plan

    if len(nodes) < 2:
        raise UsageError(f"a pairwise sweep needs at least 2 nodes, got {len(nodes)}")
    tpn = int(config.get("tasks_per_node") or tasks_per_node)
    if not config.get("per_rail"):
        tpn = 1
    rounds = make_rounds(len(nodes), config["pattern"], config["partners"], config["repeat"], config["seed"])
    fabric = _plan_fabric(config, nodes)
    if fabric and fabric["fitted"]:
        rounds = _fit(rounds, fabric)
    if config.get("serial"):
        rounds = [{"round": i, "repeat": r["repeat"], "pairs": [p]}
                  for i, (r, p) in enumerate((r, p) for r in rounds for p in r["pairs"])]
    port = free_port_block(len(nodes) * tpn) if local else port_base_for_job(job_id)
    return Plan(run_id=run_id, out_dir=out, nodes=nodes, rounds=rounds, sizes=config["sizes"],
                iters=config["iters"], warmup=config["warmup"], backend=_resolve_sweep_backend(config["backend"]),
                tasks_per_node=tpn, hcas=config.get("hcas"), local=local, port_base=port,
                connect_timeout_s=config["connect_timeout_s"], pair_timeout_s=config["pair_timeout_s"],
                measure_target_s=config.get("measure_target_s", 2.0),
                step_timeout_s=config.get("step_timeout_s") or config["timeout_s"],
                ordered=bool(config.get("serial") or (fabric and fabric["uplink_pairs"])),
                extra={"pattern": config["pattern"], "retest_below": config["retest_below"],
                       "retest_rounds": config.get("retest_rounds", 0),
                       **({"fabric": fabric} if fabric else {})})


def _plan_fabric(config: dict, nodes: list[str]) -> dict | None:
    """What the plan keeps of the topology: each node's leaf, the uplink limits, whether rounds were fitted.

    On oversubscribed leaves the rounds also run in order (round k starts when every node of round k-1 is
    done with it, as --serial), fitted or not: otherwise a pair that finished early starts its next round
    beside the slower pairs of the last one, and a round would not say which pairs really ran together."""
    from fabricbench.slurm.fabric_map import leaves_for

    fmap = config.get("fabric")
    if not fmap:
        return None
    leaves = leaves_for(nodes, fmap)
    if not any(leaves):
        return None
    used = {leaf for leaf in leaves if leaf}
    limits = {k: v for k, v in (fmap.get("uplink_pairs") or {}).items() if k in used}
    return {"source": fmap.get("source"), "leaves": leaves, "uplink_pairs": limits,
            "uplink_gbps": {k: v for k, v in (fmap.get("uplink_gbps") or {}).items() if k in used},
            "host_gbps": fmap.get("host_gbps"),
            "fitted": bool(limits) and bool(config.get("fit_uplinks", True)) and not config.get("serial")}


def _fit(rounds: list[dict], fabric: dict) -> list[dict]:
    """Re-pack each repeat's pairs into rounds that respect the uplink limits; rounds renumbered in order."""
    from fabricbench.slurm.fabric_map import fit_rounds

    out: list[dict] = []
    for rep in sorted({r["repeat"] for r in rounds}):
        base = [[tuple(p) for p in r["pairs"]] for r in rounds if r["repeat"] == rep]
        for pairs in fit_rounds(base, fabric["leaves"], fabric["uplink_pairs"]):
            out.append({"round": len(out), "repeat": rep, "pairs": [list(p) for p in pairs]})
    return out


def _plan_retest(out: Path):
    from fabricbench.slurm.collect import analyzer_suspects
    from fabricbench.slurm.planning import load_records, plan_path, retest_plan
    from fabricbench.slurm.sweep import Plan

    plan = Plan.load(plan_path(out))
    meta_path = out / "sweep.json"
    below = json.loads(meta_path.read_text())["config"].get("retest_below", 0.8) if meta_path.exists() else 0.8
    rounds = int(plan.extra.get("retest_rounds", 0) or 0)
    retest = retest_plan(plan, load_records(out, "sweep"), below=below, seed=plan.extra.get("seed", 0),
                         repeat_suspects=rounds, ranked=analyzer_suspects(out) if rounds else None)
    if retest is None:
        return None
    retest.save(plan_path(out, "retest"))
    return retest


def _expand(nodelist: str | None) -> list[str]:
    from fabricbench.slurm.templates import expand_nodes

    return expand_nodes(nodelist, "--nodelist") if nodelist else []


def _warn_if_too_long(config: dict, n: int) -> None:
    """A sweep whose measurements are time-targeted has a predictable worst case on a slow fabric: say so
    before it starts when --timeout would cut it (the rounds it reaches are kept, the rest are failed rows)."""
    if n < 2 or not config.get("measure_target_s"):
        return
    rounds = (n - 1 if n % 2 == 0 else n) if config["pattern"] == "circle" else config["partners"]
    rounds *= config["repeat"] * (max(1, n // 2) if config.get("serial") else 1)
    per_pair = config["measure_target_s"] * (1 + 3 * len(config["sizes"])) + 3.0  # warm-up, 3 per size, joining
    if rounds * per_pair > config["timeout_s"]:
        typer.echo(f"fabricbench: warning: on a slow fabric this sweep may need up to ~{rounds * per_pair:.0f} s "
                   f"({rounds} rounds x ~{per_pair:.0f} s a pair at --measure-time {config['measure_target_s']:g}); "
                   f"--timeout is {config['timeout_s']:g} s: rounds past it are recorded as failed", err=True)


def _sweep(kw: dict) -> None:
    import contextlib

    with contextlib.ExitStack() as held:  # the results directory's lock, once it exists
        _sweep_body(kw, held)


def _sweep_body(kw: dict, held) -> None:
    from fabricbench.engine.provenance import now_iso
    from fabricbench.results.io import results_lock
    from fabricbench.results import atomic_write_json
    from fabricbench.run_cli import new_run_id

    _check_numbers(kw)
    config = _sweep_config(kw)
    run_id = new_run_id()
    out = _out_dir(kw, run_id)
    command_line = ["fabricbench", *sys.argv[1:]]
    if kw["local"] and kw.get("nodes") is None:
        raise UsageError("--local needs --nodes N: how many local processes act as nodes")
    _warn_if_too_long(config, kw.get("nodes") or len(_expand(kw.get("nodelist"))))
    if kw["local"]:
        n = kw.get("nodes")
        if kw.get("dry_run"):
            raise UsageError("--dry-run shows a batch script; --local submits nothing")
        from fabricbench.slurm.local import run_step
        from fabricbench.slurm.planning import plan_path
        from fabricbench.slurm.submit import check_out

        tpn = kw.get("ntasks_per_node") or 1
        from fabricbench.launch.local import check_nprocs

        check_nprocs(n * tpn)  # --local: every node is a process on this machine
        config["tasks_per_node"] = tpn
        nodes = [f"node{i}" for i in range(n)]
        plan = _build_plan(config, nodes, str(out), run_id, local=True, tasks_per_node=tpn)
        out = check_out(out)
        held.enter_context(results_lock(out, command_line))
        plan.out_dir = str(out)
        started = now_iso()
        atomic_write_json(out / "sweep.json", {"kind": "pairwise-sweep", "run_id": run_id, "config": config,
                                               "command_line": command_line, "start_time": started,
                                               "local": True, "launcher_host": socket.gethostname()})
        path = plan.save(plan_path(out))
        run_step(plan, path, config["timeout_s"])
        if config["retest"]:
            retest = _plan_retest(out)
            if retest is not None:
                run_step(retest, plan_path(out, "retest"), config["timeout_s"])
        from fabricbench.slurm.collect import collect_sweep

        raise typer.Exit(collect_sweep(out, quiet=kw["quiet"], echo=typer.echo, command_line=command_line,
                                       started=started))
    # Slurm
    from fabricbench.slurm.submit import check_out, ensure_shared, submit_and_follow, sweep_script

    spec = _job_spec(kw, "fabricbench-sweep", no_kill=True)
    if spec.nodes < 2:
        raise UsageError(f"a pairwise sweep needs at least 2 nodes, got --nodes {spec.nodes}")
    if not config["per_rail"]:
        if kw.get("ntasks_per_node") not in (None, 1):
            raise UsageError("--ntasks-per-node > 1 is a per-rail sweep: add --per-rail (rank k of each node "
                             "tests rail k)")
        spec.ntasks_per_node = 1
    config["tasks_per_node"] = spec.ntasks_per_node
    sub = _submission(kw, spec, out, "gloo")
    n = spec.nodes
    rounds = (n - 1 if n % 2 == 0 else n) if config["pattern"] == "circle" else config["partners"]
    rounds *= config["repeat"]
    if config.get("fabric") and config["fabric"].get("uplink_pairs") and config.get("fit_uplinks"):
        rounds *= 2  # fitting to the uplinks may need more rounds (the plan is made inside the job)
    if config["serial"]:
        rounds *= max(1, n // 2)
    bound = rounds * (config["pair_timeout_s"] + config["connect_timeout_s"]) + 60
    step_timeout = min(config["timeout_s"], bound)
    config["step_timeout_s"] = step_timeout
    script = sweep_script(sub, step_timeout, config["retest"], config["per_rail"])
    if kw["dry_run"]:
        typer.echo(script, nl=False)
        return
    out = check_out(out)
    held.enter_context(results_lock(out, command_line))
    ensure_shared(out)
    atomic_write_json(out / "sweep.json", {"kind": "pairwise-sweep", "run_id": run_id, "config": config,
                                           "command_line": command_line, "start_time": now_iso(),
                                           "launcher_host": socket.gethostname()})
    meta = {"kind": "sweep", "run_id": run_id, "command_line": command_line, "nodes": n}
    deadline = None if kw.get("time_limit") else 2 * step_timeout + 3600
    job_id, final = submit_and_follow(script, out, meta, not kw["no_wait"], kw["poll"], deadline)
    if kw["no_wait"]:
        typer.echo(job_id)
        return
    _report_fixed_cost(out)
    raise typer.Exit(_finish(out, job_id, final, kw["quiet"], sweep=True))

