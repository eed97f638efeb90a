"""`submit` with a hung rank on the lab's real Slurm: the report names the hung rank (from the ranks'
heartbeats in <out>/.progress), not the peer that gave up waiting for it."""

from __future__ import annotations

import pytest

from lab_fixture import lab, lab_config  # noqa: F401  (fixtures)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab_config():
    return {"nodes": 4, "leaves": 1, "link_rate": "400mbit"}


def test_hung_rank_is_named(lab, tmp_path):
    out = tmp_path / "hung"
    res = lab.fabricbench("submit", "all_reduce", "--nodes", "4", "-b", "1M", "-e", "1M", "-n", "5", "-w", "2",
                          "--backend", "gloo", "--timeout", "15", "--poll", "0.3", "--out", str(out),
                          "--env", "FABRICBENCH_INJECT=hang@2:after=3", timeout=240)
    assert res.returncode == 1, res.stdout + res.stderr
    text = res.stdout + res.stderr
    assert "stuck: rank 2 on lab" in text, text  # the hung rank and its node, not the peer that gave up
    assert "Traceback" not in res.stderr
