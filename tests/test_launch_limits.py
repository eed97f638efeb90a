"""The local launcher's limits: --nprocs bounded by the machine, a fork failure stops the ranks already started."""

from __future__ import annotations

import errno
import subprocess
import time

import pytest

from fabricbench.errors import RunFailed
from fabricbench.launch import local
from fabricbench.run_cli import build_config
from fabricbench.cli import main


def test_nprocs_above_the_machine_is_refused_with_an_override(capsys):
    limit, _ = local.max_local_ranks()
    with pytest.raises(SystemExit) as exc:
        main(["run", "all_reduce", "--nprocs", str(limit + 1), "--backend", "gloo", "-b", "1K", "-e", "1K"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "--allow-many-ranks" in err and "\n" not in err
    local.check_nprocs(limit + 1, allow_many=True)  # the override


def test_fork_failure_is_one_line_and_stops_started_ranks(tmp_path, monkeypatch):
    cfg = build_config(["all_reduce"], "gloo", "1K", "1K", None, None, 2, 1, "float", "sum", 0, 1, "aggregate",
                       "avg", False, str(tmp_path / "out"), None, 60, True, None, False, "none")
    real, started = subprocess.Popen, []

    def popen(*args, **kwargs):
        if len(started) == 2:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        proc = real(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    with pytest.raises(RunFailed, match=r"could not start rank 2 \(Resource temporarily unavailable\); the 2 rank"):
        local.launch(cfg, 4, "gloo")
    deadline = time.monotonic() + 10
    while any(p.poll() is None for p in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(started) == 2 and all(p.poll() is not None for p in started)
