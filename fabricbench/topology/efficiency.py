"""Line rate → achievable bandwidth, one factor per link class, each fitted on one public figure and checked on others.

There are no per-system factors: a DGX H100 and an HGX H200 use the same `nvlink4` factor, a DGX A100's HDR NICs
the same `ib` factor as NDR. The figures are in shared REFERENCE.md (and the fixture named for nvlink5).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Efficiency:
    link_class: str
    factor: float
    fitted_on: str
    checked_against: str

    def as_dict(self) -> dict:
        return {"class": self.link_class, "factor": self.factor, "fitted_on": self.fitted_on,
                "checked_against": self.checked_against}


EFFICIENCY: dict[str, Efficiency] = {e.link_class: e for e in [
    Efficiency("nvlink1", 0.80, "assumed equal to nvlink2 (no public figure)", "none"),
    Efficiency("nvlink2", 0.80, "assumed equal to NCCL's NVLink model (20 GB/s of 25 per link, nccl src/graph/topo.h)",
               "no public measurement checked"),
    Efficiency("nvlink3", 0.80, "NCCL's SM80 model: 20.0 GB/s per 25 GB/s link (nccl src/graph/topo.h)",
               "A100 ring busbw ~230-240 GB/s of 300 line (REFERENCE.md): 0.77-0.80"),
    Efficiency("nvlink4", 0.822, "H100 ring busbw ~370 of 450 GB/s line (nccl-tests #212)",
               "H100 pair p2pBandwidthLatencyTest uni 371-377 (nccl #1264); NCCL's SM90 model 20.6/25 = 0.824"),
    Efficiency("nvlink5", 0.732, "8x B200 all_gather busbw 659 GB/s of 900 line at 16 GiB (fixture nccl-tests/"
               "ten-collectives-b200x8-single-node-hypercube-failed-orcd, mit-orcd/orcd-benchmarks @bca7147)",
               "same run: reduce_scatter 695, broadcast 702, alltoall 679, sendrecv 665; 2x GB200 NVL72 ring "
               "(coreweave/nccl-tests README) all_reduce 688 avg"),
    Efficiency("nvlink6", 0.732, "assumed equal to nvlink5 (no public figure yet)", "none"),
    Efficiency("nvls", 0.834, "8x H100 NVLS all_reduce busbw ~480 GB/s (nccl-tests #212, #290): "
               "480 / (370 x 2(n-1)/(n+1)) at n=8",
               "8x B200 all_reduce 863 GB/s at 16 GiB (orcd fixture): model 659 x 14/9 x 0.834 = 855"),
    Efficiency("ib", 0.95, "NDR 400 Gb/s NIC: 46-49 of 50 GB/s (nccl-tests #290, #267), midpoint 47.5",
               "DGX A100 8x HDR 200G multi-node all_reduce ~192 GB/s (nccl #812): model 8 x 25 x 0.95 = 190"),
    Efficiency("roce", 0.95, "taken equal to ib (same adapters and verbs; no separate public figure)",
               "Azure per-HCA ib_write_bw threshold 380 of 400 Gb/s (azurehpc-health-checks) = 0.95"),
    Efficiency("ethernet", 0.94, "TCP over 1500-byte MTU: 1448 payload bytes per 1538 on the wire",
               "fabric lab: 200 Mbit/s veth, 4-node gloo all_reduce busbw 0.025 GB/s (REFERENCE.md)"),
    Efficiency("emulated", 0.958, "fabric lab probe goodput 383 Mbit/s on veths shaped to 400mbit (docs/lab.md)",
               "fabric lab: 200 Mbit/s veth, 4-node gloo all_reduce busbw 0.025 GB/s = 1.0 x 25 MB/s (REFERENCE.md)"),
    Efficiency("pcie", 0.849, "H100 host<->device PCIe 5 x16: ~52-55 of 63 GB/s (nvbandwidth #24), midpoint 53.5",
               "Azure ND H100 v5 H2D/D2H threshold 48 GB/s (azurehpc-health-checks) is below it, as a floor should be"),
    Efficiency("cpu", 0.80, "socket interconnect (UPI/xGMI): assumed as NCCL's model of inter-socket bandwidth "
               "below line", "no public measurement checked"),
    Efficiency("memory", 1.0, "host memory between CPU ranks: the rate given in the file is taken as achievable",
               "none"),
]}


def efficiency(link_class: str) -> Efficiency:
    try:
        return EFFICIENCY[link_class]
    except KeyError:
        raise KeyError(f"no efficiency factor for link class {link_class!r}") from None


def nvlink_class(generation: int) -> str:
    return f"nvlink{generation}"
