"""sbatch templates: hostile node names, partitions and env values either render as inert literal text or are
refused with a clear one-line error. The rendered scripts are executed by bash with a fake `srun` that
records what it received, so "safe" means what the shell really did, not what the text looks like."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fabricbench.errors import UsageError
from fabricbench.slurm.submit import Submission, run_script, sweep_script
from fabricbench.slurm.templates import JobSpec, expand_nodes, parse_env, parse_sbatch_arg
from tests.conftest import run_cli

HOSTILE_VALUES = [
    "a b",
    "$(touch PWNED)",
    "`touch PWNED`",
    "x'; touch PWNED; echo '",
    'x"; touch PWNED; echo "',
    "line1\nline2; touch PWNED",
    "semi;colon&&touch PWNED|cat",
    "${HOME}$PATH\\n",
    "{{OUT}}",  # a placeholder in a value stays text
    "mlx5_0:1,mlx5_1:1",
    "",
]


def _fake_srun(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    srun = bindir / "srun"
    # Records its arguments (NUL-separated) and the values of the exported variables.
    srun.write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$FAKE_OUT/argv"\n'
                    'for v in NCCL_X NCCL_Y WEIRD_1; do printf "%s\\0" "${!v-<unset>}"; done > "$FAKE_OUT/env"\n')
    srun.chmod(0o755)
    return bindir


def _run_script(script: str, tmp_path: Path, nodelist: str = "node[1-2]") -> subprocess.CompletedProcess:
    bindir = _fake_srun(tmp_path)
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_OUT=str(tmp_path),
               SLURM_JOB_NODELIST=nodelist, SLURM_JOB_ID="77")
    res = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, cwd=work, timeout=60)
    assert not list(work.glob("PWNED")) and not list(tmp_path.rglob("PWNED")), "a value ran as a command"
    return res


def test_hostile_env_values_reach_the_ranks_literally(tmp_path):
    out = tmp_path / "results dir with 'quotes' and $(x)"
    for value in HOSTILE_VALUES:
        sub = Submission(JobSpec(nodes=2), out, env=[("NCCL_X", value), ("NCCL_Y", "plain"),
                                                    ("WEIRD_1", value[::-1])], python="/opt/py thon/bin/python3")
        script = run_script(sub, ["all_reduce", "--minbytes", "1M"])
        assert script.count("#SBATCH") == 4  # job-name, nodes, ntasks-per-node, output: no injected directive
        res = _run_script(script, tmp_path)
        assert res.returncode == 0, res.stderr
        argv = (tmp_path / "argv").read_text().split("\0")[:-1]
        assert argv[0] == "--kill-on-bad-exit=1"
        assert argv[-9:] == ["/opt/py thon/bin/python3", "-m", "fabricbench", "run", "all_reduce", "--minbytes",
                             "1M", "--out", str(out)]
        assert f"--output={out}/logs/rank%t-%N.out" in argv
        values = (tmp_path / "env").read_text().split("\0")[:-1]
        assert values == [value, "plain", value[::-1]]
        assert (out / "job-nodes.txt").read_text() == "node[1-2]\n"


def test_sweep_script_runs_plan_step_retest_and_collect_in_order(tmp_path):
    out = tmp_path / "sw eep"
    sub = Submission(JobSpec(nodes=4, no_kill=True), out, env=[("NCCL_X", "$(touch PWNED)")],
                     python="/bin/echo")
    script = sweep_script(sub, 123, retest=True, per_rail=False)
    assert "#SBATCH --no-kill" in script
    assert "--kill-on-bad-exit=0 --no-kill" in script
    assert "timeout --signal=TERM --kill-after=15 123" in script
    assert script.count("  srun --") == 2  # the sweep step and the retest step: never one per pair
    res = _run_script(script, tmp_path)
    assert res.returncode == 0, res.stderr
    # /bin/echo stands in for python: plan, then (echo succeeds ->) retest, then collect, all with quoted paths
    lines = res.stdout.splitlines()
    assert lines[0] == f"-m fabricbench sweep _plan --dir {out}"
    assert lines[1] == f"-m fabricbench sweep _retest --dir {out}"
    assert lines[2] == f"-m fabricbench collect {out} --quiet --in-job"  # its submitter holds the lock
    argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    assert argv[-4:] == ["-m", "fabricbench.slurm.sweep", "--plan", str(out / "plan-retest.json")]
    rail = sweep_script(Submission(JobSpec(nodes=2, ntasks_per_node=8, gpus_per_node=8), out), 60, False, True)
    assert "--ntasks-per-node=8" in rail and "gpus-per-task" not in rail.replace("no --gpus-per-task", "")
    assert "if false; then" in rail


@pytest.mark.parametrize("spec,fragment", [
    ("node1;reboot", "not a valid Slurm node name"),
    ("node1 node2", "not a valid Slurm node name"),
    ("$(reboot)", "not a valid Slurm node name"),
    ("node1\n#SBATCH --uid=0", "not a Slurm node list"),
    ("-rf", "not a valid Slurm node name"),
    ("node[1-", "cannot expand node list"),
    ("", "not a Slurm node list"),
])
def test_hostile_node_lists_are_refused(spec, fragment):
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(").replace("$", r"\$")):
        expand_nodes(spec)


def test_node_lists_expand_with_hostlist():
    assert expand_nodes("gpu[01-03],login-2.cluster") == ["gpu01", "gpu02", "gpu03", "login-2.cluster"]
    spec = JobSpec(nodes=4, nodelist=expand_nodes("gpu[01-04]"), exclude=["gpu09"])
    lines = spec.directives()
    assert "#SBATCH --nodelist=gpu[01-04]" in lines and "#SBATCH --exclude=gpu09" in lines


@pytest.mark.parametrize("field,value,fragment", [
    ("partition", "gpu\n#SBATCH --uid=0", "--partition"),
    ("partition", "gpu batch", "--partition"),
    ("account", "acct;rm", "--account"),
    ("qos", "$(x)", "--qos"),
    ("reservation", "r'1", "--reservation"),
    ("constraint", "a100&ib\nX", "--constraint"),
    ("time", "1 hour", "--time"),
    ("job_name", "x y", "--job-name"),
])
def test_hostile_directive_values_are_refused(field, value, fragment):
    spec = JobSpec(nodes=2, **{field: value})
    with pytest.raises(UsageError, match=fragment):
        spec.directives()


def test_valid_directives_render():
    spec = JobSpec(nodes=4, partition="gpu-h100", account="proj_1", time="1-02:00:00", qos="high",
                   reservation="maint.2", constraint="[ib&a100]*2|h100", exclusive=True, gpus_per_node=8,
                   ntasks_per_node=8, extra=[parse_sbatch_arg("--comment=two words"),
                                             parse_sbatch_arg("--mail-type=END"), parse_sbatch_arg("--requeue")])
    lines = spec.directives()
    for expected in ("--partition=gpu-h100", "--account=proj_1", "--time=1-02:00:00", "--qos=high",
                     "--reservation=maint.2", "--constraint=[ib&a100]*2|h100", "--exclusive", "--gpus-per-node=8",
                     "--ntasks-per-node=8", '--comment="two words"', '--mail-type="END"', "--requeue"):
        assert f"#SBATCH {expected}" in lines


@pytest.mark.parametrize("item,fragment", [
    ("comment=x", "expected an sbatch option"),
    ("--comment=a\"b", "cannot go on an #SBATCH line"),
    ("--comment=a\nb", "cannot go on an #SBATCH line"),
    ("--wrap=echo hi", "fabricbench sets this itself"),
    ("--output=/x", "fabricbench sets this itself"),
    ("--x;y=1", "expected an sbatch option"),
])
def test_bad_sbatch_args_are_refused(item, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_sbatch_arg(item)


@pytest.mark.parametrize("item,fragment", [
    ("NCCL_X", "expected NAME=VALUE"),
    ("1NCCL=1", "not a valid environment variable name"),
    ("NCCL-X=1", "not a valid environment variable name"),
    ("X;touch PWNED=1", "not a valid environment variable name"),
    ("$(x)=1", "not a valid environment variable name"),
])
def test_bad_env_names_are_refused(item, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_env([item])


def test_out_paths_that_cannot_go_on_an_sbatch_line_are_refused(tmp_path):
    for bad in ('/a"b', "/a\nb", "/a\\b"):
        with pytest.raises(UsageError, match="cannot go on an #SBATCH line"):
            run_script(Submission(JobSpec(nodes=1), Path(bad)), ["all_reduce"])
    script = run_script(Submission(JobSpec(nodes=1), Path("/r/100%/x")), ["all_reduce"])
    assert '#SBATCH --output="/r/100%%/x/slurm-%j.out"' in script and "OUT_PATTERN=/r/100%%/x" in script


def test_dry_run_prints_the_exact_script_and_hostile_input_is_one_line(tmp_path):
    res = run_cli("submit", "all_reduce", "--nodes", "2", "--dry-run", "--backend", "gloo", "-b", "1M", "-e", "4M",
                  "-n", "7", "--env", "NCCL_X=$(touch PWNED) x", "--partition", "debug", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("#!/bin/bash\n")
    assert "export NCCL_X='$(touch PWNED) x'" in res.stdout
    assert "run all_reduce --backend gloo --minbytes 1M --maxbytes 4M --iters 7 --out" in res.stdout
    assert not (tmp_path / "o").exists()  # nothing created or submitted
    res = run_cli("submit", "all_reduce", "--nodes", "2", "--dry-run", "--nodelist", "n1,n2;reboot")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "fabricbench: error:" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("submit", "all_reduce", "--nodes", "2", "--dry-run", "--env", "BAD-NAME=1")
    assert res.returncode == 2 and "not a valid environment variable name" in res.stderr
    res = run_cli("submit", "pingpong", "--nodes", "3", "--dry-run", "--backend", "gloo")
    assert res.returncode == 2 and "pingpong needs exactly 2 ranks" in res.stderr
    res = run_cli("submit", "all_reduce", "--nodes", "2", "--backend", "mpi", "--dry-run")
    assert res.returncode == 0 and "--mpi=pmix" in res.stdout and "--kill-on-bad-exit=1" in res.stdout


def test_submit_and_sweep_options_do_not_collide_with_run_options():
    """submit/sweep take run's measurement options as they are: no flag may mean two things."""
    import typer.main

    from fabricbench.cli import app

    cli = typer.main.get_command(app)
    for path in (["submit"], ["sweep", "pairwise"]):
        cmd = cli
        for name in path:
            cmd = cmd.commands[name]
        flags = [opt for p in cmd.params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])]
        assert len(flags) == len(set(flags)), sorted(f for f in flags if flags.count(f) > 1)
    run = {opt for p in cli.commands["run"].params for opt in p.opts}
    submit = {opt for p in cli.commands["submit"].params for opt in p.opts}
    assert run - {"--nprocs", "-P", "--out", "--quiet", "-q"} <= submit  # every measurement option of run


def test_template_directory_override(tmp_path, monkeypatch):
    from fabricbench.slurm.templates import TEMPLATE_ENV, load_template, template_dir

    assert (template_dir() / "pairwise.sbatch").is_file() and (template_dir() / "rail-sweep.sbatch").is_file()
    own = tmp_path / "tpl"
    own.mkdir()
    for name in ("run", "pairwise", "rail-sweep"):
        (own / f"{name}.sbatch").write_text(f"#!/bin/bash\n# site copy of {name}\n{{{{SBATCH}}}}\n")
    monkeypatch.setenv(TEMPLATE_ENV, str(own))
    assert "site copy of run" in load_template("run")
    script = run_script(Submission(JobSpec(nodes=1), tmp_path / "o"), ["all_reduce"])
    assert script.startswith("#!/bin/bash\n# site copy of run\n#SBATCH --job-name=fabricbench\n")
    with pytest.raises(UsageError, match="unknown sbatch template"):
        load_template("nope")
