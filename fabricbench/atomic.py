"""Atomic, durable file writes (no heavy imports: the lab and the launcher use them too).

Every write goes to a temporary file beside the target, is fsynced, renamed over the target, and the directory
is fsynced after the rename, so a crash leaves the old file or the new one, never half of one, and the rename
itself survives a power loss. New files get the mode the umask gives (0644 under the usual 022), not
mkstemp's 0600. A target that exists and is not a regular file (a directory, /dev/full, a FIFO) is refused:
renaming over it would replace the device node.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

from fabricbench.errors import UsageError


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide and racy)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or a new entry in `directory` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _why(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "no space left on the filesystem"
    if err.errno == errno.EROFS:
        return "read-only filesystem"
    return err.strerror or str(err)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> Path:
    """Write to a temporary file beside `path`, fsync, rename, fsync the directory: readers see the old file
    or the new one. Problems (a directory or device in the way, no space, read-only) are one-line UsageErrors."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise UsageError(f"{path}: cannot write ({_why(err)})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise UsageError(f"{path} is {kind}; give a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{path}: cannot create its directory {path.parent} ({_why(err)})") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UsageError(f"{path}: cannot write in {path.parent} ({_why(err)})") from None
    try:
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):
            raise UsageError(f"{path}: could not be written ({_why(err)}); the previous file, if any, is intact") from None
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> Path:
    return atomic_write_bytes(path, text.encode(), mode)


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
