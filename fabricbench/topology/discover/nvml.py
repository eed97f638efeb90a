"""NVML through pynvml (optional: `pip install nvidia-ml-py`): GPU model, NVLink links up/down with error
counters, PCIe current and maximum generation and width. Absent or failing NVML is reported, never fatal."""

from __future__ import annotations

from fabricbench.topology.discover.facts import HostFacts, Report

NAME_TO_NVLINK = {"A100": 3, "A800": 3, "H100": 4, "H800": 4, "H200": 4, "H20": 4, "GH200": 4, "B200": 5,
                  "B100": 5, "GB200": 5, "B300": 5, "GB300": 5, "V100": 2}


def read() -> tuple[HostFacts | None, Report]:
    report = Report()
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        report.unread.append("NVML: pynvml is not installed (pip install nvidia-ml-py to read NVLink state)")
        return None, report
    try:
        pynvml.nvmlInit()
    except Exception as err:  # NVMLError_LibraryNotFound, driver not loaded, ...
        report.unread.append(f"NVML: cannot initialise ({err})")
        return None, report
    facts = HostFacts(source="NVML")
    links_info = []
    try:
        count = pynvml.nvmlDeviceGetCount()
        facts.gpus = count
        up_counts = []
        for i in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            facts.gpu_model = name
            pcie = {}
            for key, fn in (("gen", "nvmlDeviceGetCurrPcieLinkGeneration"),
                            ("max_gen", "nvmlDeviceGetMaxPcieLinkGeneration"),
                            ("width", "nvmlDeviceGetCurrPcieLinkWidth"),
                            ("max_width", "nvmlDeviceGetMaxPcieLinkWidth")):
                try:
                    pcie[key] = int(getattr(pynvml, fn)(handle))
                except Exception:
                    pcie[key] = None
            facts.pcie_gen = facts.pcie_gen or pcie.get("max_gen")
            facts.pcie_width = facts.pcie_width or pcie.get("max_width")
            up = 0
            gpu_links = []
            for link in range(int(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18))):
                try:
                    state = pynvml.nvmlDeviceGetNvLinkState(handle, link)
                except Exception:
                    break
                entry = {"link": link, "up": bool(state)}
                errors = {}
                for counter, label in ((0, "replay"), (1, "recovery"), (2, "crc_flit"), (3, "crc_data")):
                    try:
                        errors[label] = int(pynvml.nvmlDeviceGetNvLinkErrorCounter(handle, link, counter))
                    except Exception:
                        pass
                if errors:
                    entry["errors"] = errors
                up += bool(state)
                gpu_links.append(entry)
            up_counts.append(up)
            links_info.append({"gpu": i, "name": name, "pcie": pcie, "nvlinks": gpu_links,
                               "nvlinks_down": [e["link"] for e in gpu_links if not e["up"]]})
        if up_counts and max(up_counts):
            facts.nvlink_links_per_gpu = max(up_counts)
            facts.nvswitch = count > 2 and len(set(up_counts)) == 1 and max(up_counts) >= 12
        for key, gen in NAME_TO_NVLINK.items():
            if facts.gpu_model and key in facts.gpu_model:
                facts.nvlink_generation = gen
        report.read.append(f"NVML: {count} GPUs ({facts.gpu_model}), NVLink links up per GPU: {up_counts}")
    except Exception as err:
        report.unread.append(f"NVML: stopped reading ({type(err).__name__}: {err})")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    report.evidence = {"nvml": links_info}
    return facts, report
