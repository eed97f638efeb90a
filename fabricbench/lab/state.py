"""The lab's state directory and its `state.json`, rewritten atomically after every step of `up`.

`state.json` records the lab number (which fixes every name the lab may own, see plan.py), the plan, the
daemons' pids, the current degradations, and whether `up` created the state directory itself. `lab down`
reads it, so a lab whose `up` crashed half-way is still removed completely.

Layout of the state directory (default /var/lib/fabricbench-lab; never /tmp, which every node has privately):

    state.json        this record            slurm.conf, topology.conf   the lab's Slurm configuration
    topology.yaml     the fabric for the analyzer                hosts   /etc/hosts inside the lab
    log/              slurmctld.log, slurmd-<node>.log           ctld/   slurmctld's StateSaveLocation
    nodes/<node>/     spool/ (SlurmdSpoolDir), tmp/ (the node's private /tmp), slurmd.pid
    shared/           a directory every node sees at the same path (results of jobs)
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from fabricbench.errors import UsageError

DEFAULT_STATE_DIR = Path("/var/lib/fabricbench-lab")
STATE_FILE = "state.json"
ENV_STATE_DIR = "FABRICBENCH_LAB_DIR"
# Serialises lab-number choice between concurrent `lab up`s. flock on a directory creates no file.
LOCK_PATH = "/run" if os.path.isdir("/run") else "/"


def default_state_dir() -> Path:
    return Path(os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR)


def resolve_state_dir(state_dir: str | os.PathLike | None) -> Path:
    path = Path(state_dir) if state_dir else default_state_dir()
    path = path.expanduser().absolute()
    parts = path.parts
    if len(parts) >= 2 and parts[1] == "tmp":
        raise UsageError(f"--state-dir {path}: the lab cannot live under /tmp (every lab node has its own "
                         "private /tmp, so the nodes would not see it); use e.g. /var/lib/fabricbench-lab")
    if path == Path("/") or str(path).startswith("/etc/slurm"):
        raise UsageError(f"--state-dir {path}: choose a directory of the lab's own, e.g. /var/lib/fabricbench-lab")
    return path


def write_json_atomic(path: Path, obj: object) -> None:
    from fabricbench.atomic import atomic_write_json

    atomic_write_json(path, obj)  # fsynced, and the directory after the rename


def write_text_atomic(path: Path, text: str) -> None:
    from fabricbench.atomic import atomic_write_text

    atomic_write_text(path, text)


class LabState:
    """A dict persisted to `<state_dir>/state.json` on every `save()`."""

    def __init__(self, state_dir: Path, data: dict | None = None):
        self.dir = state_dir
        self.data: dict = data if data is not None else {}

    @property
    def path(self) -> Path:
        return self.dir / STATE_FILE

    @classmethod
    def load(cls, state_dir: Path) -> "LabState | None":
        path = state_dir / STATE_FILE
        try:
            return cls(state_dir, json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise UsageError(f"{path}: unreadable lab state ({err}); remove the lab by hand or fix the file") from None

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)

    def __setitem__(self, key, value) -> None:
        self.data[key] = value
        self.save()


@contextmanager
def machine_lock(timeout_s: float = 60.0):
    """An exclusive advisory lock shared by every `lab up` on this machine (bounded wait)."""
    import time

    fd = os.open(LOCK_PATH, os.O_RDONLY)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UsageError(f"another 'fabricbench lab up' has held the lab lock for {timeout_s:g} s; "
                                     "try again when it has finished") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
