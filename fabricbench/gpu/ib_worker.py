"""One rank of one `fabricbench ib` measurement: a fresh process per NIC, because NCCL reads NCCL_IB_HCA (and
the other NCCL_ variables) once per process. Started by fabricbench/gpu/ib.py with the NIC already selected in
its environment; not a user command.

Both directions are measured one after the other with NCCL send/recv between GPU buffers (CuPy memory seen by
torch): the sender's buffer holds the pattern of a fresh seed, the receiver's is poisoned, `iters` messages
are timed on the receiver (barrier, synchronize, loop, synchronize), and the receiver verifies the buffer with
the pattern kernel. The rank writes a JSON result (both directions, as every rank gathers them).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import traceback
from datetime import timedelta


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fabricbench.gpu.ib_worker")
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--master-addr", required=True)
    p.add_argument("--master-port", type=int, required=True)
    p.add_argument("--gpu", type=int, required=True)
    p.add_argument("--nic", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seed", type=int, default=0x1B)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--result", required=True)
    p.add_argument("--backend", choices=("nccl", "gloo"), default="nccl",
                   help="gloo: CPU tensors in host memory with the fake GPU interface (fabricbench's own tests)")
    return p.parse_args(argv)


def _write(path: str, record: dict) -> None:
    from fabricbench.results.io import atomic_write_json

    atomic_write_json(path, record)


def measure(args: argparse.Namespace) -> dict:
    import torch
    import torch.distributed as dist

    from fabricbench.gpu.api import CupyApi
    from fabricbench.gpu.pattern import sample_seed

    cpu = args.backend == "gloo"
    if not cpu:
        torch.cuda.set_device(args.gpu)
    sync = (lambda: None) if cpu else torch.cuda.synchronize
    dist.init_process_group(args.backend, init_method=f"tcp://{args.master_addr}:{args.master_port}", rank=args.rank,
                            world_size=args.world, timeout=timedelta(seconds=args.timeout))
    try:
        ident = [None] * args.world
        dist.all_gather_object(ident, {"host": socket.gethostname(), "nic": args.nic, "gpu": args.gpu})
        nics = {i["nic"] for i in ident}
        if len(nics) != 1:
            raise RuntimeError(f"the ranks selected different NICs: {sorted(nics)}")
        if cpu:
            from fabricbench.gpu.fake import FakeGpuApi

            api = FakeGpuApi({"devices": [{"free_bytes": args.size}]})
            buf = api.alloc(0, args.size)
            tensor = torch.from_numpy(buf.handle.view("uint8"))
        else:
            api = CupyApi()
            buf = api.alloc(args.gpu, args.size)
            # NCCL moves bytes: a uint8 view of the CuPy buffer (torch has no NCCL mapping for uint32)
            tensor = torch.as_tensor(buf.handle.view(api.cp.uint8), device=f"cuda:{args.gpu}")
        directions = {}
        for k, (sender, receiver) in enumerate(((0, 1), (1, 0))):
            seed = sample_seed(args.seed, k, args.master_port)
            me = args.rank
            if me == sender:
                api.fill(buf, seed)
            for _ in range(args.warmup):
                _step(dist, tensor, me, sender, receiver)
            if me == receiver:
                api.fill(buf, seed, poison=True)
            dist.barrier()
            sync()
            t0 = time.perf_counter()
            for _ in range(args.iters):
                _step(dist, tensor, me, sender, receiver)
            sync()
            seconds = time.perf_counter() - t0
            result = {"seconds": seconds, "nwrong": None}
            if me == receiver:
                check = api.verify(buf, seed)
                result["nwrong"] = check.mismatches
                result["first_bad"] = check.first_bad
            gathered = [None] * args.world
            dist.all_gather_object(gathered, result)
            got = gathered[receiver]
            nbytes = args.size * args.iters
            directions[f"{sender}->{receiver}"] = {
                "bytes": nbytes, "seconds": got["seconds"], "gbps": nbytes / got["seconds"] / 1e9,
                "time_us": got["seconds"] / args.iters * 1e6, "nwrong": got["nwrong"], "first_bad": got.get("first_bad"),
            }
        api.free(buf)
        return {"ok": True, "rank": args.rank, "hosts": [i["host"] for i in ident], "gpus": [i["gpu"] for i in ident],
                "nic": args.nic, "size": args.size, "iters": args.iters, "warmup": args.warmup,
                "directions": directions}
    finally:
        dist.destroy_process_group()


def _step(dist, tensor, me: int, sender: int, receiver: int) -> None:
    if me == sender:
        dist.send(tensor, dst=receiver)
    elif me == receiver:
        dist.recv(tensor, src=sender)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    try:
        record = measure(args)
    except BaseException as err:  # the parent reads the reason from the result file
        record = {"ok": False, "rank": args.rank, "nic": args.nic, "error": " ".join(str(err).split())[:500]
                  or type(err).__name__, "traceback": traceback.format_exc()[-4000:]}
        _write(args.result, record)
        return 1
    _write(args.result, record)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
