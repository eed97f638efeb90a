"""Job submission and following against fake sbatch/squeue/sacct/scontrol/scancel (no Slurm needed):
parsing of their output, the pending -> running -> done sequence, clusters without accounting, deadlines,
Ctrl-C cancelling the job, and --no-wait."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fabricbench.errors import RunFailed, UsageError
from fabricbench.slurm import jobs
from tests.conftest import REPO

FAKE = r'''#!{python}
import fcntl, json, os, sys
state_path = os.environ["FAKE_SLURM_STATE"]
# one fake command at a time: a squeue poll that read the state before scancel ran must not write it back
# over scancel's record (a lost update under load)
lock = open(state_path + ".lock", "a")
fcntl.flock(lock, fcntl.LOCK_EX)
state = json.load(open(state_path))
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
state.setdefault("calls", []).append([name, *args])
def save():
    json.dump(state, open(state_path, "w"))
if name == "sbatch":
    if state.get("sbatch_error"):
        save(); print("sbatch: error: " + state["sbatch_error"], file=sys.stderr); sys.exit(1)
    state["script"] = sys.stdin.read(); save()
    print(state.get("job_id", "42") + ";lab"); sys.exit(0)
job = state.get("job", {{}})
seq = job.get("states", ["COMPLETED"])
if name == "squeue":
    i = job.get("i", 0)
    st = seq[min(i, len(seq) - 1)]
    job["i"] = i + 1; state["job"] = job; save()
    if st in ("PENDING", "RUNNING", "COMPLETING"):
        print(st + "|" + ("Resources" if st == "PENDING" else "None") + "|" + ("" if st == "PENDING" else "n[1-2]"))
    sys.exit(0)
final = seq[-1]
if name == "sacct":
    save()
    if state.get("no_sacct"):
        print("sacct: error: Slurm accounting storage is disabled", file=sys.stderr); sys.exit(1)
    print(final + "|" + ("0:0" if final == "COMPLETED" else "1:0") + "|n[1-2]"); sys.exit(0)
if name == "scontrol":
    save()
    print("JobId=42 JobName=x JobState=" + final + " Reason=None ExitCode=" + ("0:0" if final == "COMPLETED" else "2:0") + " NodeList=n[1-2]")
    sys.exit(0)
if name == "scancel":
    save(); sys.exit(0)
'''


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name in ("sbatch", "squeue", "sacct", "scontrol", "scancel"):
        path = bindir / name
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(0o755)
    state = tmp_path / "state.json"

    def configure(**kw):
        state.write_text(json.dumps(kw))

    def read():
        return json.loads(state.read_text())

    configure()
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_STATE", str(state))
    configure.read = read
    configure.env = {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_SLURM_STATE": str(state)}
    return configure


def test_sbatch_returns_the_job_id_and_refusals_are_one_line(fake_slurm):
    fake_slurm(job_id="1234")
    assert jobs.sbatch("#!/bin/bash\necho hi\n") == "1234"
    state = fake_slurm.read()
    assert state["script"] == "#!/bin/bash\necho hi\n" and state["calls"][0][:2] == ["sbatch", "--parsable"]
    fake_slurm(sbatch_error="Batch job submission failed: Invalid partition name specified")
    with pytest.raises(UsageError, match="sbatch refused the job: .*Invalid partition name"):
        jobs.sbatch("#!/bin/bash\n")


def test_follow_reports_pending_running_done(fake_slurm):
    fake_slurm(job={"states": ["PENDING", "PENDING", "RUNNING", "RUNNING", "COMPLETED"]})
    seen = []
    final = jobs.follow("42", lambda st, t: seen.append((st.phase, st.state, st.reason)), poll_s=0.01)
    assert [s[0] for s in seen] == ["pending", "pending", "running", "running", "done"]
    assert seen[0][2] == "Resources"
    assert final.ok is True and final.state == "COMPLETED" and final.exit_code == "0:0"


def test_without_accounting_the_state_comes_from_scontrol(fake_slurm):
    fake_slurm(no_sacct=True, job={"states": ["RUNNING", "FAILED"]})
    final = jobs.follow("42", lambda st, t: None, poll_s=0.01)
    assert final.state == "FAILED" and final.ok is False and final.exit_code == "2:0"
    assert any(c[0] == "scontrol" for c in fake_slurm.read()["calls"])


def test_follow_gives_up_at_its_deadline(fake_slurm):
    fake_slurm(job={"states": ["PENDING"]})
    with pytest.raises(RunFailed, match="still pending after"):
        jobs.follow("42", lambda st, t: None, poll_s=0.01, deadline_s=0.05)


def test_phase_words():
    assert jobs.phase_of("CANCELLED by 0") == "done" and jobs.phase_of("COMPLETING") == "running"
    assert jobs.phase_of("CONFIGURING") == "pending" and jobs.phase_of("???") == "unknown"


def _cli(args, env, **kw):
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    full.update(env)
    return subprocess.Popen([sys.executable, "-m", "fabricbench", *args], env=full, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_submit_no_wait_and_a_job_without_results(fake_slurm, tmp_path):
    out = tmp_path / "o"
    fake_slurm(job_id="77", job={"states": ["PENDING", "RUNNING", "COMPLETED"]})
    proc = _cli(["submit", "all_reduce", "--nodes", "2", "--no-wait", "--out", str(out)], fake_slurm.env)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "77"
    assert json.loads((out / "job.json").read_text())["job_id"] == "77"
    assert (out / "job.sbatch").read_text() == fake_slurm.read()["script"]
    # following it: the fake job completes but (no real srun) no rank wrote results: say so, exit 1
    proc = _cli(["collect", "77", "--out", str(out), "--poll", "0.05"], fake_slurm.env)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, stdout + stderr
    assert "no results reached" in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
    assert "job 77: done (completed" in stderr


def test_ctrl_c_cancels_the_job(fake_slurm, tmp_path):
    out = tmp_path / "o"
    fake_slurm(job_id="99", job={"states": ["RUNNING"]})
    proc = _cli(["submit", "all_reduce", "--nodes", "2", "--poll", "0.05", "--out", str(out)], fake_slurm.env)
    for _ in range(300):
        if (out / "job.json").exists():
            break
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "cancelled Slurm job 99 (scancel)" in stderr
    assert ["scancel", "99"] in fake_slurm.read()["calls"]
