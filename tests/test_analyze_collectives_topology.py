"""Collectives against the topology: published nccl-tests outputs with their system's topology (read in place),
the best algorithm's expectation, the bound it names, which side is short, the assumed topology and its opt-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fabricbench.cli import main

from tests.conftest import _fixtures_root

FIX = (_fixtures_root() or Path("/nonexistent")) / "nccl-tests"
DATA = Path(__file__).parent / "data" / "nccl-tests"


def fixture(name: str) -> str:
    path = FIX / name
    if not path.exists():
        pytest.skip(f"shared fixtures not present ({path})")
    return str(path)


def analyze(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", *args, "--format", "json"])
    out = capsys.readouterr().out
    return exc.value.code, json.loads(out)


B200_2N = "ten-collectives-b200-2node-16gpu-ib-hypercube-failed-orcd.txt"
B200_1N = "ten-collectives-b200x8-single-node-hypercube-failed-orcd.txt"


@pytest.mark.parametrize("name,topology", [
    ("allreduce-gb200-2rack-144gpu-tail-coreweave.txt", "gb200-nvl72"),
    ("alltoall-gb200-2host-hand-condensed-oci.txt", "gb200-nvl72"),
    ("allreduce-a100-40gb-x8-single-node-dgx-galvatron-fixture.txt", "dgx-a100"),
    ("allreduce-h100-64gpu-sharp-mpijob-elided-coreweave.txt", "dgx-h100"),
])
def test_published_healthy_runs_exit_0(capsys, name, topology):
    code, doc = analyze(capsys, fixture(name), "--topology", topology)
    assert code == 0, doc["cluster"]
    rows = [e for e in doc["expected"] if "x" in e["class"]]
    assert rows and all(not e["failed"] for e in rows)
    assert all(e["op"] != "unknown" for e in rows)
    assert any(c["basis"] == "topology" for c in doc["compared"])


def test_published_healthy_nvl72_rack_from_an_issue_thread(capsys):
    code, doc = analyze(capsys, str(DATA / "allreduce-gb200-nvl72-1rack-coreweave-pr43.txt"), "--topology",
                        "gb200-nvl72")
    assert code == 0
    (row,) = [e for e in doc["expected"] if e["class"].startswith("all_reduce x72")]
    assert 0.7 < row["ratio"] < 0.9 and row["algorithm"] == "nvls" and "NVLink" in row["bound"]
    assert any("within its uncertainty" in n for n in doc["notes"])


def test_degraded_multi_node_all_reduce_exits_1_and_names_the_side(capsys):
    """The 2-node B200 run's all_reduce reads 34% of what NVLS between two hosts reaches (bound: the NICs);
    with the single-node run of the same model, the NVLink side is fine: the shortfall is between hosts."""
    code, doc = analyze(capsys, fixture(B200_2N), fixture(B200_1N))
    assert code == 1
    (ar,) = [c for c in doc["cluster"] if c["what"].startswith("all_reduce x16")]
    assert ar["failed"] and ar["bound"] == "the NICs"
    assert "34%" in ar["summary"] and "shortfall is between hosts" in ar["summary"]
    assert "single-host runs on other hosts of this model reach 101%" in ar["summary"]  # its own all_reduce
    assert doc["topology"] == "dgx-b200 (assumed, for collectives)"
    assert "assumed" in ar["summary"]
    assert any(n.startswith("topology dgx-b200 assumed") for n in doc["notes"])
    single = [e for e in doc["expected"] if e["class"].startswith("all_reduce x8")]
    assert single and not single[0]["failed"]


def test_degraded_without_topology_is_never_healthy_and_none_opts_out(capsys):
    code, doc = analyze(capsys, fixture(B200_2N))
    assert code == 1  # dgx-b200 assumed from 'NVIDIA B200', 8 per host
    code, doc = analyze(capsys, fixture(B200_2N), "--topology", "none")
    assert code != 0 and not [c for c in doc["cluster"] if c.get("basis") == "topology"]
    assert any(c["basis"] == "nothing" and c["what"].startswith("collectives") for c in doc["compared"])


def test_a_table_without_any_name_is_still_compared(capsys, tmp_path):
    """The published degraded 2-node table with every name stripped (no binary, no marker, renamed file):
    the op is inferred, compared with the topology, and the run fails."""
    text = Path(fixture(B200_2N)).read_text()
    start = text.index("%%%%%%%%% all_reduce_perf")
    end = text.index("%%%%%%%%% all_gather_perf")
    body = "\n".join(ln for ln in text[start:end].splitlines() if "%%%" not in ln)
    path = tmp_path / "slurm-1234.out"
    path.write_text(body)
    code, doc = analyze(capsys, str(path))
    assert code == 1
    (row,) = [e for e in doc["expected"] if e["class"].startswith("all_reduce x16")]
    assert row["failed"] and row["ratio"] < 0.45


def test_no_topology_and_no_gpu_model_is_inconclusive(capsys):
    code, doc = analyze(capsys, str(DATA / "job-output-bracket-tags-nccl-1453.txt"))
    assert code == 3
    assert any("no topology to compare" in n for n in doc["notes"])
