"""What the local launcher shows while ranks run: rank 0's table lines as they come, and (on a terminal) a
status line under them with the current operation, size and phase read from the ranks' heartbeats."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import IO

from rich.console import Console


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
            calls, phase = (self.progress_dir / "rank0").read_text().rstrip("\n").split("\t", 1)
        except (OSError, ValueError):
            return
        elapsed = time.monotonic() - self._start
        self._status.update(f"{phase} · {calls} calls · {elapsed:.0f} s · {self.nranks} ranks")
