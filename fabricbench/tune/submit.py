"""`fabricbench tune ... --submit --nodes N`: the whole tuning as one Slurm batch job, built the way
`fabricbench submit` builds its jobs (fabricbench.slurm: validated #SBATCH lines, shell-quoted words, the
results directory's lock, Ctrl-C/SIGTERM cancel the job). The tuning driver runs on the batch host with
`--launcher "srun --kill-on-bad-exit=1 --ntasks-per-node=K [--mpi=pmix]"`, so every candidate is a job step in
fresh processes on the allocated nodes; this process follows the job and prints the decisions from the
directory the job wrote (`tuning.json`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from fabricbench.errors import RunFailed, UsageError


def inner_args(ops, backend, minbytes, maxbytes, stepfactor, iters, warmup, budget, exhaustive, repeats,
               confirm_pairs, timeout, nccl_version, only, plan, resources, inject) -> list[str]:
    """The `fabricbench tune` words the batch job runs (everything but the Slurm options)."""
    words = [*ops, "--backend", backend, "-b", minbytes, "-e", maxbytes, "-f", str(stepfactor), "-n", str(iters),
             "-w", str(warmup), "--budget", budget, "--repeats", str(repeats), "--confirm-pairs", str(confirm_pairs),
             "--timeout", f"{timeout:g}"]
    if exhaustive:
        words.append("--exhaustive")
    if nccl_version:
        words += ["--nccl-version", nccl_version]
    if only:
        words += ["--only", only]
    if plan:
        words.append("--plan")
    if not resources:
        words.append("--no-resources")
    for item in inject or []:
        words += ["--inject-candidate", item]
    return words


def time_limit(budget_s: float) -> str:
    """The job's time limit when --time is not given: the budget, a quarter more, and 5 minutes to start."""
    return str(int(math.ceil(budget_s * 1.25 / 60)) + 5)


def submit_tune(args: list[str], out: Path, budget_s: float, backend: str, nodes: int | None, nodelist: str | None,
                ntasks_per_node: int | None, gpus_per_node: int | None, partition: str | None, account: str | None,
                time: str | None, srun_mpi: str | None, poll: float, wait: bool, dry_run: bool, echo) -> int:
    from fabricbench.slurm.submit import (MPI_DEFAULT, Submission, check_out, default_python, ensure_shared,
                                          submit_and_follow, tune_script)
    from fabricbench.slurm.templates import JobSpec, check_name, expand_nodes

    listed = expand_nodes(nodelist, "--nodelist") if nodelist else None
    if nodes is None and listed:
        nodes = len(listed)
    if nodes is None:
        raise UsageError("--submit needs --nodes N (or --nodelist): how many nodes the tuning job runs on")
    ntasks = ntasks_per_node if ntasks_per_node is not None else (gpus_per_node or 1)
    spec = JobSpec(job_name="fabricbench-tune", nodes=nodes, nodelist=listed, ntasks_per_node=ntasks,
                   gpus_per_node=gpus_per_node, partition=partition, account=account,
                   time=time or time_limit(budget_s)).validate()
    mpi = srun_mpi or (MPI_DEFAULT if backend == "mpi" else None)
    if mpi is not None and mpi != "none":
        check_name(mpi, "--srun-mpi")
    out = Path(out).absolute()
    sub = Submission(spec=spec, out=out, python=default_python(), srun_mpi=None if mpi in (None, "none") else mpi)
    script = tune_script(sub, args)
    if dry_run:
        echo(script.rstrip("\n"))
        return 0
    if (out / "tuning.json").exists():
        raise UsageError(f"--out {out} already holds a tuning; choose a new directory")
    out = check_out(out)
    ensure_shared(out)
    from fabricbench.results.io import results_lock

    meta = {"kind": "tune", "command_line": ["fabricbench", *sys.argv[1:]], "nodes": nodes, "ranks": nodes * ntasks}
    with results_lock(out, ["fabricbench", *sys.argv[1:]]):
        job_id, final = submit_and_follow(script, out, meta, wait, poll, budget_s * 1.25 + 3600)
    if not wait:
        echo(job_id)
        return 0
    return collect_tune(out, job_id, final, echo)


def collect_tune(out: Path, job_id: str, final, echo) -> int:
    """Print what the job decided (tuning.json); the job's failure (or a missing result) is exit 1."""
    summary_path = out / "tuning.json"
    if not summary_path.exists():
        log = out / f"slurm-{job_id}.out"
        tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
        state = f"{final.state} (exit {final.exit_code})" if final is not None else "unknown"
        raise RunFailed(f"Slurm job {job_id} ended {state} without a tuning in {out}"
                        + (": " + " | ".join(tail) if tail else "") + f"; see {log}")
    summary = json.loads(summary_path.read_text())
    topo = summary["provenance"]["topology"]
    echo(f"job {job_id}: tuned on {topo['nranks']} ranks, {topo['nnodes']} node(s): {', '.join(topo['hosts'] or [])}")
    for o in summary["ops"]:
        echo(f"{o['op']}: {o['runs']} runs in {o['elapsed_s']:.0f} s"
             + (f"; rejected: {', '.join(f'{k} ({v})' for k, v in o['rejected'].items())}" if o["rejected"] else ""))
    for d in summary["decisions"]:
        ci = (f"{d['speedup']:.3f}x (95% CI {d['ci_low']:.3f}-{d['ci_high']:.3f}, {d['pairs']} pairs)"
              if d.get("pairs") else "")
        echo(f"  {d['op']} {d['size_bytes']:>10d} B: {d['choice']:32s} written: {d['effective']}; {d['verdict']}"
             + (f"; {ci}" if ci else ""))
    echo(f"outputs in {out} (report.md, tuning.json, ...)")
    if final is not None and final.ok is False:
        echo(f"# job {job_id} ended {final.state} (exit {final.exit_code})")
        return 1
    return 0
