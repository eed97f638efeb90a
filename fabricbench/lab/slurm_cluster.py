"""The lab's Slurm cluster: render slurm.conf/topology.conf, start slurmctld and the slurmds, ask sinfo.

Facts this relies on (shared REFERENCE.md, checked on Debian 12 / Slurm 22.05):
- several slurmd on one machine work when each has its own node name (`slurmd -N`), and `auth/none` +
  `cred/none` need no munge;
- a daemon must enter its namespace with `nsenter --net=/var/run/netns/NAME`, not `ip netns exec` (which
  remounts /sys, so slurmd finds no cgroup fs);
- `srun --mpi=pmix` needs a private /tmp per node, so every daemon runs under `unshare --mount --propagation
  private` with the node's own directory bind-mounted on /tmp (and the lab's hosts file on /etc/hosts), and
  `unshare --uts` with its own hostname.
Job steps are children of slurmd (through slurmstepd), so they inherit its network, mount and UTS namespaces.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from fabricbench.errors import UsageError
from fabricbench.lab.netns import LabCommandFailed, run
from fabricbench.lab.plan import SLURMCTLD_PORT, SLURMD_PORT, Plan

DAEMONS = ("slurmctld", "slurmd", "srun", "sinfo", "scontrol", "nsenter", "unshare", "ip", "tc")
APT_PACKAGES = "slurmctld slurmd slurm-client iproute2 util-linux"


def missing_tools() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    return [tool for tool in DAEMONS if shutil.which(tool, path=path) is None]


def ensure_installed(install: bool = True) -> None:
    """Install Debian's Slurm daemons when missing and apt-get is there (as the issue asks); else say how."""
    missing = missing_tools()
    if not missing:
        return
    hint = f"install them with: apt-get install -y {APT_PACKAGES}"
    if not install or shutil.which("apt-get") is None:
        raise UsageError(f"the lab needs {', '.join(missing)}, which are not installed; {hint}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES.split()]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            raise UsageError(f"the lab needs {', '.join(missing)}; '{' '.join(argv)}' failed "
                             f"({' '.join(proc.stderr.split())[:200]}); {hint}")
    still = missing_tools()
    if still:
        raise UsageError(f"still missing after apt-get install: {', '.join(still)}; {hint}")


def _hostlist(names: list[str]) -> str:
    import hostlist

    return hostlist.collect_hostlist(names)


def render_slurm_conf(plan: Plan, state_dir: Path) -> str:
    d = str(state_dir)
    lines = [
        f"# fabricbench lab {plan.lab_id}: written by 'fabricbench lab up', removed by 'fabricbench lab down'.",
        "# Use it with: eval \"$(fabricbench lab env)\"   (sets SLURM_CONF to this file)",
        f"ClusterName=fblab{plan.lab_id}",
        f"SlurmctldHost={plan.ctl_name}({plan.ctl_addr})",
        f"SlurmctldPort={SLURMCTLD_PORT}",
        f"SlurmdPort={SLURMD_PORT}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/none",
        "CredType=cred/none",
        f"StateSaveLocation={d}/ctld",
        f"SlurmctldPidFile={d}/ctld/slurmctld.pid",
        f"SlurmctldLogFile={d}/log/slurmctld.log",
        f"SlurmdSpoolDir={d}/nodes/%n/spool",
        f"SlurmdPidFile={d}/nodes/%n/slurmd.pid",
        f"SlurmdLogFile={d}/log/slurmd-%n.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={d}/log/jobcomp.txt",
        "SwitchType=switch/none",
        "MpiDefault=none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "TopologyPlugin=topology/tree",
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "MinJobAge=600",
        "KillWait=5",
        "MessageTimeout=10",
        "TmpFS=/tmp",
        "ScronParameters=enable",  # scrontab, for `fabricbench health schedule` (Slurm >= 20.11)
        "",
    ]
    for node in plan.nodes:
        lines.append(f"NodeName={node.name} NodeAddr={node.addr} NodeHostname={node.name} "
                     f"CPUs={plan.cpus_per_node} RealMemory=4096 State=UNKNOWN")
    lines.append("PartitionName=lab Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def render_topology_conf(plan: Plan) -> str:
    lines = ["# fabricbench lab: the switches of the lab (topology/tree). Leaves are Linux bridges joined to the",
             "# spine bridge by veth uplinks; see topology.yaml beside this file for addresses and rates."]
    for leaf in plan.leaves:
        lines.append(f"SwitchName={leaf.name} Nodes={_hostlist(leaf.nodes)}")
    lines.append(f"SwitchName=spine Switches={_hostlist([leaf.name for leaf in plan.leaves])}")
    return "\n".join(lines) + "\n"


def _daemon_env(conf: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = str(conf)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    return env


def namespace_wrapper(netns: str, hostname: str, binds: list[tuple[Path, str]], argv: list[str],
                      private_tmp: Path | None = None, shares: list[str] = ()) -> list[str]:
    """argv that runs `argv` in network namespace `netns`, with its own hostname and private bind mounts.

    With `private_tmp`, that directory becomes the namespace's /tmp, and each of `shares` (host directories
    under /tmp, e.g. a checkout in /tmp) is bind-mounted into it first, so it stays visible at the same path."""
    script = [f"echo {shlex.quote(hostname)} > /proc/sys/kernel/hostname"]
    if private_tmp is not None:
        for share in shares:
            inside = Path(private_tmp) / Path(share).relative_to("/tmp")
            script += [f"mkdir -p {shlex.quote(str(inside))}",
                       f"mount --bind {shlex.quote(share)} {shlex.quote(str(inside))}"]
        script.append(f"mount --rbind {shlex.quote(str(private_tmp))} /tmp")
    script += [f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}" for src, dst in binds]
    script.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return ["nsenter", f"--net=/var/run/netns/{netns}", "unshare", "--uts", "--mount", "--propagation",
            "private", "--", "sh", "-ec", " && ".join(script)]


def start_daemons(argvs: list[list[str]], conf: Path, what: list[str], timeout_s: float = 30) -> None:
    """Start daemons (each forks into the background); fail with the daemon's own words if one cannot."""
    env = _daemon_env(conf)
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL) for argv in argvs]
    deadline = time.monotonic() + timeout_s
    errors = []
    for proc, name in zip(procs, what):
        try:
            _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            errors.append(f"{name} did not daemonize within {timeout_s:g} s")
            continue
        if proc.returncode != 0:
            errors.append(f"{name} failed to start (exit {proc.returncode}): {' '.join(err.split())[:300]}")
    if errors:
        raise LabCommandFailed("; ".join(errors))


def slurm_env(conf: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = str(conf)
    return env


def wait_controller(conf: Path, log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, env=slurm_env(conf),
                              timeout=15)
        if "UP" in proc.stdout:
            return
        time.sleep(0.1)
    raise LabCommandFailed(f"slurmctld did not answer within {timeout_s:g} s; see {log}: {_tail(log)}")


def node_states(conf: Path, timeout_s: float = 15) -> dict[str, str]:
    """{node: state} from sinfo (lower case, e.g. idle, alloc, down*); {} when the controller does not answer."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True,
                              env=slurm_env(conf), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {}
    if proc.returncode != 0:
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1].lower()
    return states


def wait_nodes_idle(conf: Path, nodes: list[str], log_dir: Path, timeout_s: float = 30) -> float:
    """Wait until every node is idle (registered); returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout_s
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = node_states(conf)
        if states and all(states.get(n) in ("idle", "mixed", "allocated") for n in nodes):
            return time.monotonic() - start
        time.sleep(0.1)
    bad = {n: states.get(n, "missing") for n in nodes if not states.get(n, "").startswith("idle")}
    first = next(iter(bad), nodes[0])
    raise LabCommandFailed(f"nodes not ready within {timeout_s:g} s: "
                           f"{', '.join(f'{n}={s}' for n, s in bad.items())}; see "
                           f"{log_dir}/slurmd-{first}.log: {_tail(log_dir / f'slurmd-{first}.log')}")


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def scontrol(conf: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["scontrol", *args], capture_output=True, text=True, env=slurm_env(conf), timeout=15)
    if check and proc.returncode != 0:
        raise LabCommandFailed(f"'scontrol {' '.join(args)}' failed: {' '.join(proc.stderr.split())[:200]}")
    return proc


__all__ = ["ensure_installed", "render_slurm_conf", "render_topology_conf", "namespace_wrapper", "start_daemons",
           "wait_controller", "wait_nodes_idle", "node_states", "read_pid", "scontrol", "slurm_env", "run"]
