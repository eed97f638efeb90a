"""Who am I: rank, world size and rendezvous point, from whichever launcher started this process.

Precedence (first match wins), and why:
1. torchrun / the local launcher (`RANK` + `WORLD_SIZE`): when torchrun runs inside `srun`, torchrun spawned
   this process, and SLURM_PROCID names the torchrun agent, not this worker.
2. Open MPI's mpirun (`OMPI_COMM_WORLD_RANK`): inside a Slurm job mpirun starts its daemons with srun, so the
   Slurm step variables describe the daemons, not the ranks.
3. MPICH/Hydra (`PMI_RANK` + `PMI_SIZE`).
4. A Slurm job step (`SLURM_STEP_ID` + `SLURM_PROCID`): the *step's* view (SLURM_STEP_NUM_TASKS,
   SLURM_STEP_NODELIST), because pairwise rounds and retests run steps on subsets of the allocation. The
   rendezvous is the first host of the step on a port derived from the job and step ids.
5. `PMIX_RANK` alone (a PMIx launcher without the above).
Inside a Slurm allocation but outside a step (a batch script or salloc shell) there is no way to know the
other ranks: `discover` refuses rather than waiting for ranks that will never come.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from fabricbench.errors import UsageError

DEFAULT_PORT = 29500
# Slurm's pseudo step ids for the batch script, the extern step and interactive steps are not real steps.
_PSEUDO_STEPS = {"batch", "extern", "interactive", "4294967291", "4294967292", "4294967293", "4294967294"}


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    source: str  # local | torchrun | mpi-ompi | mpi-pmi | slurm | pmix | single
    host: str

    def as_dict(self) -> dict:
        return asdict(self)


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        if default is None:
            raise UsageError(f"environment variable {key} is missing; the launcher set an incomplete environment")
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment variable {key}='{raw}' is not an integer") from None


def slurm_step_port(job_id: int, step_id: int) -> int:
    """A port per (job, step) in 20000-59999, so concurrent steps of one job do not collide."""
    return 20000 + (job_id * 1009 + step_id * 7919) % 40000


def _first_host(nodelist: str) -> str:
    import hostlist

    try:
        hosts = hostlist.expand_hostlist(nodelist)
    except hostlist.BadHostlist as err:
        raise UsageError(f"cannot expand Slurm node list '{nodelist}': {err}") from None
    if not hosts:
        raise UsageError(f"Slurm node list '{nodelist}' is empty")
    return hosts[0]


def in_external_launcher(env: Mapping[str, str] | None = None) -> bool:
    """True when some launcher (torchrun, mpirun, srun step) started this process as one of several ranks."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return True
    if "OMPI_COMM_WORLD_RANK" in env or ("PMI_RANK" in env and "PMI_SIZE" in env):
        return True
    if _in_slurm_step(env):
        return True
    return "PMIX_RANK" in env


def _in_slurm_step(env: Mapping[str, str]) -> bool:
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID"))
    return step is not None and step not in _PSEUDO_STEPS and "SLURM_PROCID" in env


def in_slurm_allocation_outside_step(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return "SLURM_JOB_ID" in env and not _in_slurm_step(env)


def discover(env: Mapping[str, str] | None = None, rendezvous: bool = True) -> RankInfo:
    """Rank information for this process (see the module docstring for precedence).

    `rendezvous=False` (the MPI backend: MPI connects its own ranks) needs no MASTER_ADDR across hosts."""
    env = os.environ if env is None else env
    host = socket.gethostname()
    addr = env.get("MASTER_ADDR")
    port = _int(env, "MASTER_PORT", DEFAULT_PORT)

    if "RANK" in env and "WORLD_SIZE" in env:
        source = "local" if env.get("FABRICBENCH_LAUNCHER") == "local" else "torchrun"
        world = _int(env, "WORLD_SIZE")
        return _checked(RankInfo(_int(env, "RANK"), world, _int(env, "LOCAL_RANK", 0),
                                 _int(env, "LOCAL_WORLD_SIZE", world), addr or "127.0.0.1", port, source, host))
    if "OMPI_COMM_WORLD_RANK" in env:
        world = _int(env, "OMPI_COMM_WORLD_SIZE")
        local_world = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", world)
        return _checked(RankInfo(_int(env, "OMPI_COMM_WORLD_RANK"), world,
                                 _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0), local_world,
                                 addr or _single_host_addr(world, local_world, "mpirun", rendezvous), port, "mpi-ompi", host))
    if "PMI_RANK" in env and "PMI_SIZE" in env and not _in_slurm_step(env):
        world = _int(env, "PMI_SIZE")
        local_world = _int(env, "MPI_LOCALNRANKS", world)
        return _checked(RankInfo(_int(env, "PMI_RANK"), world, _int(env, "MPI_LOCALRANKID", 0), local_world,
                                 addr or _single_host_addr(world, local_world, "mpiexec", rendezvous), port, "mpi-pmi", host))
    if _in_slurm_step(env):
        world = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or host
        step_port = slurm_step_port(_int(env, "SLURM_JOB_ID", 0), _int(env, "SLURM_STEP_ID", 0))
        local_world = _tasks_on_this_node(env, world)
        return _checked(RankInfo(_int(env, "SLURM_PROCID"), world, _int(env, "SLURM_LOCALID", 0), local_world,
                                 addr or _first_host(nodelist), _int(env, "MASTER_PORT", step_port),
                                 "slurm", host))
    if "PMIX_RANK" in env:
        world = _int(env, "PMIX_SIZE", _int(env, "OMPI_COMM_WORLD_SIZE", 0) or 1)
        if world <= 1 and "PMIX_SIZE" not in env:
            raise UsageError("PMIX_RANK is set but the world size is not (no PMIX_SIZE, SLURM_STEP_NUM_TASKS "
                             "or OMPI_COMM_WORLD_SIZE); launch with srun --mpi=pmix or mpirun")
        return _checked(RankInfo(_int(env, "PMIX_RANK"), world, _int(env, "PMIX_LOCAL_RANK", 0),
                                 _int(env, "PMIX_LOCAL_SIZE", world), addr or "127.0.0.1", port, "pmix", host))
    if in_slurm_allocation_outside_step(env):
        raise UsageError(
            f"this shell is inside Slurm job {env.get('SLURM_JOB_ID')} but not in a job step, so the other ranks "
            "are unknown; start the ranks with 'srun fabricbench run ...', or give --nprocs N for ranks on this "
            "node only")
    return RankInfo(0, 1, 0, 1, addr or "127.0.0.1", port, "single", host)


def _tasks_on_this_node(env: Mapping[str, str], world: int) -> int:
    # SLURM_STEP_TASKS_PER_NODE looks like '4(x2),3'; the local count is the entry for this node's index.
    raw = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    node_id = _int(env, "SLURM_NODEID", 0)
    if not raw:
        return world
    counts: list[int] = []
    for part in raw.split(","):
        m = re.fullmatch(r"\s*(\d{1,6})(?:\(x(\d{1,6})\))?\s*", part)
        if not m:
            raise UsageError(f"SLURM_TASKS_PER_NODE={raw[:60]!r} is not Slurm's form (e.g. '4(x2),3'); "
                             "run under srun, or unset it")
        n, rep = int(m.group(1)), int(m.group(2) or 1)
        if node_id < len(counts) + rep:
            return n
        counts += [n] * min(rep, node_id + 1)  # only as far as this node: '1(x999999)' builds no huge list
    return counts[node_id] if node_id < len(counts) else world


def _single_host_addr(world: int, local_world: int, launcher: str, rendezvous: bool = True) -> str:
    if local_world == world or not rendezvous:
        return "127.0.0.1"  # unused without a rendezvous (MPI)
    raise UsageError(f"{launcher} started ranks on several hosts but MASTER_ADDR is not set; export "
                     "MASTER_ADDR=<first host> (and MASTER_PORT) to every rank, or use --backend mpi")


def _checked(info: RankInfo) -> RankInfo:
    if info.world_size < 1 or not (0 <= info.rank < info.world_size):
        raise UsageError(f"rank {info.rank} is outside a world of {info.world_size} ranks ({info.source} "
                         "environment); check the launcher's variables")
    if not (0 < info.master_port < 65536):
        raise UsageError(f"MASTER_PORT={info.master_port} is not a TCP port")
    return info
