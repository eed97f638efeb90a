"""The results directory layout (results.parquet, run.json, ranks/), its lock, and atomic writes
(fabricbench.atomic: temp file, fsync, rename, fsync of the directory; mode from the umask).

results.parquet and run.json are two renames; run.json is written last and names the parquet it describes
(`results_file`: name, rows, bytes, sha256), so a crash between the two is detected (`check_consistent`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from fabricbench.atomic import _umask, _why, atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_dir  # noqa: F401
from fabricbench.errors import UsageError
from fabricbench.results.schema import SCHEMA_VERSION, to_frame

RESULTS_FILE = "results.parquet"
RUN_FILE = "run.json"
LOCK_FILE = ".fabricbench.lock"


def write_results(out_dir: str | os.PathLike, records: Iterable[Mapping[str, object]] | pd.DataFrame,
                  run_info: Mapping[str, object] | None = None) -> Path:
    """Write `results.parquet`, then `run.json` naming it (rows, bytes, sha256), atomically. Returns the parquet path."""
    out = Path(out_dir)
    frame = records if isinstance(records, pd.DataFrame) else to_frame(records)
    buffer = frame.to_parquet(index=False, engine="pyarrow")
    parquet = atomic_write_bytes(out / RESULTS_FILE, buffer)
    if run_info is not None:
        info = {"schema_version": SCHEMA_VERSION, **run_info,
                "results_file": {"name": RESULTS_FILE, "rows": len(frame), "bytes": len(buffer),
                                 "sha256": hashlib.sha256(buffer).hexdigest()}}
        atomic_write_json(out / RUN_FILE, info)
    return parquet


def check_consistent(out_dir: str | os.PathLike) -> str | None:
    """None when run.json describes the results.parquet beside it (or makes no claim); else why not."""
    out = Path(out_dir)
    try:
        info = json.loads((out / RUN_FILE).read_text())
        claim = info.get("results_file") if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None
    if not isinstance(claim, dict):
        return None
    try:
        data = (out / str(claim.get("name", RESULTS_FILE))).read_bytes()
    except OSError as err:
        return f"run.json names {claim.get('name')} but it cannot be read ({err.strerror or err})"
    if len(data) != claim.get("bytes") or hashlib.sha256(data).hexdigest() != claim.get("sha256"):
        return ("run.json describes an earlier results.parquet than the one present (the writer stopped between "
                "the two renames): the results are complete, run.json's status and counts may be one step behind")
    return None


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results directory (or a results.parquet file) into a DataFrame with the full schema."""
    path = Path(path)
    parquet = path / RESULTS_FILE if path.is_dir() else path
    if not parquet.exists():
        raise UsageError(f"{parquet}: no results file here (expected a fabricbench results directory or {RESULTS_FILE})")
    if not parquet.is_file():
        raise UsageError(f"{parquet}: not a regular file")
    try:
        frame = pd.read_parquet(parquet, engine="pyarrow")
    except Exception as err:  # pyarrow raises several types for damaged files
        raise UsageError(f"{parquet}: not a readable Parquet file ({type(err).__name__}: {err}); re-run or restore it")
    return to_frame(frame)


# -- one writer per results directory --------------------------------------------------------------------------
@contextlib.contextmanager
def results_lock(out_dir: str | os.PathLike, command: list[str] | None = None):
    """Hold an exclusive lock on `out_dir` (flock on <out>/.fabricbench.lock) while a run, submit or sweep
    writes there. A second writer fails at once with a one-line error naming the first (pid, host, command).
    The lock goes with the process (a crash or SIGKILL releases it); the file stays and is reused."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666 & ~_umask())
    except OSError as err:
        raise UsageError(f"--out {out}: cannot lock it ({_why(err)})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UsageError(f"--out {out}: cannot lock it ({_why(err)})") from None
            raise UsageError(f"--out {out} is being written by {_holder(fd)}; wait for it to finish or choose "
                             "another --out") from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(command or [])[:300],
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        yield out
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode(errors="replace") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info.get("pid"):
        return "another fabricbench process"
    cmd = " ".join(str(info.get("command", "")).split())[:120]
    return f"pid {info.get('pid')} on {info.get('host', '?')} ({cmd or 'fabricbench'}, since {info.get('started', '?')})"
