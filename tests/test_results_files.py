"""Results files: modes from the umask, refusal of directories/devices, a full filesystem as one line, run.json
naming its parquet, and one writer per results directory (run, sweep --local, submit)."""

from __future__ import annotations

import os
import stat
import subprocess

import pandas as pd
import pytest

from fabricbench import atomic
from fabricbench.errors import UsageError
from fabricbench.results.io import (RESULTS_FILE, atomic_write_bytes, check_consistent, results_lock, write_results)
from fabricbench.cli import main


def test_new_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        assert stat.S_IMODE(os.stat(atomic_write_bytes(tmp_path / "a", b"x")).st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(os.stat(atomic_write_bytes(tmp_path / "b", b"x")).st_mode) == 0o600
    finally:
        os.umask(old)


def test_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    order = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (order.append("rename"), real_replace(a, b)))
    monkeypatch.setattr(atomic, "fsync_dir", lambda d: order.append(("fsync_dir", str(d))))
    atomic_write_bytes(tmp_path / "f", b"x")
    assert order == ["rename", ("fsync_dir", str(tmp_path))]


@pytest.mark.parametrize("target", ["dir", "/dev/full", "/dev/null"])
def test_directories_and_devices_are_never_replaced(tmp_path, target):
    path = tmp_path if target == "dir" else target
    before = os.stat(path)
    with pytest.raises(UsageError, match="directory|not a regular file"):
        atomic_write_bytes(path, b"report")
    after = os.stat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_filesystem_is_one_line_and_keeps_the_old_file(tiny_fs):
    atomic_write_bytes(tiny_fs / "report", b"old")
    with pytest.raises(UsageError, match="no space left") as err:
        atomic_write_bytes(tiny_fs / "report", b"x" * (1 << 20))
    assert "\n" not in str(err.value)
    assert (tiny_fs / "report").read_bytes() == b"old"
    assert [p.name for p in tiny_fs.iterdir()] == ["report"]  # no temporary file left behind


def test_run_json_names_the_parquet_it_describes(tmp_path):
    rows = [{"row_kind": "op", "op": "all_reduce", "size_bytes": 1024, "busbw_gbps": 1.0}]
    write_results(tmp_path, rows, {"status": "running"})
    assert check_consistent(tmp_path) is None
    # a crash between the two renames: the new parquet is in place, run.json still the previous one
    frame = pd.DataFrame(rows * 2)
    atomic_write_bytes(tmp_path / RESULTS_FILE, frame.to_parquet(index=False))
    assert "earlier results.parquet" in check_consistent(tmp_path)
    write_results(tmp_path, rows * 2, {"status": "ok"})
    assert check_consistent(tmp_path) is None


@pytest.mark.parametrize("argv", [
    ["run", "all_reduce", "--nprocs", "2", "--backend", "gloo", "-b", "1K", "-e", "1K"],
    ["sweep", "pairwise", "--local", "--nodes", "2", "-b", "1K", "-e", "1K"],
    ["submit", "all_reduce", "--nodes", "2", "--poll", "0.1"],
])
def test_a_second_writer_fails_naming_the_first(tmp_path, capsys, argv):
    out = tmp_path / "out"
    with results_lock(out, ["fabricbench", "run", "--out", str(out)]):  # flock: conflicts even in one process
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--out", str(out)])
    line = capsys.readouterr().err.strip()
    assert exc.value.code == 2, line
    assert "\n" not in line and f"pid {os.getpid()} on " in line and "fabricbench run --out" in line
    assert not (out / RESULTS_FILE).exists()
    with results_lock(out):  # released: the next writer gets it
        pass


def test_collect_waits_its_turn_too(tmp_path, capsys):
    """`collect` rewrites results.parquet and the tables: while a run or a submit writes there, it refuses."""
    out = tmp_path / "out"
    with results_lock(out, ["fabricbench", "submit", "--out", str(out)]):
        with pytest.raises(SystemExit) as exc:
            main(["collect", str(out)])
    line = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in line and "fabricbench submit --out" in line, line
