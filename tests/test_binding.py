import os

from fabricbench.engine.binding import bind_to_gpu, normalize_bus_id, parse_cpulist, plan_binding


def _sysfs(tmp_path, bus, cpulist):
    dev = tmp_path / "bus" / "pci" / "devices" / bus
    dev.mkdir(parents=True)
    (dev / "local_cpulist").write_text(cpulist + "\n")
    return tmp_path


def test_parse_cpulist():
    assert parse_cpulist("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_cpulist("") == set()


def test_normalize_bus_id():
    assert normalize_bus_id("00000000:1B:00.0") == "0000:1b:00.0"
    assert normalize_bus_id("0000:9a:00.0") == "0000:9a:00.0"


def test_binds_to_the_gpus_socket(tmp_path):
    sysfs = _sysfs(tmp_path, "0000:1b:00.0", "0-55,112-167")
    cpus, why = plan_binding("00000000:1B:00.0", set(range(224)), sysfs)
    assert cpus == set(range(56)) | set(range(112, 168)) and "local to GPU" in why


def test_respects_a_narrower_allowed_set(tmp_path):
    sysfs = _sysfs(tmp_path, "0000:1b:00.0", "0-55")
    cpus, _ = plan_binding("0000:1b:00.0", {50, 51, 60, 61}, sysfs)
    assert cpus == {50, 51}
    cpus, why = plan_binding("0000:1b:00.0", {60, 61}, sysfs)
    assert cpus is None and "outside" in why


def test_no_gpu_or_no_sysfs_entry_leaves_affinity_alone(tmp_path):
    assert plan_binding(None, {0, 1}, tmp_path)[0] is None
    assert plan_binding("0000:02:00.0", {0, 1}, tmp_path)[0] is None


def test_bind_applies_to_this_process(tmp_path):
    before = os.sched_getaffinity(0)
    one = min(before)
    sysfs = _sysfs(tmp_path, "0000:1b:00.0", str(one))
    try:
        why = bind_to_gpu("0000:1b:00.0", sysfs)
        assert os.sched_getaffinity(0) == ({one} if len(before) > 1 else before)
        assert "GPU" in why
    finally:
        os.sched_setaffinity(0, before)
