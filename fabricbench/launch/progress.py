"""What the local launcher shows while ranks run: rank 0's table lines as they come, and (on a terminal) a
status line under them with the current operation, size and phase read from the ranks' heartbeats."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.console import Console


@dataclass
class Heartbeat:
    """One rank's heartbeat file (written by the driver): calls entered and returned, host, phase."""

    rank: int
    calls: int
    done: int
    host: str
    phase: str


def read_heartbeat(path: Path) -> Heartbeat:
    calls, done, host, phase = path.read_text().rstrip("\n").split("\t", 3)
    return Heartbeat(int(path.name[4:]), int(calls), int(done), host, phase)


def read_heartbeats(directory: Path) -> dict[int, Heartbeat]:
    out = {}
    for f in directory.glob("rank*"):
        try:
            beat = read_heartbeat(f)
        except (OSError, ValueError):
            continue
        out[beat.rank] = beat
    return out


class RunProgress:
    def __init__(self, table: IO[bytes], progress_dir: Path, nranks: int):
        self.console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.interactive = self.console.is_terminal
        self.progress_dir, self.nranks = progress_dir, nranks
        self._status = self.console.status("starting ranks...") if self.interactive else None
        self._start = time.monotonic()
        self._reader = threading.Thread(target=self._copy, args=(table,), name="fabricbench-table", daemon=True)

    def __enter__(self):
        if self._status:
            self._status.start()
        self._reader.start()
        return self

    def __exit__(self, *exc):
        self.finish()
        return False

    def finish(self) -> None:
        """Print the table's remaining lines and remove the status line (idempotent)."""
        if self._reader.is_alive():
            self._reader.join(timeout=5)
        if self._status:
            self._status.stop()
            self._status = None

    def _copy(self, table: IO[bytes]) -> None:
        for raw in iter(table.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            if self.interactive:
                self.console.print(line, markup=False, emoji=False)
            else:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    def tick(self) -> None:
        """Refresh the status line (terminal only) from rank 0's heartbeat."""
        if not self._status:
            return
        try:
            beat = read_heartbeat(self.progress_dir / "rank0")
        except (OSError, ValueError):
            return
        calls, phase = beat.calls, beat.phase
        elapsed = time.monotonic() - self._start
        self._status.update(f"{phase} · {calls} calls · {elapsed:.0f} s · {self.nranks} ranks")
