"""`fabricbench tune [OPS]` and `fabricbench tune verify DIR`: parse, call fabricbench.tune, print."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer

from fabricbench.errors import RunFailed, UsageError


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text or "")
    if not m:
        raise UsageError(f"--budget '{text}': expected a duration such as 90s, 20m or 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _inject_map(items: list[str]) -> dict[str, str]:
    """CANDIDATE=FAULT; candidate names hold '=' and so may the fault (slow@0:us=N): the fault is the part
    after the last '=' that is followed by KIND@."""
    out = {}
    for item in items or []:
        m = re.fullmatch(r"(.+)=((?:corrupt|die|hang|slow)@.+)", item)
        if not m:
            raise UsageError(f"--inject-candidate '{item}': expected CANDIDATE=KIND@RANK[:...] (e.g. "
                             "allreduce=ring=corrupt@1 or default=slow@0:us=20000)")
        out[m.group(1)] = m.group(2)
    return out


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune(
        ops: list[str] = typer.Argument(None, help="Collectives to tune (default all_reduce); or 'verify DIR'.",
                                        show_default=False),
        backend: str = typer.Option("auto", "--backend", help="nccl (GPUs) | mpi (Open MPI coll tuned) | gloo "
                                    "(nothing to tune) | auto (nccl on GPUs, else mpi)"),
        minbytes: str = typer.Option("1K", "-b", "--minbytes", help="Smallest size (K/M/G = 1024-based)."),
        maxbytes: str = typer.Option("4M", "-e", "--maxbytes", help="Largest size."),
        stepfactor: int = typer.Option(4, "-f", "--stepfactor", help="Multiply the size by this each step."),
        iters: int = typer.Option(20, "-n", "--iters", help="Timed iterations per size in every run."),
        warmup: int = typer.Option(5, "-w", "--warmup", help="Warm-up iterations per size."),
        nprocs: int = typer.Option(None, "--nprocs", "-N", help="Local ranks per run (without --launcher) "
                                   "[default: 2].", show_default=False),
        launcher: str = typer.Option(None, "--launcher", help="Start each run with this prefix instead of local "
                                     "ranks, e.g. 'srun -N4 --mpi=pmix' or 'mpirun -np 8 --host a,b'."),
        budget: str = typer.Option("20m", "--budget", help="Refuse plans estimated to take longer (90s, 20m, 2h)."),
        exhaustive: bool = typer.Option(False, "--exhaustive", help="Every candidate --repeats times, nothing "
                                        "dropped (small spaces; the reference the cheap search is judged by)."),
        repeats: int = typer.Option(5, "--repeats", help="Runs per candidate with --exhaustive."),
        confirm_pairs: int = typer.Option(5, "--confirm-pairs", help="Interleaved default/tuned pairs that decide "
                                          "each claim (and that verify runs)."),
        out: str = typer.Option(None, "--out", help="Output directory [default: tuning/<date-time>]",
                                show_default=False),
        timeout: float = typer.Option(120, "--timeout", help="Seconds one run may take before it is stopped and "
                                      "recorded as a failure."),
        nccl_version: str = typer.Option(None, "--nccl-version", help="NCCL version whose knobs apply "
                                         "[default: the one torch reports]", show_default=False),
        only: str = typer.Option(None, "--only", help="Try only these candidates (comma-separated names as the "
                                 "plan prints them, e.g. allreduce=ring,allreduce=rabenseifner)."),
        plan: bool = typer.Option(False, "--plan", help="Measure the defaults once, print the plan and its cost, stop."),
        resources: bool = typer.Option(True, "--resources/--no-resources", help="The resource stage: coordinate "
                                       "descent over ordered resource knobs (NCCL channels, buffer size, threads, "
                                       "QPs, p2p chunk; Open MPI segment size) inside each winning subspace."),
        submit: bool = typer.Option(False, "--submit", help="Run the whole tuning as one Slurm batch job: the "
                                    "driver on the batch host, every candidate an srun step on the allocation."),
        nodes: int = typer.Option(None, "--nodes", help="With --submit: nodes to allocate.", show_default=False),
        nodelist: str = typer.Option(None, "--nodelist", help="With --submit: exactly these nodes (Slurm host list).",
                                     show_default=False),
        ntasks_per_node: int = typer.Option(None, "--ntasks-per-node", help="With --submit: ranks per node "
                                            "[default: --gpus-per-node, or 1].", show_default=False),
        gpus_per_node: int = typer.Option(None, "--gpus-per-node", help="With --submit: GPUs per node.",
                                          show_default=False),
        partition: str = typer.Option(None, "--partition", "-p", help="With --submit: Slurm partition.",
                                      show_default=False),
        account: str = typer.Option(None, "--account", "-A", help="With --submit: Slurm account.", show_default=False),
        time_limit: str = typer.Option(None, "--time", "-t", help="With --submit: job time limit [default: the "
                                       "budget + 25% + 5 min].", show_default=False),
        srun_mpi: str = typer.Option(None, "--srun-mpi", help="With --submit: srun --mpi plugin [default: pmix "
                                     "for --backend mpi].", show_default=False),
        poll: float = typer.Option(2.0, "--poll", help="With --submit: seconds between job-state checks."),
        no_wait: bool = typer.Option(False, "--no-wait", help="With --submit: print the job id and return."),
        dry_run: bool = typer.Option(False, "--dry-run", help="With --submit: print the batch script, submit nothing."),
        inject: list[str] = typer.Option(None, "--inject-candidate", hidden=True,
                                         help="Self-test: CANDIDATE=FAULT sets FABRICBENCH_INJECT in that candidate's runs."),
    ) -> None:
        """Find faster NCCL / Open MPI settings for these collectives and sizes, prove them, write them out."""
        ops = list(ops or [])
        if ops[:1] == ["verify"]:
            if len(ops) != 2:
                raise UsageError("usage: fabricbench tune verify DIR (a directory written by 'fabricbench tune')")
            raise typer.Exit(_verify(Path(ops[1]), confirm_pairs, launcher, nprocs))
        from fabricbench.tune.knobs import nothing_to_tune
        from fabricbench.tune.runner import RunSpec
        from fabricbench.tune.search import DefaultFailed
        from fabricbench.tune.session import TuneOptions, run_tune

        backend = backend.lower()
        if backend == "auto":
            from fabricbench.backends import cuda_available

            backend = "nccl" if cuda_available() else "mpi"
        why = nothing_to_tune(backend)
        if why:
            typer.echo(why)
            raise typer.Exit(0)
        if backend not in ("nccl", "mpi"):
            raise UsageError(f"--backend {backend}: choose nccl, mpi, gloo or auto")
        ops = ops or ["all_reduce"]
        from fabricbench.ops import get_op

        for op in ops:
            get_op(op)
        for value, name in ((iters, "-n/--iters"), (repeats, "--repeats"), (confirm_pairs, "--confirm-pairs"),
                            (timeout, "--timeout")):
            if value <= 0:
                raise UsageError(f"{name} must be positive, got {value}")
        if confirm_pairs < 2:
            raise UsageError("--confirm-pairs must be at least 2: an interval needs two pairs")
        if nprocs is not None and launcher:
            raise UsageError("--nprocs starts local ranks; with --launcher the launcher decides the ranks; use one")
        slurm_given = [n for n, v in (("--nodes", nodes), ("--nodelist", nodelist), ("--partition", partition),
                                      ("--ntasks-per-node", ntasks_per_node), ("--time", time_limit)) if v is not None]
        if submit:
            if launcher or nprocs is not None:
                raise UsageError("--submit starts the candidates with srun inside the job; drop --launcher/--nprocs")
            if not (poll > 0 and poll == poll):
                raise UsageError(f"--poll must be positive, got {poll}")
            from datetime import datetime as _dt

            from fabricbench.tune.submit import inner_args, submit_tune

            out_dir = Path(out) if out else Path("tuning") / _dt.now().strftime("%Y%m%d-%H%M%S")
            words = inner_args(ops, backend, minbytes, maxbytes, stepfactor, iters, warmup, budget, exhaustive,
                               repeats, confirm_pairs, timeout, nccl_version, only, plan, resources, inject)
            raise typer.Exit(submit_tune(words, out_dir, parse_duration(budget), backend, nodes, nodelist,
                                         ntasks_per_node, gpus_per_node, partition, account, time_limit, srun_mpi,
                                         poll, not no_wait, dry_run, typer.echo))
        if slurm_given:
            raise UsageError(f"{', '.join(slurm_given)}: Slurm options of --submit; add --submit, or use "
                             "--launcher 'srun ...' inside an allocation")
        if backend == "nccl" and nccl_version is None:
            nccl_version = _torch_nccl_version()
        from datetime import datetime

        out_dir = Path(out) if out else Path("tuning") / datetime.now().strftime("%Y%m%d-%H%M%S")
        spec = RunSpec(ops=ops, backend=backend, minbytes=minbytes, maxbytes=maxbytes, stepfactor=stepfactor,
                       iters=iters, warmup=warmup, nprocs=nprocs or (None if launcher else 2),
                       launcher=shlex.split(launcher) if launcher else [], timeout_s=timeout,
                       inject=_inject_map(inject))
        opts = TuneOptions(spec=spec, out=out_dir, budget_s=parse_duration(budget), exhaustive=exhaustive,
                           repeats=repeats, confirm_pairs=confirm_pairs, nccl_version=nccl_version, plan_only=plan,
                           resources=resources,
                           only=[x.strip() for x in only.split(",") if x.strip()] if only else None)
        try:
            run_tune(opts, typer.echo)
        except DefaultFailed as err:
            raise RunFailed(str(err)) from None

    def _verify(directory: Path, pairs: int, launcher: str | None, nprocs: int | None) -> int:
        from fabricbench.tune.verify import VerifyFailed, verify

        override = {}
        if launcher:
            override.update(launcher=shlex.split(launcher), nprocs=None)
        if nprocs:
            override.update(nprocs=nprocs, launcher=[])
        try:
            checks = verify(directory, pairs, typer.echo, override)
        except VerifyFailed as err:
            raise RunFailed(str(err)) from None
        gone = [c for c in checks if not c.holds]
        for c in checks:
            claimed = f"{c.claimed:.3f}x" if c.claimed else "?"
            state = "holds" if c.holds else f"GONE ({c.ci.verdict})"
            typer.echo(f"{c.op} {c.size_bytes} B: claimed {claimed}, now {c.ci.text()}: {state}")
        if gone:
            typer.echo(f"verify: {len(gone)} of {len(checks)} claimed gains no longer hold; re-run 'fabricbench tune'")
            return 1
        typer.echo(f"verify: all {len(checks)} claimed gains hold" if checks else "verify: nothing claimed")
        return 0


def _torch_nccl_version() -> str | None:
    try:
        import torch

        v = torch.cuda.nccl.version()
        return ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)
    except Exception:
        return None
