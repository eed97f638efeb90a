"""`fabricbench run`, `fabricbench ops` and the hidden `fabricbench worker`: parse, validate, call the library."""

from __future__ import annotations

import os
import sys
import uuid
from datetime import datetime
from pathlib import Path

import typer

from fabricbench.errors import UsageError

TIMING_HELP = ("aggregate: iterations back to back, one sync, wall clock around all (nccl-tests default); "
               "per-iter: a barrier then each iteration timed on every rank (CUDA events on GPU, "
               "perf_counter_ns on CPU), which also names the rank that arrives late")


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _check_writable_dir(path: Path, option: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".fabricbench-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{option} {path}: cannot write there ({err.strerror or err}); choose a writable "
                         "directory") from None


def build_config(ops, backend, minbytes, maxbytes, stepfactor, stepbytes, iters, warmup, dtype, redop, root,
                 check, timing, time_reduce, in_place, out, json_path, timeout, quiet, split=None,
                 cuda_graph=False, cpu_bind="auto", graph_launches=0, agg_iters=1, blocking=0, cycles=1,
                 env=None, window=64):
    from fabricbench.backends import check_backend_name
    from fabricbench.engine.config import RunConfig
    from fabricbench.engine.dtypes import get_dtype, get_redop
    from fabricbench.engine.sizes import parse_size, size_sweep
    from fabricbench.engine.stats import TIME_REDUCE
    from fabricbench.ops import get_op

    for name in ops:
        if name.lower() not in ("all", "p2p"):
            get_op(name)
    check_backend_name(backend)
    env = os.environ if env is None else env
    min_b, max_b = parse_size(minbytes, "-b/--minbytes"), parse_size(maxbytes, "-e/--maxbytes")
    step_b = parse_size(stepbytes, "-i/--stepbytes") if stepbytes is not None else None
    if stepfactor is None and step_b is None:
        step_b = 1 << 20  # nccl-tests' default without -f or -i: add 1 MiB per step (stepBytes = 1M)
    size_sweep(min_b, max_b, stepfactor, step_b)
    from fabricbench import limits

    limits.number(timeout, "-T/--timeout", lo=0, hi=30 * 86400)  # nan and inf too; 0 = never
    for value, option in ((iters, "-n/--iters"), (agg_iters, "-m/--agg-iters"), (window, "--window")):
        if value <= 0:
            raise UsageError(f"{option} must be positive, got {value}")
    for value, option in ((warmup, "-w/--warmup"), (check, "-c/--check"), (timeout, "-T/--timeout"),
                          (graph_launches, "-G/--cudagraph"), (cycles, "-N/--run-cycles")):
        if value < 0:
            raise UsageError(f"{option} must be 0 or more, got {value}")
    if root < -1:
        raise UsageError(f"-r/--root {root}: give a rank, or -1 for every root (as nccl-tests)")
    if blocking not in (0, 1, 2, 3):
        raise UsageError(f"-z/--blocking {blocking}: choose 0 (off), 1 (wait and barrier after each op), "
                         "2 (wait after each op) or 3 (wait and untimed barrier after each iteration)")
    if cuda_graph and not graph_launches:
        graph_launches = 1
    cuda_graph = graph_launches > 0
    min_bw = None
    if env.get("NCCL_TESTS_MIN_BW"):
        try:
            min_bw = float(env["NCCL_TESTS_MIN_BW"])
        except ValueError:
            raise UsageError(f"NCCL_TESTS_MIN_BW='{env['NCCL_TESTS_MIN_BW']}' is not a number; give the "
                             "minimum average bus bandwidth in GB/s, e.g. NCCL_TESTS_MIN_BW=180") from None
    all_dtypes = dtype.lower() == "all"
    all_redops = redop.lower() == "all"
    dtype = "float" if all_dtypes else dtype
    redop = "sum" if all_redops else redop
    if cpu_bind not in ("auto", "none"):
        raise UsageError(f"--cpu-bind '{cpu_bind}': choose auto (GPU ranks on their GPU's NUMA-local CPUs) or none")
    if cuda_graph and timing != "aggregate":
        raise UsageError("--cuda-graph replays the whole timed loop at once; it needs --timing aggregate")
    if timing not in ("aggregate", "per-iter"):
        raise UsageError(f"--timing '{timing}': choose aggregate or per-iter")
    reduce_map = {"0": "rank0", "1": "avg", "2": "min", "3": "max"}  # nccl-tests' -a numbers work too
    time_reduce = reduce_map.get(time_reduce, time_reduce)
    if time_reduce not in TIME_REDUCE:
        raise UsageError(f"--time-reduce '{time_reduce}': choose one of {', '.join(TIME_REDUCE)}")
    from fabricbench.engine.split import parse_split, split_from_env

    split = split or split_from_env(env)
    if split:
        parse_split(split)
    run_id = new_run_id()
    out_dir = Path(out) if out else Path("results") / run_id
    return RunConfig(
        ops=list(ops) or ["all"], backend=backend.lower(), min_bytes=min_b, max_bytes=max_b,
        step_factor=stepfactor, step_bytes=step_b, iters=iters, warmup=warmup, dtype=get_dtype(dtype).name,
        redop=get_redop(redop), root=root, check_iters=check, timing=timing, time_reduce=time_reduce,
        in_place=in_place, split=split, cuda_graph=cuda_graph, cpu_bind=cpu_bind, out_dir=str(out_dir),
        json_path=json_path, timeout_s=float(timeout), run_id=run_id, graph_launches=graph_launches,
        agg_iters=agg_iters, blocking=blocking, cycles=cycles, all_dtypes=all_dtypes, all_redops=all_redops,
        min_bw=min_bw, window=window,
        command_line=["fabricbench", *sys.argv[1:]], quiet=quiet,
    )


def validate_for_ranks(cfg, backend: str, nranks: int) -> None:
    """Everything that can be refused before a rank starts: ranks per op, dtype/redop per backend, root."""
    from fabricbench.backends import unsupported
    from fabricbench.engine.dtypes import get_dtype
    from fabricbench.ops import resolve_ops

    if nranks < 1:
        raise UsageError(f"--nprocs must be at least 1, got {nranks}")
    from fabricbench.engine.inject import check_world

    check_world(nranks)
    group_size = nranks
    if cfg.split:
        from fabricbench.engine.split import groups_of

        sizes = {len(members) for members in groups_of(nranks, cfg.split).values()}
        if len(sizes) != 1:
            raise UsageError(f"--split '{cfg.split}' does not divide {nranks} ranks into groups of one size; "
                             "choose a split that does (e.g. 'MOD G' with G dividing the ranks)")
        group_size = sizes.pop()
    if cfg.root >= group_size:
        raise UsageError(f"--root {cfg.root} is not a rank of a {group_size}-rank group (0..{group_size - 1})")
    if cfg.cuda_graph and backend not in ("nccl", "nccl-direct"):
        raise UsageError(f"--cuda-graph needs the nccl backend on GPUs; this run uses {backend}")
    dtype = get_dtype(cfg.dtype)
    for op in resolve_ops(cfg.ops, group_size):
        why = op.check_nranks(group_size)
        if why:
            raise UsageError(f"{why}; use --nprocs {op.exact_ranks or op.min_ranks}")
        if cfg.all_dtypes or cfg.all_redops:
            continue  # -d all / -o all: what the backend lacks is skipped with a note
        why = unsupported(backend, dtype, cfg.redop if op.reduces else None)
        if why:
            raise UsageError(why)


def _default_nprocs() -> int:
    from fabricbench.backends import cuda_available

    if cuda_available():
        import torch

        return torch.cuda.device_count()
    return 2


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=False)
    def run(
        ops: list[str] = typer.Argument(None, help="Operations (default: all collectives; 'p2p' for the 2-rank "
                                        "tests). See 'fabricbench ops'.", show_default=False),
        nprocs: int = typer.Option(None, "--nprocs", "-P", help="Local ranks to start (default: one per GPU, "
                                   "or 2 on CPU). Not used under torchrun, srun or mpirun. (-N is nccl-tests' "
                                   "run cycles.)", show_default=False),
        backend: str = typer.Option("auto", "--backend", help="auto (NCCL on GPUs, gloo on CPU) | nccl | gloo | mpi | nccl-direct (NCCL through CuPy, out of place "
                               "and in place as nccl-tests)"),
        minbytes: str = typer.Option("32M", "-b", "--minbytes", help="Smallest size (K/M/G = 1024-based)."),
        maxbytes: str = typer.Option("32M", "-e", "--maxbytes", help="Largest size."),
        stepfactor: int = typer.Option(None, "-f", "--stepfactor", help="Multiply the size by this each step.",
                                       show_default=False),
        stepbytes: str = typer.Option(None, "-i", "--stepbytes", help="Add this many bytes each step [default "
                                      "without -f: 1M, as nccl-tests].", show_default=False),
        iters: int = typer.Option(20, "-n", "--iters", help="Timed iterations per size."),
        agg_iters: int = typer.Option(1, "-m", "--agg-iters", help="Operations per timed iteration, issued back "
                                      "to back (nccl-tests -m); time is per operation."),
        warmup: int = typer.Option(5, "-w", "--warmup", help="Warm-up iterations per size (not timed); one more "
                                   "untimed call and a barrier always precede timing, even with -w 0."),
        window: int = typer.Option(64, "--window", help="p2p_uni/p2p_bi: messages in flight per call, as OSU "
                                   "osu_bw/osu_bibw's window size; time is per message."),
        cycles: int = typer.Option(1, "-N", "--run-cycles", help="Passes over the sizes, each printed "
                                   "(nccl-tests -N; 0: until interrupted)."),
        blocking: int = typer.Option(0, "-z", "--blocking", help="nccl-tests -z: 1 wait and barrier after each "
                                     "op, 2 wait after each op, 3 wait and untimed barrier after each iteration."),
        dtype: str = typer.Option("float", "-d", "--dtype", help="Element type (nccl-tests names: float, half, "
                                  "bfloat16, double, int8, uint8, int32, uint32, int64, uint64), or all."),
        redop: str = typer.Option("sum", "-o", "--redop", help="Reduction: sum | prod | max | min | avg | all."),
        root: int = typer.Option(0, "-r", "--root", help="Root rank of broadcast and reduce; -1: every rank in "
                                 "turn (nccl-tests)."),
        check: int = typer.Option(1, "-c", "--check", help="Check iterations per size: distinct data per rank, "
                                  "results compared bit-exact; any wrong value fails the run (0: no check)."),
        timing: str = typer.Option("aggregate", "--timing", help=TIMING_HELP),
        time_reduce: str = typer.Option("avg", "--time-reduce", "-a", help="How a size's time is reduced across "
                                        "ranks: avg (nccl-tests default) | max | min | rank0; or 0-3 as -a."),
        in_place: bool = typer.Option(False, "--in-place", help="Run in place (output buffer = input buffer)."),
        cuda_graph: bool = typer.Option(False, "--cuda-graph", help="Same as -G 1."),
        graph_launches: int = typer.Option(0, "-G", "--cudagraph", help="NCCL on GPUs: capture the timed loop "
                                           "as a CUDA graph once and launch it N times (nccl-tests -G N)."),
        per_iter: int = typer.Option(None, "-I", "--per-iter-timing", help="1: same as --timing per-iter "
                                     "(nccl-tests -I).", show_default=False),
        cpu_bind: str = typer.Option("auto", "--cpu-bind", help="auto: bind each GPU rank to the CPUs local to its "
                                     "GPU (NUMA) | none"),
        split: str = typer.Option(None, "--split", help="Split the ranks into groups that run at the same time, "
                                  "as NCCL_TESTS_SPLIT: 'MOD 8' = one GPU per node of 8 per group (per-rail "
                                  "tests). Default: $NCCL_TESTS_SPLIT.", show_default=False),
        out: str = typer.Option(None, "--out", help="Results directory [default: results/<run-id>].",
                                show_default=False),
        json_path: str = typer.Option(None, "--json", "-J", help="Also write nccl-tests' JSON layout here (one "
                                      "file per op when several: FILE's stem + '-<op>')."),
        timeout: float = typer.Option(600, "--timeout", "-T", help="Stop every rank and fail when no rank has "
                                      "returned from an operation call for this many seconds (0: never)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print no table (files are still written)."),
        allow_many_ranks: bool = typer.Option(False, "--allow-many-ranks", help="Start --nprocs ranks even above "
                                              "this machine's limit (4 per core, 256 MiB of memory each)."),
        tuning: str = typer.Option(None, "--tuning", help="Apply a directory written by 'fabricbench tune' (its "
                                   "nccl.env, NCCL tuner config, Open MPI rules + MCA parameters) to the ranks."),
    ) -> None:
        """Run collective and P2P benchmarks: locally on N ranks, or as one rank under torchrun/srun/mpirun."""
        if tuning:  # before any rank or library starts: NCCL and MPI read these once per process
            from fabricbench.tune.outputs import tuning_env

            os.environ.update(tuning_env(Path(tuning)))
        from fabricbench.backends import resolve_backend
        from fabricbench.engine.ranks import discover, in_external_launcher, in_slurm_allocation_outside_step

        if per_iter is not None:
            timing = "per-iter" if per_iter else timing
        cfg = build_config(ops or [], backend, minbytes, maxbytes, stepfactor, stepbytes, iters, warmup, dtype,
                           redop, root, check, timing, time_reduce, in_place, out, json_path, timeout, quiet,
                           split, cuda_graph, cpu_bind, graph_launches, agg_iters, blocking, cycles, window=window)
        if json_path:
            _check_writable_dir(Path(json_path).resolve().parent, "--json")
        if in_external_launcher():
            if nprocs is not None:
                raise UsageError("--nprocs starts local ranks, but this process is already one rank of a "
                                 "launcher (torchrun, srun or mpirun); drop --nprocs")
            resolved = resolve_backend(cfg.backend)
            ranks = discover(rendezvous=resolved != "mpi")
            validate_for_ranks(cfg, resolved, ranks.world_size)
            if ranks.rank == 0:
                _check_writable_dir(Path(cfg.out_dir), "--out")
            from fabricbench.engine.worker import run_as_rank

            raise typer.Exit(run_as_rank(cfg))
        if nprocs is None and in_slurm_allocation_outside_step():
            discover()  # raises the explanation: srun, or --nprocs for this node only
        resolved = resolve_backend(cfg.backend)
        cfg.backend = resolved
        n = nprocs if nprocs is not None else _default_nprocs()
        validate_for_ranks(cfg, resolved, n)
        from fabricbench.launch.local import check_nprocs, launch

        check_nprocs(n, allow_many_ranks)
        _check_writable_dir(Path(cfg.out_dir), "--out")
        from fabricbench.results.io import results_lock

        with results_lock(cfg.out_dir, cfg.command_line):  # a second writer of the same --out fails at once
            code = launch(cfg, n, resolved)
        raise typer.Exit(code)

    @app.command("ops")
    def list_ops() -> None:
        """List the operations with their byte accounting and busbw factor (nccl-tests conventions)."""
        from rich.console import Console
        from rich.table import Table

        from fabricbench.ops import OPS

        table = Table("op", "ranks", "redop", "root", "busbw factor (n ranks)", "what it does")
        factors = {"all_reduce": "2(n-1)/n", "all_gather": "(n-1)/n", "reduce_scatter": "(n-1)/n",
                   "all_to_all": "(n-1)/n"}
        for op in OPS.values():
            ranks = f"= {op.exact_ranks}" if op.exact_ranks else f">= {op.min_ranks}"
            table.add_row(op.name, ranks, "yes" if op.reduces else "", "yes" if op.rooted else "",
                          factors.get(op.name, "1"), op.description)
        Console().print(table)

    @app.command("worker", hidden=True)
    def worker() -> None:
        """One rank of a local run (started by 'fabricbench run'; reads its configuration from the environment)."""
        from fabricbench.engine.config import RunConfig
        from fabricbench.engine.worker import run_as_rank

        cfg = RunConfig.from_env()
        if cfg is None:
            raise UsageError("'fabricbench worker' is started by 'fabricbench run'; use 'fabricbench run' instead")
        raise typer.Exit(run_as_rank(cfg))
