"""pytest fixtures for the fabric lab: a real Slurm cluster of network namespaces (fabricbench/lab, docs/lab.md).

Use from a test module (tests/ is on sys.path, so the import works as is):

    from lab_fixture import lab, lab_config, lab_factory  # noqa: F401  (fixtures)

    pytestmark = pytest.mark.lab

    @pytest.fixture(scope="module")
    def lab_config():                       # optional: override the module's lab (default below)
        return {"nodes": 5, "leaves": 1, "link_rate": "400mbit"}

    def test_something(lab):
        out = lab.srun("-N2", "hostname")   # host srun with SLURM_CONF set; CompletedProcess (text)
        assert sorted(out.stdout.split()) == ["lab1", "lab2"]
        lab.degrade(nic="lab1", rate="60%")  # also pair=("lab1", "lab2"), uplink="leaf2", delay=, loss=
        bps = lab.throughput("lab1", "lab2")  # TCP goodput in bits/s, measured inside the namespaces
        lab.heal()

`lab` (module scope) brings up one lab per module from `lab_config` and always removes it afterwards;
`lab_factory` (session scope) is `start(nodes=4, leaves=1, link_rate="400mbit", cpus_per_node=4) -> LabHandle`
for extra labs, each removed at the end of the session (or earlier with `handle.down()`). Several labs can be up
at once (each gets its own lab number, subnet and names).

Tests are skipped, with the reason, only when the lab cannot exist here: not root, no network namespaces, or no
slurmd/slurmctld and no apt-get to install them. Anything else that goes wrong is a failure.

Job steps see the same filesystem as the host except /tmp, which is private per node: the fabricbench checkout
(when under /tmp, as in CI) and pytest's base temporary directory (so `tmp_path` works) are bind-mounted into
every node at the same path; `handle.shared_dir` (in the lab's state directory) is another place every node sees.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STATE_ROOT = Path("/var/lib")
STATE_PREFIX = "fabricbench-lab-pytest-"
DEFAULT_CONFIG = {"nodes": 4, "leaves": 2, "link_rate": "400mbit"}


def lab_unavailable() -> str | None:
    """Why the lab cannot run on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "the fabric lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the fabric lab needs root (network namespaces, Slurm daemons)"
    for tool in ("ip", "tc", "nsenter", "unshare"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            return f"'{tool}' is not installed (apt-get install iproute2 util-linux)"
    from fabricbench.lab.slurm_cluster import missing_tools

    missing = missing_tools()
    if missing and shutil.which("apt-get") is None:
        return f"{', '.join(missing)} missing and no apt-get to install them (apt-get install slurmd slurmctld slurm-client)"
    name = f"fbprobe-{os.getpid()}"
    proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"cannot create a network namespace here: {' '.join(proc.stderr.split())}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "PMIX_", "OMPI_", "PMI_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                                   "FABRICBENCH_INJECT")}
    pythonpath = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + pythonpath if pythonpath else "")
    return env


@dataclass
class LabHandle:
    """A lab that is up. Attributes are plain values; methods run commands against it."""

    state_dir: Path
    nodes: list[str]
    leaves: dict[str, list[str]]
    link_rate_bps: int | None
    lab_id: int
    addrs: dict[str, str]
    env: dict[str, str] = field(repr=False)  # os.environ + SLURM_CONF + FABRICBENCH_LAB_DIR (+ repo on PYTHONPATH)
    up_seconds: float = 0.0
    _lab: object = field(default=None, repr=False)
    _gone: bool = field(default=False, repr=False)

    @property
    def slurm_conf(self) -> Path:
        return self.state_dir / "slurm.conf"

    @property
    def shared_dir(self) -> Path:
        return self.state_dir / "shared"

    @property
    def topology_yaml(self) -> Path:
        return self.state_dir / "topology.yaml"

    def run(self, argv: list[str], timeout: float = 120, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
        """Run a host command (srun, sbatch, squeue, fabricbench ...) against this lab."""
        kwargs.setdefault("cwd", str(REPO))
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                              env=self.env, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return proc

    def srun(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        return self.run(["srun", *args], timeout=timeout, check=check)

    def fabricbench(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`python -m fabricbench ARGS` on the host with this lab's environment (lab subcommands get --state-dir)."""
        args = list(args)
        if args[:1] == ["lab"] and "--state-dir" not in args and args[1:2] != ["exec"]:
            args += ["--state-dir", str(self.state_dir)]
        return self.run([sys.executable, "-m", "fabricbench", *args], timeout=timeout)

    def exec(self, node: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command inside a node: its network, private /tmp, /etc/hosts and hostname."""
        from fabricbench.lab import manager

        return subprocess.run(manager.exec_argv(self._lab, node, [str(a) for a in argv]), capture_output=True,
                              text=True, timeout=timeout, env=self.env, cwd=str(REPO))

    def degrade(self, nic: str | None = None, pair: tuple[str, str] | None = None, uplink: str | None = None,
                rate: str | None = None, delay: str | None = None, loss: str | None = None,
                direction: str | None = None) -> dict:
        from fabricbench.lab import manager

        kind, target = ("nic", nic) if nic else ("uplink", uplink) if uplink else ("pair", None)
        a, b = pair if pair else (None, None)
        return manager.degrade(self._reload(), kind, target, a, b, rate, delay, loss, direction=direction)

    def heal(self, nic: str | None = None, pair: tuple[str, str] | None = None, uplink: str | None = None) -> list:
        from fabricbench.lab import manager

        kind = "nic" if nic else "uplink" if uplink else "pair" if pair else None
        a, b = pair if pair else (None, None)
        return manager.heal(self._reload(), kind, nic or uplink, a, b)

    def throughput(self, src: str, dst: str, seconds: float = 1.0) -> float:
        """TCP goodput src -> dst in bits/s (about 4-5 % under the tc rate: TCP/IP headers)."""
        from fabricbench.lab import probe

        return probe.measure(self._reload(), src, dst, seconds=seconds)

    def status(self) -> dict:
        from fabricbench.lab import manager

        return manager.status(self._reload())

    def kill_node(self, node: str) -> int:
        """Crash a node: its slurmd and every job process in it die (its network stays up)."""
        from fabricbench.lab import manager

        return manager.kill_node(self._reload(), node)

    def start_node(self, node: str, wait: bool = True) -> None:
        from fabricbench.lab import manager

        manager.start_node(self._reload(), node, wait=wait)

    def down(self) -> list[str]:
        from fabricbench.lab import manager

        if self._gone:
            return []
        self._gone = True
        return manager.down(self.state_dir)

    def _reload(self):
        from fabricbench.lab import manager

        self._lab = manager.load(self.state_dir)
        return self._lab


def _reap_stale_labs() -> None:
    """Remove labs left by pytest runs that died (their pid in the directory name is gone)."""
    from fabricbench.lab import manager

    for path in sorted(STATE_ROOT.glob(STATE_PREFIX + "*")):
        match = re.match(re.escape(STATE_PREFIX) + r"(\d+)-", path.name)
        if not match or Path(f"/proc/{match.group(1)}").exists():
            continue
        try:
            manager.down(path)
        except Exception:
            pass


_counter = iter(range(10**6))


def start_lab(nodes: int = 4, leaves: int = 1, link_rate: str = "400mbit", cpus_per_node: int = 4,
              shares: list[str] | None = None, oversubscription: str | None = None,
              uplink_rate: str | None = None) -> LabHandle:
    """Bring up a lab in a fresh state directory; skips the test when the lab cannot exist here."""
    why = lab_unavailable()
    if why:
        pytest.skip(why)
    from fabricbench.lab import manager

    _reap_stale_labs()
    state_dir = STATE_ROOT / f"{STATE_PREFIX}{os.getpid()}-{next(_counter)}"
    t0 = time.monotonic()
    lab = manager.up(nodes, leaves, link_rate, state_dir, cpus_per_node, install=True, shares=shares or [],
                     oversubscription=oversubscription, uplink_rate=uplink_rate)
    plan = lab.plan
    env = _clean_env()
    env.update(SLURM_CONF=str(lab.conf), FABRICBENCH_LAB_DIR=str(lab.dir))
    return LabHandle(state_dir=lab.dir, nodes=[n.name for n in plan.nodes],
                     leaves={leaf.name: list(leaf.nodes) for leaf in plan.leaves},
                     link_rate_bps=plan.link_rate_bps, lab_id=plan.lab_id, addrs={n.name: n.addr for n in plan.nodes},
                     env=env, up_seconds=time.monotonic() - t0, _lab=lab)


def _pytest_shares(tmp_path_factory) -> list[str]:
    base = Path(tmp_path_factory.getbasetemp()).resolve()
    return [str(base)] if str(base).startswith("/tmp/") else []


@pytest.fixture(scope="session")
def lab_factory(tmp_path_factory):
    """start(nodes=4, leaves=1, link_rate='400mbit', cpus_per_node=4) -> LabHandle; all removed at session end."""
    handles: list[LabHandle] = []
    shares = _pytest_shares(tmp_path_factory)

    def start(nodes: int = 4, leaves: int = 1, link_rate: str = "400mbit", cpus_per_node: int = 4,
              oversubscription: str | None = None, uplink_rate: str | None = None) -> LabHandle:
        handle = start_lab(nodes, leaves, link_rate, cpus_per_node, shares=shares,
                           oversubscription=oversubscription, uplink_rate=uplink_rate)
        handles.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in handles:
            handle.down()


@pytest.fixture(scope="module")
def lab_config() -> dict:
    """The module's lab; override in a test module to change it."""
    return dict(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def lab(lab_config, tmp_path_factory):
    """One lab for the module (from `lab_config`), always removed afterwards. A test that degrades a link
    heals it again (`lab.heal()` in a `finally`), since later tests of the module share the lab."""
    handle = start_lab(shares=_pytest_shares(tmp_path_factory), **lab_config)
    try:
        yield handle
    finally:
        handle.down()
