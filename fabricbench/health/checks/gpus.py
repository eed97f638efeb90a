"""GPU count and model against the topology's node type.

The count comes from the PCI bus (sysfs: NVIDIA vendor 0x10de, class 0x0300 VGA or 0x0302 3D controller),
which sees a GPU the driver has lost ('fallen off the bus' still leaves the device, a dead slot does not);
the model from a saved `nvidia-smi -q` ('Product Name') or, on a live node, NVML.
"""

from __future__ import annotations

import re
from pathlib import Path

from fabricbench.health.checks import CheckResult, Finding, Sources, read_text, register, worst
from fabricbench.health.checks import nvsmi

NVIDIA = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")


def pci_gpus(sysfs_root: Path) -> list[str] | None:
    """Bus ids of NVIDIA GPUs under sysfs bus/pci/devices; None when that directory is absent."""
    base = Path(sysfs_root) / "bus" / "pci" / "devices"
    if not base.is_dir():
        return None
    out = []
    for dev in sorted(base.iterdir()):
        try:
            vendor = (dev / "vendor").read_text().strip().lower()
            klass = (dev / "class").read_text().strip().lower()
        except OSError:
            continue
        if vendor == NVIDIA and klass.startswith(GPU_CLASSES):
            out.append(dev.name)
    return out


def _models(src: Sources) -> tuple[list[str] | None, str]:
    text = read_text(src.nvidia_smi_q)
    if text is not None:
        return [str(g.get("Product Name", "unknown")) for g in nvsmi.parse(text)], f"nvidia-smi -q ({src.nvidia_smi_q})"
    if src.live:
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                     for i in range(pynvml.nvmlDeviceGetCount())]
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names], "NVML"
        except Exception as err:  # noqa: BLE001 - no NVML library / no driver: reported as not checked
            return None, f"NVML unavailable ({type(err).__name__})"
    return None, "no nvidia-smi -q output given"


def family(model: str) -> str:
    """'H100-SXM5-80GB' -> 'H100'; 'NVIDIA H100 80GB HBM3' -> 'H100' (the first token with a digit)."""
    for tok in re.split(r"[\s\-_]+", model.upper()):
        if tok and tok != "NVIDIA" and any(c.isdigit() for c in tok):
            return tok
    return model.upper()


@register("gpus", "GPU count (PCI bus) and model (nvidia-smi -q / NVML) against the topology")
def check(src: Sources) -> CheckResult:
    res = CheckResult("gpus", "unknown", "")
    ids = pci_gpus(src.sysfs_root)
    nt = src.node_type
    want = nt.gpus.count if nt is not None else None
    want_model = nt.gpus.model if nt is not None else None
    res.compared_with = f"topology node type: {want} x {want_model}" if nt is not None else "nothing (no --topology)"
    if ids is None:
        res.not_checked.append(f"GPU count: no PCI device tree at {Path(src.sysfs_root) / 'bus/pci/devices'}")
    else:
        found = len(ids)
        if want is None:
            status, detail = "unknown", f"{found} NVIDIA GPU(s) on the PCI bus; no topology to compare with"
        elif found == want:
            status, detail = "pass", f"{found} GPU(s) on the PCI bus, as the topology says"
        else:
            status, detail = "fail", f"{found} GPU(s) on the PCI bus, the topology says {want}"
        res.findings.append(Finding("node", "node", status, detail, "gpu_count", float(found),
                                    float(want) if want is not None else None))
    models, how = _models(src)
    if models is None:
        if want != 0:
            res.not_checked.append(f"GPU model: {how}")
    else:
        for i, name in enumerate(models):
            if want_model is None or want_model == "unknown":
                status, detail = "unknown", f"{name} (no topology model to compare with)"
            elif family(name) == family(want_model):
                status, detail = "pass", f"{name} matches {want_model}"
            else:
                status, detail = "fail", f"{name}, the topology says {want_model}"
            res.findings.append(Finding(f"gpu{i}", "gpu", status, detail))
        if ids is not None and len(models) != len(ids):
            res.findings.append(Finding("node", "node", "fail", f"the driver sees {len(models)} GPU(s) ({how}), "
                                        f"the PCI bus has {len(ids)}: a GPU is lost to the driver"))
    res.status = worst(f.status for f in res.findings)
    if want == 0 and ids == []:
        res.status, res.summary = "pass", "no GPUs, and the topology says none"
    elif not res.findings:
        res.summary = "nothing could be checked: " + "; ".join(res.not_checked)
    else:
        bad = [f for f in res.findings if f.status == "fail"]
        res.summary = "; ".join(f.detail for f in bad) if bad else res.findings[0].detail
    return res
