"""Knob spaces and version gating; the NCCL tuner CSV and Open MPI rules writers against the documented formats
(NCCL plugins/tuner/example README and plugin.c; Open MPI 4.1 coll_tuned_dynamic_file.c / _dynamic_rules.c)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fabricbench.errors import UsageError
from fabricbench.tune import knobs, nccl_conf, ompi_rules
from fabricbench.tune.outputs import Decision, nccl_rules_for, ompi_rules_for, ranges, read_env_file, tuning_env
from fabricbench.tune.space import build_space


# -- knobs --------------------------------------------------------------------------------------------------------
def test_channel_knobs_follow_the_nccl_version():
    old = {k.name for k in knobs.nccl_knobs("2.16.2")}
    new = {k.name for k in knobs.nccl_knobs("2.21.5-1")}
    assert {"MIN_NCHANNELS", "MAX_NCHANNELS"} <= old and not {"MIN_CTAS", "MAX_CTAS"} & old
    assert {"MIN_CTAS", "MAX_CTAS"} <= new and not {"MIN_NCHANNELS", "MAX_NCHANNELS"} & new
    assert "IB_SPLIT_DATA_ON_QPS" not in {k.name for k in knobs.nccl_knobs("2.17.1")}  # read from 2.18
    assert "P2P_NET_CHUNKSIZE" not in {k.name for k in knobs.nccl_knobs("2.13.4")}  # read from 2.14
    assert "pat" not in knobs.nccl_algos("all_gather", "2.22.3") and "pat" in knobs.nccl_algos("all_gather", "2.23.4")


def test_only_cross_nic_is_not_debug_only():
    assert [k.name for k in knobs.NCCL_KNOBS if not k.debug_only] == ["CROSS_NIC"]
    names = {k.name for k in knobs.NCCL_KNOBS}
    assert {"BUFFSIZE", "NTHREADS", "IB_QPS_PER_CONNECTION", "IB_SPLIT_DATA_ON_QPS", "P2P_NET_CHUNKSIZE",
            "NET_GDR_LEVEL", "CROSS_NIC", "NVLS_ENABLE", "MIN_CTAS", "MAX_CTAS"} <= names


def test_ompi_space_uses_the_mca_names_and_skips_two_proc_on_four_ranks():
    space = build_space("mpi", "all_reduce", 4, None)
    names = [c.name for c in space.implementations]
    assert names == ["default", "allreduce=basic_linear", "allreduce=nonoverlapping", "allreduce=recursive_doubling",
                     "allreduce=ring", "allreduce=segmented_ring", "allreduce=rabenseifner"]
    ring = space.implementations[4].env_dict
    assert ring == {"OMPI_MCA_coll_tuned_use_dynamic_rules": "1", "OMPI_MCA_coll_tuned_allreduce_algorithm": "4"}
    assert list(space.axes) == ["allreduce=segmented_ring"]
    ag4 = [c.name for c in build_space("mpi", "all_gather", 4, None).implementations]
    ag2 = [c.name for c in build_space("mpi", "all_gather", 2, None).implementations]
    assert "allgather=two_proc" not in ag4 and "allgather=two_proc" in ag2
    rs = build_space("mpi", "reduce_scatter", 4, None).implementations[1].env_dict
    assert "OMPI_MCA_coll_tuned_reduce_scatter_block_algorithm" in rs  # the backend calls Reduce_scatter_block


def test_mca_names_match_ompi_info_when_installed():
    import shutil
    import subprocess

    if not shutil.which("ompi_info"):
        pytest.skip("ompi_info not installed (apt-get install openmpi-bin)")
    text = subprocess.run(["ompi_info", "--param", "coll", "tuned", "--level", "9"], capture_output=True,
                          text=True, timeout=60).stdout
    for coll in knobs.OMPI_COLLS.values():
        assert f'"coll_tuned_{coll.stem}_algorithm"' in text
        for number, name in coll.algorithms.items():
            assert f'{number}:"{name}"' in text, (coll.stem, number, name)
    assert '"coll_tuned_use_dynamic_rules"' in text and '"coll_tuned_dynamic_rules_filename"' in text


def test_gloo_has_nothing_to_tune():
    with pytest.raises(UsageError, match="gloo has nothing to tune"):
        build_space("gloo", "all_reduce", 2, None)
    nccl = build_space("nccl", "all_reduce", 8, "2.21.5")
    assert nccl.implementations[1].env_dict == {"NCCL_ALGO": "Ring", "NCCL_PROTO": "LL"}
    assert "NCCL_CROSS_NIC=1" in [c.name for c in nccl.implementations]


# -- NCCL tuner CSV -----------------------------------------------------------------------------------------------
NCCL_EXAMPLE = """# comment
allreduce,0,65536,tree,simple,2,1,-1,-1,1

allreduce,65537,1048576,ring,simple,4,4,32,1,0
allreduce,1048577,4294967295,ring,ll128,-1,-1,-1,4,-1
broadcast,0,32768,tree,simple,-1,1,-1
allgather,0,4294967295,ring,simple,4,2,-1
"""  # lines from NCCL's plugins/tuner/example/nccl_tuner.conf (8, 9 and 10 fields)


def test_tuner_csv_reads_nccl_example_lines_with_8_to_10_fields():
    rules = nccl_conf.parse(NCCL_EXAMPLE)
    assert len(rules) == 5
    assert rules[3] == nccl_conf.TunerRule("broadcast", 0, 32768, "tree", "simple", -1, 1, -1, -1, -1)
    assert nccl_conf.first_match(rules, "allreduce", 100, nnodes=1, nranks=8, reg_buff=1).algorithm == "tree"
    assert nccl_conf.first_match(rules, "allreduce", 100, nnodes=1, nranks=8, reg_buff=0) is None  # regBuff=1 only
    assert nccl_conf.first_match(rules, "allreduce", 2 << 20, 4, 32, num_pipe_ops=4).protocol == "ll128"
    assert nccl_conf.first_match(rules, "allgather", 10, nnodes=1, nranks=8) is None  # nNodes=2 only


def test_tuner_csv_writer_round_trips_and_first_match_wins():
    rules = [nccl_conf.TunerRule("allreduce", 0, 65535, "tree", "ll", 4, 2, 16, comment="why"),
             nccl_conf.TunerRule("allreduce", 0, nccl_conf.MAX_BYTES, "ring", "simple", -1, -1, -1)]
    text = nccl_conf.render(rules, ["header"])
    data = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert all(len(ln.split(",")) == 10 for ln in data)
    assert "# collective_type,min_bytes,max_bytes,algorithm,protocol,channels,nNodes,nRanks,numPipeOps,regBuff" in text
    assert nccl_conf.parse(text) == [nccl_conf.TunerRule(**{**r.__dict__, "comment": ""}) for r in rules]
    assert nccl_conf.first_match(rules, "allreduce", 1000, 2, 16).algorithm == "tree"  # both match: first wins
    assert nccl_conf.first_match(rules, "allreduce", 1000, 1, 8).algorithm == "ring"  # wildcard row
    with pytest.raises(UsageError):
        nccl_conf.TunerRule("alltoall", 0, 1, "ring", "simple")


def test_nccl_rules_from_decisions_cover_contiguous_ranges():
    ds = [Decision("all_reduce", 1024, "tree/ll", {"algo": "tree", "proto": "ll"}, "tree/ll"),
          Decision("all_reduce", 65536, "tree/ll", {"algo": "tree", "proto": "ll"}, "tree/ll"),
          Decision("all_reduce", 1 << 20, "default", {}, "default"),
          Decision("all_reduce", 16 << 20, "ring/simple,channels=16", {"algo": "ring", "proto": "simple", "channels": 16}, "ring/simple")]
    rules = nccl_rules_for(ds, nnodes=2, nranks=16)
    assert [(r.min_bytes, r.max_bytes, r.algorithm, r.channels) for r in rules] == [
        (0, (1 << 20) - 1, "tree", -1), (16 << 20, nccl_conf.MAX_BYTES, "ring", 16)]
    assert all((r.nnodes, r.nranks) == (2, 16) for r in rules)
    ds[3].kept = False  # not significant: the default stays
    assert len(nccl_rules_for(ds, 2, 16)) == 1


# -- Open MPI rules -----------------------------------------------------------------------------------------------
def test_ompi_rules_render_parse_and_lookup_like_open_mpi():
    rules = {2: {4: [ompi_rules.MsgRule(0, 3), ompi_rules.MsgRule(65536, 6), ompi_rules.MsgRule(1 << 20, 5, 0, 32768)],
                 16: [ompi_rules.MsgRule(0, 4)]},
             0: {4: [ompi_rules.MsgRule(0, 2)]}}
    text = ompi_rules.render(rules, {2: "allreduce", 0: "allgather"}, ["header # with a hash"])
    assert ompi_rules.parse(text) == rules
    numbers = [int(t) for line in text.splitlines() for t in line.split("#")[0].split()]
    assert numbers[:2] == [2, 0]  # 2 collectives, in increasing id order: allgather (0) first
    look = ompi_rules.lookup
    assert look(rules, 2, 4, 0).algorithm == 3 and look(rules, 2, 4, 65535).algorithm == 3
    assert look(rules, 2, 4, 65536).algorithm == 6  # last entry <= the message size
    assert look(rules, 2, 4, 10 << 20) == ompi_rules.MsgRule(1 << 20, 5, 0, 32768)
    assert look(rules, 2, 8, 10).algorithm == 3  # comm size 8: the entry for 4 (last <= 8)
    assert look(rules, 2, 2, 10).algorithm == 3  # smaller than every entry: the first
    assert look(rules, 2, 64, 10).algorithm == 4
    assert look(rules, 7, 4, 10) is None  # no rule for bcast


def test_ompi_rules_refuse_what_open_mpi_refuses():
    with pytest.raises(ValueError, match="must be 0"):
        ompi_rules.render({2: {4: [ompi_rules.MsgRule(1024, 3)]}})
    with pytest.raises(UsageError, match="ends early"):
        ompi_rules.parse("1\n2 1\n4 2\n0 3 0 0\n")
    with pytest.raises(UsageError, match="first message size"):
        ompi_rules.parse("1 2 1 4 1 8 3 0 0")


def test_rules_from_decisions_keep_the_default_where_no_gain_held():
    ds = [Decision("all_reduce", 1024, "allreduce=recursive_doubling", {"algorithm": 3, "segsize": 0}, "g"),
          Decision("all_reduce", 16384, "allreduce=recursive_doubling", {"algorithm": 3, "segsize": 0}, "g"),
          Decision("all_reduce", 262144, "default", {"algorithm": 0}, "default"),
          Decision("all_reduce", 4 << 20, "allreduce=segmented_ring,segsize=32768", {"algorithm": 5, "segsize": 32768}, "g2")]
    rules = ompi_rules_for(ds, nranks=4)
    assert rules == {2: {4: [ompi_rules.MsgRule(0, 3), ompi_rules.MsgRule(262144, 0), ompi_rules.MsgRule(4 << 20, 5, 0, 32768)]}}
    for d in ds:
        d.kept = d.size_bytes == 1024
    assert ompi_rules_for(ds, 4) == {2: {4: [ompi_rules.MsgRule(0, 3), ompi_rules.MsgRule(16384, 0)]}}
    for d in ds:
        d.kept = False
    assert ompi_rules_for(ds, 4) == {}  # nothing held: no rules at all
    assert [(lo, d.size_bytes) for lo, _hi, d in ranges(ds, use_effective=False)] == [(0, 1024), (262144, 262144), (4 << 20, 4 << 20)]
    assert math.isnan(ds[0].default_us)


def test_tuning_env_reads_a_directory(tmp_path: Path):
    with pytest.raises(UsageError, match="not a tuning directory"):
        tuning_env(tmp_path)
    (tmp_path / "tuning.json").write_text("{}")
    (tmp_path / "ompi-coll-rules.conf").write_text("0\n")
    (tmp_path / "ompi-mca.env").write_text("# c\nOMPI_MCA_coll_tuned_use_dynamic_rules=1\n"
                                           "OMPI_MCA_coll_tuned_dynamic_rules_filename=/moved/away/ompi-coll-rules.conf\n")
    (tmp_path / "nccl.env").write_text("# reason\nNCCL_CROSS_NIC=1\n")
    env = tuning_env(tmp_path)
    assert env["NCCL_CROSS_NIC"] == "1" and env["OMPI_MCA_coll_tuned_use_dynamic_rules"] == "1"
    assert env["OMPI_MCA_coll_tuned_dynamic_rules_filename"] == str((tmp_path / "ompi-coll-rules.conf").resolve())
    assert read_env_file(tmp_path / "nccl.env") == {"NCCL_CROSS_NIC": "1"}


def test_tune_submit_script_quotes_everything_and_refuses_mixed_launchers(tmp_path):
    from tests.conftest import run_cli

    out = tmp_path / "a b$(touch x)"
    proc = run_cli("tune", "all_reduce", "--backend", "mpi", "--submit", "--nodes", "2", "-p", "debug", "-b", "1K",
                   "-e", "4K", "--only", "allreduce=ring", "--no-resources", "--budget", "8m", "--out", str(out),
                   "--dry-run")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert "#SBATCH --nodes=2" in script and "#SBATCH --partition=debug" in script and "#SBATCH --time=15" in script
    assert f"OUT='{out}'" in script and "--no-resources" in script and "--only allreduce=ring" in script
    assert "--launcher 'srun --kill-on-bad-exit=1 --ntasks-per-node=1 --mpi=pmix'" in script
    assert not (tmp_path / "x").exists() and not out.exists()  # dry run: nothing written, nothing ran
    bad = run_cli("tune", "--backend", "mpi", "--submit", "--nodes", "2", "--nprocs", "2", "--dry-run")
    assert bad.returncode == 2 and "drop --launcher/--nprocs" in bad.stderr
    bad = run_cli("tune", "--backend", "mpi", "--nodes", "2")
    assert bad.returncode == 2 and "--nodes: Slurm options of --submit" in bad.stderr
    bad = run_cli("tune", "--backend", "mpi", "--submit", "--nodes", "2", "-p", "bad;name", "--dry-run")
    assert bad.returncode == 2 and "--partition" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("tune", "--backend", "mpi", "--submit", "--dry-run")
    assert bad.returncode == 2 and "--submit needs --nodes N" in bad.stderr
