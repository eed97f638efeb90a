"""fabricbench.slurm.nodes without a cluster: names, ownership, `scontrol show node -o` parsing, quoting.
(The same attacks against a real slurmctld: tests/test_drain_lab.py.)"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from fabricbench.errors import UsageError
from fabricbench.slurm import nodes

LINE = ("NodeName=lab3 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 OS=Linux 6.1 #1 SMP  RealMemory=4096 "
        "State=IDLE+DRAIN ThreadsPerCore=1 Partitions=lab  CfgTRES=cpu=4 AllocTRES= CapWatts=n/a "
        "ExtSensorsTemp=n/s Reason={reason} [root@2026-12-05T16:59:28]")


@pytest.mark.parametrize("name", ["lab[1-4]", "lab3,lab4", "lab3 lab4", "lab1;id", "$(id)", "`id`", "lab1\n",
                                  "-lab1", "", "lab1'", 'lab1"', "a" * 300, "lab1/x", None, 3, "lab^1", "lab*"])
def test_only_one_plain_node_name_is_accepted(name):
    with pytest.raises(UsageError, match="not one plain node name"):
        nodes.validate_node_name(name)


@pytest.mark.parametrize("name", ["lab1", "gpu-a100-001", "node_7", "n1.cluster"])
def test_plain_names_pass(name):
    assert nodes.validate_node_name(name) == name


@pytest.mark.parametrize("reason,mine", [
    (nodes.OWNED_PREFIX + " nic lab3 40% low", True),
    ("fabricbench: alice replacing a cable", False),  # a person's reason with the tool's name is not ours
    ("  " + nodes.OWNED_PREFIX + " x", False),
    ("Foo=bar " + nodes.OWNED_PREFIX, False),
    ("maint: bios", False), ("", False), (None, False)])
def test_owned_needs_the_exact_prefix(reason, mine):
    assert nodes.owned(reason) is mine


def test_oneliner_reason_and_user():
    info = nodes.parse_oneliner(LINE.format(reason="  Foo=bar maint: bios x=1"))
    assert info.name == "lab3" and info.states == {"IDLE", "DRAIN"}
    assert info.reason == "  Foo=bar maint: bios x=1" and info.reason_user == "root"
    assert not nodes.owned(info.reason)


def test_oneliner_with_two_reasons_is_doubtful():
    assert nodes.parse_oneliner(LINE.format(reason="x Reason=" + nodes.OWNED_PREFIX)) is None


def test_shell_line_runs_exactly_the_argv(tmp_path):
    argv = ["printf", "%s\\n", "NodeName=lab1", "Reason=" + nodes.OWNED_PREFIX + " $(touch p1) `touch p2`; touch p3 '"]
    out = subprocess.run(["sh", "-c", nodes.shell_line(argv)], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.splitlines() == argv[2:]
    assert not list(tmp_path.iterdir())
    assert shlex.split(nodes.shell_line(argv)) == argv


def test_drain_refuses_unmeasured_and_unknown_hosts(tmp_path):
    seen: list[str] = []
    out = nodes.drain("lab1", nodes.OWNED_PREFIX + " x", measured_hosts={"lab2"}, echo=seen.append)
    assert out.action == "skipped" and "not measured" in out.why
    assert seen and all(line.startswith("# ") for line in seen)
    evil = nodes.drain("lab1\nrm -rf /", nodes.OWNED_PREFIX + " x", measured_hosts={"lab1\nrm -rf /"}, echo=seen.append)
    assert evil.action == "skipped" and all("\n" not in line for line in seen)


def test_reason_must_be_owned_printable_and_unquoted():
    for bad in ("maint: x", nodes.OWNED_PREFIX + " a\nb", nodes.OWNED_PREFIX + ' "q"', nodes.OWNED_PREFIX + "x" * 300):
        with pytest.raises(UsageError):
            nodes.drain_argv("lab1", bad)


def fake_scontrol(tmp_path, body: str):
    script = tmp_path / "scontrol"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    nodes._json_supported.pop(str(script), None)
    return str(script)


def test_json_output_where_slurm_has_it(tmp_path):
    doc = ('{"nodes": [{"name": "lab3", "state": ["IDLE", "DRAIN"], "reason": "maint: bios", '
           '"reason_set_by_user": "alice"}]}')
    exe = fake_scontrol(tmp_path, f"[ \"$1\" = --json ] && echo '{doc}' && exit 0\nexit 1\n")
    info = nodes.node_info("lab3", scontrol=exe)
    assert info.states == {"IDLE", "DRAIN"} and info.reason == "maint: bios" and info.reason_user == "alice"
    assert nodes.node_info("lab4", scontrol=exe) is None  # a record for another name is not this node
    out = nodes.drain("lab3", nodes.OWNED_PREFIX + " x", apply=True, echo=lambda _: None, measured_hosts={"lab3"},
                      scontrol=exe)
    assert out.action == "skipped" and "someone else" in out.why


def test_one_line_output_must_name_exactly_one_node(tmp_path):
    two = ("NodeName=lab3 Arch=x State=IDLE ThreadsPerCore=1\nNodeName=lab3 Arch=x State=IDLE ThreadsPerCore=1\n")
    exe = fake_scontrol(tmp_path, f"[ \"$1\" = --json ] && echo \"unrecognized option '--json'\" >&2 && exit 1\n"
                                  f"printf '{two}'\n")
    assert nodes.node_info("lab3", scontrol=exe) is None
    exe = fake_scontrol(tmp_path, "[ \"$1\" = --json ] && exit 1\necho 'NodeName=lab3x Arch=x State=IDLE T=1'\n")
    assert nodes.node_info("lab3", scontrol=exe) is None
