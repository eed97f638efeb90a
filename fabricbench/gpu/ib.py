"""`fabricbench ib`: per-NIC bandwidth with GPU buffers, one NIC (HCA port) at a time.

Between two nodes (two ranks, one per node, started by srun/torchrun/mpirun): for every NIC port that is
active on both nodes (matched by name: rail to rail), each node starts a fresh worker process (NCCL reads its
variables once per process) with `NCCL_IB_HCA==<dev>:<port>` (exact: a bare `mlx5_1` also selects mlx5_10),
on the GPU that shares the NIC's PCIe switch; the two workers measure both directions with NCCL send/recv
and verify the data with the pattern kernels.

On one node (`--loopback`): two workers on two GPUs of the node, both through the same port, with
`NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1` so NCCL's only way between them is the network. That traffic turns
around inside the adapter: it tests the NIC, its PCIe path and GPUDirect RDMA, never the cable, transceiver
or switch port, and the output says so.

NCCL's own INFO log says what it did (fabricbench/engine/nccl_log.py reads it): the device it used (must be
the one selected), the network (IB, not Socket), and GDRDMA (GPUDirect RDMA) or not (host-staged).
One result row per (node, NIC, peer), row_kind 'nic'.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fabricbench.errors import UsageError
from fabricbench.gpu.sysfs import (Affinity, IbPort, discover_ports, nccl_ib_hca, nearest_gpus, parse_gpu_map,
                                   select_ports)

LOOPBACK_NOTE = ("loopback on one node: the traffic turns around inside the adapter and never leaves it; it "
                 "tests the NIC, its PCIe path and GPUDirect RDMA, not the cable, transceiver or switch port")
NCCL_SUBSYS = "INIT,NET,GRAPH,ENV"


@dataclass
class IbConfig:
    hca: str | None = None
    loopback: bool = False
    size: int = 256 << 20
    iters: int = 20
    warmup: int = 5
    sysfs_root: str = "/sys"
    gpu_map: str | None = None
    timeout: float = 180.0
    out_dir: str = "results/ib"
    run_id: str = ""


@dataclass
class NicPlan:
    port: IbPort
    gpus: list[int]  # one per local worker: [gpu] between nodes, [gpu_a, gpu_b] in loopback
    affinity: list[Affinity]  # of the chosen GPUs
    note: str = ""


@dataclass
class WorkerJob:
    rank: int
    cmd: list[str]
    env: dict[str, str]
    result: Path
    log: Path


@dataclass
class NicOutcome:
    plan: NicPlan
    peer: str
    records: list[dict] = field(default_factory=list)  # worker result files read back
    nccl: list[dict | None] = field(default_factory=list)  # nccl_log summaries per local worker
    error: str | None = None


# -- planning --------------------------------------------------------------------------------------------------
def plan_nics(ports: list[IbPort], gpu_bus_ids: dict[int, str], cfg: IbConfig) -> list[NicPlan]:
    ngpus = len(gpu_bus_ids)
    if cfg.loopback and ngpus < 2:
        raise UsageError(f"--loopback runs two NCCL ranks on two GPUs of this node (NCCL refuses two ranks on one "
                         f"GPU); this node has {ngpus}")
    gmap = parse_gpu_map(cfg.gpu_map, ngpus)
    unknown = sorted(set(gmap) - {p.device for p in ports} - {p.name for p in ports})
    if unknown:
        raise UsageError(f"--gpu-map names {', '.join(unknown)}, which is not an RDMA device of this host")
    plans = []
    for port in ports:
        near = nearest_gpus(cfg.sysfs_root, port, gpu_bus_ids)
        by_gpu = {a.gpu: a for a in near}
        forced = gmap.get(port.name, gmap.get(port.device))
        first = by_gpu[forced] if forced is not None else near[0]
        chosen = [first]
        if cfg.loopback:
            chosen.append(next(a for a in near if a.gpu != first.gpu))
        note = ""
        if forced is None and not first.shares_switch:
            note = (f"no GPU shares {port.device}'s PCIe switch (nearest: GPU {first.gpu}, {first.relation}); "
                    "GPUDirect RDMA may be slow or off")
        plans.append(NicPlan(port, [a.gpu for a in chosen], chosen, note))
    return plans


def worker_env(base: dict[str, str], port: IbPort, loopback: bool, log: Path) -> dict[str, str]:
    """The environment of one worker: exactly this HCA port, NCCL INFO into its own file; in loopback, no
    P2P/SHM so the network is NCCL's only path. The user's own NCCL_ variables are kept, except the ones this
    measurement must own."""
    env = dict(base)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env["NCCL_IB_HCA"] = nccl_ib_hca(port)
    env["NCCL_DEBUG"] = "INFO"
    env["NCCL_DEBUG_SUBSYS"] = NCCL_SUBSYS
    env["NCCL_DEBUG_FILE"] = str(log).replace("%", "%%")
    env.pop("NCCL_IB_DISABLE", None)
    env.pop("NCCL_NET", None)
    if loopback:
        env["NCCL_P2P_DISABLE"] = "1"
        env["NCCL_SHM_DISABLE"] = "1"
        env["NCCL_NVLS_ENABLE"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker_jobs(plan: NicPlan, ranks: list[int], master_addr: str, master_port: int, cfg: IbConfig,
                out_dir: Path, base_env: dict[str, str]) -> list[WorkerJob]:
    jobs = []
    tag = plan.port.name.replace(":", "-")
    for rank, gpu in zip(ranks, plan.gpus):
        log = (out_dir / "logs" / f"ib-{tag}-rank{rank}.log").absolute()
        result = (out_dir / "logs" / f"ib-{tag}-rank{rank}.json").absolute()
        cmd = [sys.executable, "-m", "fabricbench.gpu.ib_worker", "--rank", str(rank), "--world", "2",
               "--master-addr", master_addr, "--master-port", str(master_port), "--gpu", str(gpu),
               "--nic", plan.port.name, "--size", str(cfg.size), "--iters", str(cfg.iters),
               "--warmup", str(cfg.warmup), "--timeout", str(cfg.timeout), "--result", str(result)]
        jobs.append(WorkerJob(rank, cmd, worker_env(base_env, plan.port, cfg.loopback, log), result, log))
    return jobs


def spawn_workers(jobs: list[WorkerJob], timeout: float) -> list[str | None]:
    """Run the workers side by side; kill all of them past `timeout`. Per job: None, or why it failed."""
    procs = []
    for job in jobs:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        for stale in (job.result, job.log):
            stale.unlink(missing_ok=True)
        procs.append(subprocess.Popen(job.cmd, env=job.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))
    deadline = time.monotonic() + timeout
    errors: list[str | None] = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            errors.append(None if proc.returncode == 0 else f"worker exited {proc.returncode}: {_tail(err)}")
        except subprocess.TimeoutExpired:
            for p in procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, 9)
                    except OSError:
                        pass
            proc.communicate()
            errors.append(f"no result after {timeout:.0f} s (worker killed): the NIC or its peer may be down")
    return errors


def _tail(text: str | None) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no message"


# -- NCCL's word on what it did ------------------------------------------------------------------------------------
def nccl_verdict(summary: dict | None, port: IbPort) -> dict:
    """transport, GPUDirect RDMA, and whether NCCL used exactly the selected port, from one worker's log."""
    if not summary:
        return {"transport": None, "gdr": None, "staging": "unknown", "devices": [], "problem":
                "no NCCL INFO log to read: cannot tell whether GPUDirect RDMA or the selected HCA was used"}
    devices = [d.split("/")[0] for d in summary.get("ib_devices") or []]
    gdr = summary.get("gdr")
    transports = {k: v for k, v in (summary.get("transports") or {}).items() if v}
    problem = None
    if transports.get("NET/Socket") or summary.get("net_class") == "Socket":
        problem = "NCCL used TCP sockets (NET/Socket), not the RDMA NIC"
    elif summary.get("ib_no_device"):
        problem = f"NCCL found no IB device ({summary.get('ib_note') or 'NET/IB: no device'})"
    elif devices and devices != [port.name]:
        problem = f"NCCL used {', '.join(devices)} although {port.name} alone was selected"
    elif transports.get("P2P") or transports.get("SHM"):
        problem = "NCCL moved data by P2P/SHM, not through the NIC"
    staging = "gpudirect" if gdr else ("host-staged" if gdr is False else "unknown")
    net = [k for k in transports if k.startswith("NET/") or k == "COLLNET"]
    return {"transport": "+".join(sorted(net)) or summary.get("transport"), "gdr": gdr, "staging": staging,
            "devices": devices, "problem": problem}


# -- result rows ------------------------------------------------------------------------------------------------
def outcome_rows(outcome: NicOutcome, my_rank: int, host: str, cfg: IbConfig, nnodes: int) -> list[dict]:
    """One row per (node, NIC, peer): this node's NIC sending to the peer (between nodes), or the loopback."""
    plan = outcome.plan
    port = plan.port
    record = next((r for r in outcome.records if r.get("ok")), None)
    verdicts = [nccl_verdict(s, port) for s in outcome.nccl] or [nccl_verdict(None, port)]
    verdict = next((v for v in verdicts if v["problem"]), verdicts[0])
    gdr_all = [v["gdr"] for v in verdicts]
    gdr = None if any(g is None for g in gdr_all) else all(gdr_all)
    staging = "gpudirect" if gdr else ("host-staged" if gdr is False else "unknown")
    sender = 0 if cfg.loopback else my_rank
    direction = f"{sender}->{1 - sender}"
    measured = (record or {}).get("directions", {}).get(direction) if record else None
    reverse = (record or {}).get("directions", {}).get(f"{1 - sender}->{sender}") if record else None
    status, error = "ok", None
    if outcome.error or not record:
        status = "failed"
        error = outcome.error or next((r.get("error") for r in outcome.records if r.get("error")), None) \
            or "the worker wrote no result"
    elif measured and measured.get("nwrong"):
        status = "wrong-data"
        error = f"{measured['nwrong']} wrong 32-bit words received through {port.name}"
    elif verdict["problem"]:
        status = "failed"
        error = verdict["problem"]
    notes = [n for n in (plan.note, LOOPBACK_NOTE if cfg.loopback else "",
                         "host-staged: NCCL did not report GDRDMA" if staging == "host-staged" else "") if n]
    return [{
        "run_id": cfg.run_id, "row_kind": "nic", "op": "ib_sendrecv", "kind": "ib_loopback" if cfg.loopback else "ib_pair",
        "backend": "nccl", "device": "cuda", "nranks": 2, "nnodes": nnodes, "size_bytes": cfg.size,
        "iters": cfg.iters, "warmup": cfg.warmup, "time_us": measured.get("time_us") if measured else None,
        "algbw_gbps": measured.get("gbps") if measured else None, "gbps": measured.get("gbps") if measured else None,
        "nwrong": measured.get("nwrong") if measured else None, "check_iters": 1 if measured else 0,
        "host": host, "rank": my_rank, "gpu": plan.gpus[0], "nic": port.name, "peer": outcome.peer,
        "transport": verdict["transport"], "status": status, "error": error,
        "direction": "loopback" if cfg.loopback else "out",
        # extra columns
        "gbps_reverse": reverse.get("gbps") if reverse else None, "gdr": gdr, "staging": staging,
        "nic_rate_gbps": port.rate_gbps, "nic_line_GBps": port.rate_gbps / 8 if port.rate_gbps else None,
        "link_layer": port.link_layer, "gpu_relation": plan.affinity[0].relation if plan.affinity else None,
        "nccl_ib_hca": nccl_ib_hca(port), "nccl_devices": ",".join(verdict["devices"]) or None,
        "note": "; ".join(notes) or None,
    }]


def down_port_row(port: IbPort, host: str, cfg: IbConfig, peer: str, why: str) -> dict:
    return {"run_id": cfg.run_id, "row_kind": "nic", "op": "ib_sendrecv",
            "kind": "ib_loopback" if cfg.loopback else "ib_pair", "backend": "nccl", "device": "cuda",
            "host": host, "nic": port.name, "peer": peer, "status": "failed", "error": why,
            "size_bytes": cfg.size, "nic_rate_gbps": port.rate_gbps, "link_layer": port.link_layer,
            "nccl_ib_hca": nccl_ib_hca(port), "direction": "loopback" if cfg.loopback else "out"}


# -- the runs ------------------------------------------------------------------------------------------------------
class Coordinator:
    """How the ib command's own processes (one per node) agree; a single node needs none."""

    rank = 0
    world = 1
    master_addr = "127.0.0.1"
    master_port = 29600

    def allgather(self, obj):
        return [obj]

    def close(self) -> None:
        pass


class TorchCoordinator(Coordinator):
    """The ranks of a launcher (srun, torchrun, mpirun): a gloo group on MASTER_ADDR:MASTER_PORT; the
    workers use the ports after it, one per NIC."""

    def __init__(self, info, timeout: float) -> None:
        from datetime import timedelta

        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = info.rank, info.world_size
        self.master_addr, self.master_port = info.master_addr, info.master_port
        dist.init_process_group("gloo", init_method=f"tcp://{info.master_addr}:{info.master_port}",
                                rank=info.rank, world_size=info.world_size, timeout=timedelta(seconds=timeout))

    def allgather(self, obj):
        out = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        self.dist.destroy_process_group()


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_ib(gpu_bus_ids: dict[int, str], cfg: IbConfig, coord: Coordinator, host: str,
           spawn: Callable[[list[WorkerJob], float], list[str | None]] = spawn_workers,
           progress: Callable[[str], None] | None = None, base_env: dict[str, str] | None = None) -> list[dict]:
    """Measure every selected NIC port; returns this node's rows (the caller gathers them)."""
    from fabricbench.engine import nccl_log

    say = progress or (lambda _line: None)
    base_env = dict(os.environ if base_env is None else base_env)
    ports = discover_ports(cfg.sysfs_root)
    if not ports:
        raise UsageError(f"no RDMA devices under {cfg.sysfs_root}/class/infiniband: this host has no InfiniBand/"
                         "RoCE NIC visible (driver not loaded, or not an RDMA host)")
    ports = select_ports(ports, cfg.hca)
    if not gpu_bus_ids:
        raise UsageError("no CUDA GPU visible: fabricbench ib measures with GPU buffers")
    plans = plan_nics(ports, gpu_bus_ids, cfg)
    out_dir = Path(cfg.out_dir)
    rows: list[dict] = []
    if cfg.loopback:
        peer = "loopback"
        active = {p.port.name for p in plans if p.port.active}
    else:
        views = coord.allgather({"host": host, "active": [p.port.name for p in plans if p.port.active]})
        if coord.world != 2:
            raise UsageError(f"fabricbench ib between nodes runs as exactly 2 ranks, one per node (e.g. srun -N2 "
                             f"--ntasks-per-node=1 fabricbench ib); this launch has {coord.world}. On one node: "
                             "--loopback")
        if views[0]["host"] == views[1]["host"]:
            raise UsageError(f"both ranks run on {host}: between-node mode needs one rank per node; on one node use "
                             "--loopback")
        peer = views[1 - coord.rank]["host"]
        active = set(views[0]["active"]) & set(views[1]["active"])
    say(f"# NICs on {host}: " + ", ".join(f"{p.port.name} ({p.port.state}, {p.port.rate or '?'}) -> GPU "
                                          f"{p.gpus[0]} [{p.affinity[0].relation}]" for p in plans))
    if cfg.loopback:
        say(f"# {LOOPBACK_NOTE}")
    for k, plan in enumerate(plans):
        port = plan.port
        if port.name not in active:
            why = (f"port {port.name} is {port.state} ({port.phys_state or 'phys state unknown'})" if not port.active
                   else f"port {port.name} is not active on the peer {peer}")
            rows.append(down_port_row(port, host, cfg, peer, why))
            say(f"{port.name}: not measured: {why}")
            continue
        ranks = [0, 1] if cfg.loopback else [coord.rank]
        jobs = worker_jobs(plan, ranks, "127.0.0.1" if cfg.loopback else coord.master_addr,
                           coord.master_port + 1 + k, cfg, out_dir, base_env)
        errors = spawn(jobs, cfg.timeout)
        outcome = NicOutcome(plan, peer)
        outcome.records = [r for r in (read_record(j.result) for j in jobs) if r is not None]
        outcome.nccl = [nccl_log.parse_file(j.log) for j in jobs]
        bad = [e for e in errors if e]
        if bad:
            outcome.error = next((r.get("error") for r in outcome.records if r.get("error")), None) or bad[0]
        new = outcome_rows(outcome, coord.rank, host, cfg, 1 if cfg.loopback else 2)
        rows += new
        for row in new:
            say(format_row(row))
    return rows


def format_row(row: dict) -> str:
    gbps = f"{row['gbps']:.2f} GB/s" if row.get("gbps") is not None else "-"
    rev = f" (reverse {row['gbps_reverse']:.2f})" if row.get("gbps_reverse") is not None else ""
    line = row.get("nic_line_GBps")
    pct = f", {100 * row['gbps'] / line:.0f}% of {line:.0f} GB/s line" if line and row.get("gbps") else ""
    tail = f"  [{row['status']}: {row['error']}]" if row.get("status") != "ok" else ""
    return (f"{row['host']} {row['nic']} -> {row['peer']}: {gbps}{rev}{pct}, GPU {row.get('gpu')}, "
            f"{row.get('staging') or 'unknown'}, transport {row.get('transport') or '?'}{tail}")
