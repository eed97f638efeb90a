"""Network namespaces, veth pairs and bridges through iproute2; processes living in a namespace.

Only names that the lab owns are ever touched: callers pass the lab's own names or its own prefix.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from fabricbench.errors import FabricbenchError

NETNS_DIR = Path("/var/run/netns")


class LabCommandFailed(FabricbenchError):
    """A system command the lab needed failed (exit code 1: the environment, not the user's input)."""


def run(argv: list[str], check: bool = True, timeout: float = 30, input: str | None = None,
        capture: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=capture, text=True, timeout=timeout, input=input)
    except FileNotFoundError:
        raise LabCommandFailed(f"'{argv[0]}' is not installed (needed for: {' '.join(argv)})") from None
    except subprocess.TimeoutExpired:
        raise LabCommandFailed(f"'{' '.join(argv)}' did not finish within {timeout:g} s") from None
    if check and proc.returncode != 0:
        why = " ".join((proc.stderr or proc.stdout or "").split())[:300]
        raise LabCommandFailed(f"'{' '.join(argv)}' failed (exit {proc.returncode}): {why or 'no message'}")
    return proc


def ip_batch(lines: list[str], netns: str | None = None) -> None:
    """Several `ip` commands in one process (`ip -batch -`): one fork instead of dozens."""
    if not lines:
        return
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, input="\n".join(lines) + "\n")


def tc_batch(cmds: list[list[str]], netns: str | None = None) -> None:
    """`tc` commands (each a full argv starting with 'tc') in one `tc -batch -` process."""
    if not cmds:
        return
    argv = ["tc"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, input="\n".join(" ".join(cmd[1:]) for cmd in cmds) + "\n")


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_netns(prefix: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def list_links(pattern: str) -> list[str]:
    """Names of host-namespace links matching the regular expression `pattern` (anchored at the start)."""
    out = run(["ip", "-j", "link", "show"]).stdout
    names = [entry.get("ifname", "") for entry in json.loads(out or "[]")]
    regex = re.compile(pattern)
    return sorted(n for n in names if regex.match(n))


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def link_alias(name: str) -> str | None:
    try:
        return Path("/sys/class/net", name, "ifalias").read_text().strip() or None
    except OSError:
        return None


def addr_routed(prefix_cidr: str) -> bool:
    """True when the host already has a route for exactly this prefix (someone else uses the subnet)."""
    out = run(["ip", "-4", "-j", "route", "show"], check=False).stdout or "[]"
    try:
        routes = json.loads(out)
    except ValueError:
        return False
    return any(r.get("dst") == prefix_cidr for r in routes)


def delete_link(name: str) -> None:
    if link_exists(name):
        run(["ip", "link", "del", name], check=False)


def delete_netns(name: str) -> None:
    if netns_exists(name):
        run(["ip", "netns", "del", name], check=False)


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def pids_in_netns(name: str) -> list[int]:
    """Every process whose network namespace is `name` (what `ip netns pids` does)."""
    inode = netns_inode(name)
    if inode is None:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_pids(pids: list[int], grace_s: float = 3.0) -> list[int]:
    """SIGTERM, wait up to `grace_s`, then SIGKILL; returns the pids still alive after that (normally none)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        alive = [p for p in pids if pid_alive(p)]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [p for p in alive if pid_alive(p)]
        if not alive:
            return []
    return [p for p in pids if pid_alive(p)]


def kill_netns_processes(names: list[str], grace_s: float = 0.5) -> list[int]:
    """Stop every process in the namespaces `names`, all at once (SIGTERM, then SIGKILL after `grace_s`).

    Processes started meanwhile (a slurmd forking a step) are caught by up to 5 passes."""
    left: list[int] = []
    for _ in range(5):
        pids = [pid for name in names for pid in pids_in_netns(name)]
        if not pids:
            return []
        left = kill_pids(pids, grace_s)
    return left
