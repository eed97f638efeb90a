"""Rank discovery from torchrun, Slurm steps, Open MPI, MPICH/Hydra and PMIx environments."""

import pytest

from fabricbench.engine.ranks import discover, in_external_launcher, slurm_step_port
from fabricbench.errors import UsageError


def test_torchrun_variables():
    info = discover({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                     "MASTER_ADDR": "node7", "MASTER_PORT": "29511"})
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (3, 8, 1, 4)
    assert (info.master_addr, info.master_port, info.source) == ("node7", 29511, "torchrun")


def test_slurm_step_uses_the_steps_view():
    env = {"SLURM_JOB_ID": "1234", "SLURM_STEP_ID": "5", "SLURM_PROCID": "2", "SLURM_LOCALID": "0",
           "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "4", "SLURM_JOB_NODELIST": "gpu[01-08]",
           "SLURM_STEP_NODELIST": "gpu[05-06]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_NODEID": "1"}
    info = discover(env)
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (2, 4, 0, 2)
    assert info.master_addr == "gpu05"  # the first host of the step, not of the allocation
    assert info.master_port == slurm_step_port(1234, 5)
    assert info.source == "slurm"


def test_each_step_gets_its_own_port():
    assert slurm_step_port(1234, 5) != slurm_step_port(1234, 6)
    assert all(20000 <= slurm_step_port(j, s) < 60000 for j in (1, 99999, 10**7) for s in range(0, 50))


def test_torchrun_inside_srun_wins():
    env = {"SLURM_JOB_ID": "9", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
           "SLURM_STEP_NODELIST": "a,b", "RANK": "5", "WORLD_SIZE": "8", "MASTER_ADDR": "a"}
    info = discover(env)
    assert (info.rank, info.world_size, info.source) == (5, 8, "torchrun")


def test_open_mpi_wins_over_the_slurm_step_of_its_daemons():
    env = {"SLURM_JOB_ID": "9", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2",
           "OMPI_COMM_WORLD_RANK": "6", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "2",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "PMIX_RANK": "6", "MASTER_ADDR": "head"}
    info = discover(env)
    assert (info.rank, info.world_size, info.local_rank, info.source) == (6, 8, 2, "mpi-ompi")


def test_mpich_hydra():
    info = discover({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"})
    assert (info.rank, info.world_size, info.local_rank, info.source) == (1, 2, 1, "mpi-pmi")
    assert info.master_addr == "127.0.0.1"


def test_srun_with_pmix_sets_no_ompi_variables():
    env = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "1", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
           "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "n[1-2]", "PMIX_RANK": "3"}
    info = discover(env)
    assert (info.rank, info.world_size, info.source) == (3, 4, "slurm")


def test_multi_host_mpirun_needs_master_addr():
    with pytest.raises(UsageError, match="MASTER_ADDR"):
        discover({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})


@pytest.mark.parametrize("step", [None, "batch", "4294967294"])
def test_batch_or_salloc_shell_outside_a_step_is_refused(step):
    env = {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "n[1-2]"}
    if step:
        env.update(SLURM_STEP_ID=step, SLURM_PROCID="0")
    assert not in_external_launcher(env)
    with pytest.raises(UsageError, match="not in a job step.*srun"):
        discover(env)


def test_plain_process_is_a_single_rank():
    info = discover({})
    assert (info.rank, info.world_size, info.source) == (0, 1, "single")


@pytest.mark.parametrize("env,match", [
    ({"RANK": "4", "WORLD_SIZE": "4"}, "outside a world"),
    ({"RANK": "x", "WORLD_SIZE": "4"}, "not an integer"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "70000"}, "not a TCP port"),
])
def test_broken_launcher_environment(env, match):
    with pytest.raises(UsageError, match=match):
        discover(env)
