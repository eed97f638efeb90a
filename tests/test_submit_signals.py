"""`submit` under SIGTERM: the job is cancelled (nobody would collect it) and job.json says so; exit 143.
--poll and other numbers are refused before anything is submitted."""

from __future__ import annotations

import json
import signal
import time

from tests.test_slurm_jobs import _cli, fake_slurm  # noqa: F401  (fixture)


def test_sigterm_cancels_the_job_and_records_it(fake_slurm, tmp_path):  # noqa: F811
    out = tmp_path / "o"
    fake_slurm(job_id="98", job={"states": ["RUNNING"]})
    proc = _cli(["submit", "all_reduce", "--nodes", "2", "--poll", "0.05", "--out", str(out)], fake_slurm.env)
    for _ in range(300):
        if (out / "job.json").exists():
            break
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "cancelled Slurm job 98 (scancel)" in stderr and "Traceback" not in stderr
    assert ["scancel", "98"] in fake_slurm.read()["calls"]
    meta = json.loads((out / "job.json").read_text())
    assert meta["cancelled_by"] == "SIGTERM" and meta["cancelled"] is True


def test_bad_poll_is_refused_before_submitting(fake_slurm, tmp_path):  # noqa: F811
    for poll in ("-1", "0", "nan", "inf"):
        proc = _cli(["submit", "all_reduce", "--nodes", "2", "--poll", poll, "--out", str(tmp_path / poll)],
                    fake_slurm.env)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 2 and "--poll" in stderr and "Traceback" not in stderr, (poll, stderr)
        assert not any(c[0] == "sbatch" for c in fake_slurm.read().get("calls", [])), poll
