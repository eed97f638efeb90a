"""NIC measurements (ib_write_bw, nic rows) and collectives as group tests."""

from __future__ import annotations

from pathlib import Path

from fabricbench.analyze.analysis import analyze
from fabricbench.analyze.importers import load_all
from fabricbench.results import write_results

DATA = Path(__file__).parent / "data"


def test_ib_write_bw_files_one_slow_nic(tmp_path):
    sample = (DATA / "analyze-ib_write_bw-gpu07.txt").read_text()
    files = []
    for i in range(6):
        text = sample if i != 4 else sample.replace("391.80", "250.10").replace("392.70", "251.00")
        f = tmp_path / f"gpu{i:02d}.txt"
        f.write_text(text)
        files.append(str(f))
    res = analyze(load_all(files))
    got = [(v.kind, v.component) for v in res.faults()]
    assert got == [("nic", "gpu04:mlx5_3")]
    assert res.faults()[0].identifiers == {"host": "gpu04", "nic": "mlx5_3"}


def test_nic_rows_node_by_rail(tmp_path):
    rows = []
    for h in range(8):
        for r in range(4):
            bw = 48.0 * (1 + 0.003 * ((h * 7 + r * 3) % 5 - 2))
            if (h, r) == (2, 1):
                bw *= 0.6
            rows.append(dict(row_kind="nic", host=f"n{h}", nic=f"mlx5_{r}", peer="loopback", size_bytes=1 << 30,
                             gbps=bw, status="ok"))
    rows.append(dict(row_kind="nic", host="n7", nic="mlx5_9", peer="loopback", size_bytes=1 << 30, status="failed",
                     error="port down"))
    out = tmp_path / "nics"
    write_results(out, rows, {"hosts": [f"n{h}" for h in range(8)]})
    res = analyze(load_all([str(out)]))
    got = {(v.kind, v.component) for v in res.faults()}
    assert ("nic", "n2:mlx5_1") in got and ("nic", "n7:mlx5_9") in got
    assert len(got) == 2
    assert res.rail_matrix["rails"] == ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"]


def test_collectives_as_group_tests(tmp_path):
    groups = []
    hosts = [f"h{i}" for i in range(8)]
    for k in range(8):
        members = [hosts[k], hosts[(k + 1) % 8]]
        slow = "h5" in members
        out = tmp_path / f"g{k}"
        write_results(out, [dict(row_kind="op", op="all_reduce", nranks=16, size_bytes=1 << 30,
                                 busbw_gbps=300.0 * (0.6 if slow else 1.0) * (1 + 0.002 * k), nwrong=0, status="ok")],
                      {"hosts": members})
        groups.append(str(out))
    res = analyze(load_all(groups))
    suspects = [v.component for v in res.verdicts if v.basis == "group"]
    assert suspects == ["h5"]
    assert res.verdicts[0].confidence < 0.9  # one group result cannot say which member was slow


def test_gpu_verdict_names_pci_address(fixtures_dir):
    import re

    from fabricbench.analyze.importers.nvbandwidth import parse_text

    text = (fixtures_dir / "nvbandwidth" / "gb200-2node-multinode-d2d-read-ce-v0.7-nvidia-dra-docs.txt").read_text()
    lines = text.splitlines()
    out = []
    in_matrix = False
    for line in lines:
        if "GPU(row) -> GPU(column)" in line:
            in_matrix = True
        elif in_matrix and re.match(r"\s+\d\s+", line) and "N/A" in line:
            toks = line.split()
            row = int(toks[0])
            vals = toks[1:]
            # process 1 = worker-0 device 1: its row and its column at 60%
            vals = [v if v == "N/A" or (row != 1 and i != 1) else f"{float(v) * 0.6:.2f}" for i, v in enumerate(vals)]
            line = "      " + " ".join([str(row)] + vals)
        out.append(line)
    res = analyze(parse_text("\n".join(out), "mn.txt"))
    gpu = [v for v in res.faults() if v.kind == "gpu"]
    assert [v.component for v in gpu] == ["nvbandwidth-test-worker-0:GPU1"]
    assert gpu[0].identifiers["pci"] == "00000009:01:00" and gpu[0].identifiers["name"] == "HGX GB200"


def test_collectives_against_topology_expectation(fixtures_dir):
    from fabricbench.analyze.topo_adapter import load_fabric

    topo = Path(__file__).resolve().parents[1] / "topologies" / "dgx-b200.yaml"  # shipped: must exist
    fab = load_fabric(str(topo))
    assert fab.topo is not None, "fabricbench.topology must read the shipped dgx-b200 topology"
    res = analyze(load_all([str(fixtures_dir / "nccl-tests" / "ten-collectives-b200-2node-16gpu-ib-hypercube-failed-orcd.txt")]), fab)
    rows = {e["class"]: e for e in res.expected}
    assert rows["all_gather x16 (2 hosts)"]["expected_gbps"] > 0 and not rows["all_gather x16 (2 hosts)"]["failed"]
    assert rows["all_reduce x16 (2 hosts)"]["failed"]  # 240 GB/s measured: well under the NIC-bound ring
    assert any("all_reduce" in c["summary"] for c in res.cluster)
    assert res.exit_code == 1
