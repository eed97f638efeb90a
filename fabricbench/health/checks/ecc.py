"""ECC errors and row remapping per GPU (`nvidia-smi -q`, saved or run on a live node).

Fails on: volatile uncorrectable DRAM/SRAM errors (older drivers: 'Double Bit' > 'Device Memory'), a pending
row remap (the GPU needs a reset to apply it) and a row remapping failure (no spare rows: replace the GPU).
Correctable errors and rows already remapped are reported as values, not failures (A100/H100 remap rows by
design).
"""

from __future__ import annotations

from fabricbench.health.checks import CheckResult, Finding, Sources, nvsmi, register, tool_text, worst


def _uncorrectable(gpu: dict) -> int | None:
    vol = nvsmi.find(gpu, "ECC Errors", "Volatile")
    if not isinstance(vol, dict):
        return None
    total, seen = 0, False
    for key in ("DRAM Uncorrectable", "SRAM Uncorrectable"):
        n = nvsmi.number(vol.get(key))
        if n is not None:
            total, seen = total + n, True
    old = nvsmi.number(nvsmi.find(vol, "Double Bit", "Device Memory") if isinstance(vol.get("Double Bit"), dict)
                       else None)
    if old is not None:
        total, seen = total + old, True
    return total if seen else None


@register("ecc", "ECC uncorrectable errors and row remapping (pending, failure) per GPU (nvidia-smi -q / NVML)")
def check(src: Sources) -> CheckResult:
    res = CheckResult("ecc", "unknown", "", compared_with="0 uncorrectable errors, no pending remap, no remap failure")
    nt = src.node_type
    text, how = tool_text(src.nvidia_smi_q, src.live, ["nvidia-smi", "-q"])
    if text is None:
        if nt is not None and nt.gpus.count == 0:
            res.status, res.summary = "pass", "the topology's node type has no GPUs"
            return res
        res.not_checked.append(f"ECC and row remapping: {how}")
        res.summary = "nothing could be checked: " + how
        return res
    gpus = nvsmi.parse(text)
    if not gpus:
        res.not_checked.append(f"ECC: no 'GPU <bus id>' sections in {how}")
    for i, gpu in enumerate(gpus):
        comp = f"gpu{i}"
        unc = _uncorrectable(gpu)
        if unc is None:
            res.findings.append(Finding(comp, "gpu", "unknown", f"{gpu['bus_id']}: ECC counters N/A (ECC off?)"))
        else:
            res.findings.append(Finding(comp, "gpu", "fail" if unc else "pass",
                                        f"{gpu['bus_id']}: {unc} volatile uncorrectable ECC error(s)",
                                        "ecc_uncorrectable_errors", float(unc), 0.0))
        rr = gpu.get("Remapped Rows")
        if isinstance(rr, dict):
            pending = str(rr.get("Pending", "")).lower() == "yes"
            failed = str(rr.get("Remapping Failure Occurred", "")).lower() == "yes"
            unc_rows = nvsmi.number(rr.get("Uncorrectable Error"))
            detail = f"{gpu['bus_id']}: rows remapped {nvsmi.number(rr.get('Correctable Error'))} correctable / " \
                     f"{unc_rows} uncorrectable, pending {'yes' if pending else 'no'}, failure {'yes' if failed else 'no'}"
            status = "fail" if (pending or failed) else "pass"
            res.findings.append(Finding(f"{comp}/rowremap", "gpu", status, detail, "remapped_rows_uncorrectable",
                                        float(unc_rows) if unc_rows is not None else None))
        else:
            res.not_checked.append(f"{comp}: no 'Remapped Rows' section (GPU without row remapping)")
    res.status = worst(f.status for f in res.findings)
    bad = [f.detail for f in res.findings if f.status == "fail"]
    res.summary = "; ".join(bad[:6]) if bad else (f"{len(gpus)} GPU(s): no uncorrectable errors, no pending or "
                                                   f"failed remap ({how})" if gpus else "no GPU sections")
    return res
