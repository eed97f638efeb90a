"""`fabricbench nvlink`, `fabricbench ib`, `fabricbench selftest --gpu`: parse, validate, call the library.
Heavy imports (CuPy, torch) stay inside the commands."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import typer

from fabricbench.errors import UsageError


def _out_dir(out: str | None, run_id: str) -> Path:
    from fabricbench.run_cli import _check_writable_dir

    path = Path(out) if out else Path("results") / run_id
    _check_writable_dir(path, "--out")
    return path


def _size(text: str, option: str) -> int:
    from fabricbench.engine.sizes import parse_size

    return parse_size(text, option)


def _say(quiet: bool):
    return (lambda _line: None) if quiet else (lambda line: typer.echo(line))


def _run_info(command: str, run_id: str, api, extra: dict) -> dict:
    from datetime import datetime, timezone

    devices, versions = [], {}
    if api is not None:
        try:  # after a sticky CUDA error (the reason a matrix stopped) these calls fail too: keep the results
            devices = [api.device_info(i).__dict__ for i in range(api.device_count())]
            versions = api.versions()
        except Exception as err:  # noqa: BLE001
            versions = {"error": " ".join(str(err).split())[:200]}
    return {"run_id": run_id, "command": command, "command_line": ["fabricbench", *sys.argv[1:]],
            "host": socket.gethostname(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "fake_gpu_interface": bool(api is not None and api.fake), "devices": devices,
            "versions": versions,
            "nccl_env": {k: v for k, v in os.environ.items() if k.startswith("NCCL_")}, **extra}


def register(app: typer.Typer) -> None:
    @app.command("nvlink")
    def nvlink_cmd(
        kinds: str = typer.Option("all", "--kinds", help="Comma list of sm_read, sm_write, sm_bidir, ce_read, "
                                  "ce_write, ce_bidir, latency (default all)."),
        gpus: str = typer.Option(None, "--gpus", help="GPU indices to pair, e.g. 0,1,2 [default: all].",
                                 show_default=False),
        size: str = typer.Option("256M", "--size", "-s", help="Bytes per copy per direction (K/M/G = 1024-based)."),
        loops: int = typer.Option(16, "--loops", help="Copies per sample (inside one SM launch, or queued copies)."),
        samples: int = typer.Option(3, "--samples", "-n", help="Timed, verified samples per cell (median kept)."),
        warmup: int = typer.Option(1, "--warmup", "-w", help="Untimed warm-up samples per cell."),
        blocks_per_sm: int = typer.Option(2, "--blocks-per-sm", help="SM copy grid: blocks of 512 threads per SM."),
        latency_hops: int = typer.Option(100_000, "--latency-hops", help="Dependent loads per latency sample."),
        out: str = typer.Option(None, "--out", help="Results directory [default: results/<run-id>].",
                                show_default=False),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print no matrices (files are still written)."),
    ) -> None:
        """GPU x GPU bandwidth (SM kernels and copy engines, read/write, uni/bidirectional) and latency
        matrices, every transfer verified. Labels as nvbandwidth; GB/s of bytes copied."""
        from fabricbench.gpu import nvlink
        from fabricbench.gpu.api import get_api
        from fabricbench.results.io import write_results
        from fabricbench.run_cli import new_run_id

        cfg = nvlink.NvlinkConfig(kinds=nvlink.parse_kinds(kinds), size=_size(size, "--size"), loops=loops,
                                  samples=samples, warmup=warmup, blocks_per_sm=blocks_per_sm,
                                  latency_hops=latency_hops)
        if latency_hops < 1:
            raise UsageError(f"--latency-hops must be at least 1, got {latency_hops}")
        api = get_api()
        try:
            if gpus is not None:
                cfg.gpus = nvlink.parse_gpus(gpus, api.device_count())
            nvlink.check_config(api, cfg)
            run_id = new_run_id()
            out_dir = _out_dir(out, run_id)
            say = _say(quiet)
            names = {g: api.device_info(g).name for g in range(api.device_count())}  # before: a failure may stick
            used, cells = nvlink.run_matrix(api, cfg, progress=None)
            for k in cfg.kinds:
                say(nvlink.format_matrix(cells, k, used, api.fake))
                say("")
            summary = nvlink.verify_summary(cells)
            say(summary)
            rows = nvlink.cell_rows(cells, run_id, socket.gethostname(), names, api.fake)
            write_results(out_dir, rows, _run_info("nvlink", run_id, api, {
                "config": cfg.__dict__, "conventions": {"bandwidth": nvlink.BYTE_CONVENTION,
                                                        "labels": {k: nvlink.KINDS[k].label + "; " + nvlink.KINDS[k].flow
                                                                   for k in cfg.kinds}}}))
            say(f"results in {out_dir}")
        finally:
            api.close()
        wrong = [c for c in cells if c.status == "wrong-data"]
        failed = [c for c in cells if c.status == "failed"]
        if wrong or failed:
            if quiet:
                typer.echo(summary, err=True)
            raise typer.Exit(1)

    @app.command("selftest")
    def selftest_cmd(
        gpu: bool = typer.Option(False, "--gpu", help="Run the GPU self-test (the only suite so far)."),
        size: str = typer.Option("1G", "--size", "-s", help="Local copy buffer size."),
        loops: int = typer.Option(8, "--loops", help="Copies per local-copy sample."),
        samples: int = typer.Option(5, "--samples", "-n", help="Samples per local-copy measurement."),
        pair_size: str = typer.Option("256M", "--pair-size", help="Buffer size of the pair tests (2+ GPUs)."),
        out: str = typer.Option("results/reference", "--out", help="Where <gpu-model>.json is written."),
    ) -> None:
        """Prove the GPU kernels and the measuring method on this machine's GPUs; write a reference file."""
        from fabricbench.gpu import selftest
        from fabricbench.gpu.api import get_api

        if not gpu:
            raise UsageError("selftest: say what to test; --gpu runs every GPU kernel on this machine's GPUs")
        cfg = selftest.SelftestConfig(size=_size(size, "--size"), loops=loops, samples=samples,
                                      pair_size=_size(pair_size, "--pair-size"))
        for value, option in ((loops, "--loops"), (samples, "--samples")):
            if value < 1:
                raise UsageError(f"{option} must be at least 1, got {value}")
        if cfg.size % 16 or cfg.pair_size % 16:
            raise UsageError("--size and --pair-size must be multiples of 16 bytes (16-byte copy elements)")
        from fabricbench.run_cli import _check_writable_dir

        _check_writable_dir(Path(out), "--out")
        api = get_api()
        try:
            if api.fake:
                typer.echo("FAKE GPU INTERFACE (testing only): nothing below was measured on a GPU")
            for d in range(api.device_count()):
                info = api.device_info(d)
                typer.echo(f"# GPU {d}: {info.name}, {info.sm_count} SMs, cc {info.compute_capability}, "
                           f"{info.total_bytes / 2**30:.1f} GiB, {info.pci_bus_id}")
            report = selftest.run_selftest(api, cfg, progress=lambda line: typer.echo(line))
            if report["pairs"].get("text"):
                typer.echo(report["pairs"]["text"])
            path = selftest.write_reference(report, out)
        finally:
            api.close()
        typer.echo(f"{'selftest passed' if report['ok'] else 'SELFTEST FAILED'}; reference written to {path}")
        if not report["ok"]:
            raise typer.Exit(1)

    @app.command("ib")
    def ib_cmd(
        hca: str = typer.Option(None, "--hca", help="NIC ports to test, exact names: mlx5_0,mlx5_1:1 "
                                "[default: every port].", show_default=False),
        loopback: bool = typer.Option(False, "--loopback", help="One node: two GPUs through the same port with "
                                      "P2P and SHM off (never leaves the adapter: NIC + GPUDirect, not cable/switch)."),
        size: str = typer.Option("256M", "--size", "-s", help="Message size (K/M/G = 1024-based)."),
        iters: int = typer.Option(20, "--iters", "-n", help="Timed messages per direction."),
        warmup: int = typer.Option(5, "--warmup", "-w", help="Warm-up messages per direction."),
        gpu_map: str = typer.Option(None, "--gpu-map", help="Force the GPU per NIC: mlx5_0=0,mlx5_1=1 "
                                    "[default: the GPU sharing the NIC's PCIe switch].", show_default=False),
        sysfs_root: str = typer.Option("/sys", "--sysfs-root", help="Where sysfs is (tests use a fake tree)."),
        list_only: bool = typer.Option(False, "--list", help="Show the NICs, their state and chosen GPU; measure "
                                       "nothing."),
        timeout: float = typer.Option(180, "--timeout", help="Seconds per NIC before its workers are killed."),
        out: str = typer.Option(None, "--out", help="Results directory [default: results/<run-id>].",
                                show_default=False),
    ) -> None:
        """Per-NIC bandwidth with GPU buffers: NCCL send/recv through one HCA port at a time (NCCL_IB_HCA==dev:port),
        between two nodes (srun -N2 --ntasks-per-node=1) or looped back on one node (--loopback)."""
        from fabricbench.engine.ranks import discover, in_external_launcher
        from fabricbench.gpu import ib
        from fabricbench.gpu.api import get_api
        from fabricbench.gpu.sysfs import discover_ports, select_ports
        from fabricbench.results.io import write_results
        from fabricbench.run_cli import new_run_id

        for value, option in ((iters, "--iters"), (timeout, "--timeout")):
            if value <= 0:
                raise UsageError(f"{option} must be positive, got {value}")
        if warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, got {warmup}")
        nbytes = _size(size, "--size")
        if nbytes % 4:
            raise UsageError(f"--size {nbytes}: the pattern kernels check 4-byte words; give a multiple of 4 bytes")
        if not Path(sysfs_root).is_dir():
            raise UsageError(f"--sysfs-root {sysfs_root}: no such directory")
        ports = select_ports(discover_ports(sysfs_root), hca)  # bad --hca fails before any GPU is touched
        if not ports:
            raise UsageError(f"no RDMA devices under {sysfs_root}/class/infiniband: this host has no InfiniBand/"
                             "RoCE NIC visible (driver not loaded, or not an RDMA host)")
        external = in_external_launcher()
        if loopback and external and not list_only:
            raise UsageError("--loopback starts its own two workers on this node; run it without srun/torchrun/mpirun")
        if not loopback and not external and not list_only:
            raise UsageError("fabricbench ib between two nodes runs as 2 ranks, one per node: srun -N2 "
                             "--ntasks-per-node=1 fabricbench ib (or torchrun/mpirun); on one node use --loopback")
        run_id = new_run_id()
        cfg = ib.IbConfig(hca=hca, loopback=loopback, size=nbytes, iters=iters, warmup=warmup, sysfs_root=sysfs_root,
                          gpu_map=gpu_map, timeout=timeout, run_id=run_id)
        api = get_api()
        try:
            bus_ids = {i: api.device_info(i).pci_bus_id for i in range(api.device_count())}
            plans = ib.plan_nics(ports, bus_ids, cfg)
            from fabricbench.gpu.api import check_free_memory

            for g in sorted({g for p in plans for g in p.gpus}):
                check_free_memory(api, g, nbytes, f"--size {nbytes}")
            if list_only:
                for p in plans:
                    typer.echo(f"{p.port.name}: {p.port.state} ({p.port.phys_state}), {p.port.rate or 'rate ?'}, "
                               f"{p.port.link_layer}; GPU {', '.join(map(str, p.gpus))} "
                               f"[{', '.join(a.relation for a in p.affinity)}]; NCCL_IB_HCA={ib.nccl_ib_hca(p.port)}"
                               + (f"; {p.note}" if p.note else ""))
                return
            out_dir = _out_dir(out, run_id)
            cfg.out_dir = str(out_dir)
            coord = ib.Coordinator() if loopback else ib.TorchCoordinator(discover(), timeout)
            try:
                rows = ib.run_ib(bus_ids, cfg, coord, socket.gethostname(), progress=lambda line: typer.echo(line))
                every = [r for part in coord.allgather(rows) for r in part]
            finally:
                coord.close()
            if coord.rank == 0:
                write_results(out_dir, every, _run_info("ib", run_id, api, {
                    "config": cfg.__dict__, "loopback_note": ib.LOOPBACK_NOTE if loopback else None}))
                typer.echo(f"results in {out_dir}")
        finally:
            api.close()
        if any(r.get("status") != "ok" for r in every):
            raise typer.Exit(1)
