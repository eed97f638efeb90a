"""Lab life cycle: up, down, degrade, heal, status, exec. The CLI and the pytest fixture both call these.

Every resource `up` creates is named from the lab number recorded first in state.json (plan.py), and the
spine bridge, created first, carries the state directory as its alias: `down` removes the lab's namespaces
(after stopping every process inside them), links and files, and only touches prefix-matched leftovers when
the spine says they are this lab's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fabricbench.errors import UsageError
from fabricbench.lab import netns, slurm_cluster, tc
from fabricbench.lab.plan import MAX_LABS, Plan, hosts_file, link_pattern, make_plan, prefix_for
from fabricbench.lab.state import LabState, machine_lock, resolve_state_dir, write_text_atomic
from fabricbench.lab.topology import render_yaml

DEFAULT_LINK_RATE = "400mbit"
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise UsageError(f"'fabricbench lab {action}' needs root (it creates network namespaces and starts "
                         "Slurm daemons); run it with sudo")


# --------------------------------------------------------------------------------------------------- loading

@dataclass
class Lab:
    """A lab that is up: its state directory, plan and state."""

    state: LabState

    @property
    def dir(self) -> Path:
        return self.state.dir

    @property
    def plan(self) -> Plan:
        return Plan.from_dict(self.state["plan"])

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}


def load(state_dir: str | os.PathLike | None = None, need_up: bool = True) -> Lab:
    path = resolve_state_dir(state_dir)
    state = LabState.load(path)
    if state is None:
        raise UsageError(f"no lab in {path}; start one with 'fabricbench lab up --nodes N'"
                         + ("" if state_dir else " (or give --state-dir)"))
    if need_up and state.get("phase") != "up":
        raise UsageError(f"the lab in {path} is not up (phase: {state.get('phase')}); run 'fabricbench lab down' "
                         "then 'fabricbench lab up'")
    return Lab(state)


# -------------------------------------------------------------------------------------------------------- up

def up(nodes: int, leaves: int = 1, link_rate: str = DEFAULT_LINK_RATE, state_dir=None, cpus_per_node: int = 4,
       install: bool = True, log=None, shares: list[str] | None = None, oversubscription: str | None = None,
       uplink_rate: str | None = None) -> Lab:
    """Build the lab; on any failure remove what was built and raise. Returns the Lab (phase 'up').

    `oversubscription` ('2:1' or '2') or `uplink_rate` ('400mbit') shape every leaf's uplink; by default
    uplinks are unshaped (non-blocking)."""
    require_root("up")
    def say(msg: str) -> None:  # progress only: a closed stdout must not undo the lab
        try:
            (log or (lambda _: None))(msg)
        except OSError:
            pass

    rate_bps = tc.parse_rate(link_rate, "--link-rate")
    ratio = parse_ratio(oversubscription) if oversubscription is not None else None
    uplink_bps = tc.parse_rate(uplink_rate, "--uplink-rate") if uplink_rate is not None else None
    shape = dict(oversubscription=ratio, uplink_rate_bps=uplink_bps)
    make_plan(0, nodes, leaves, rate_bps, cpus_per_node, **shape)  # validate the numbers before touching anything
    path = resolve_state_dir(state_dir)
    if not _SAFE_PATH.match(str(path)):
        raise UsageError(f"--state-dir {path}: use only letters, digits and ./_+- (the path goes into slurm.conf)")
    shares = _check_shares(default_shares() + list(shares or []))
    slurm_cluster.ensure_installed(install)
    existing = LabState.load(path)
    if existing is not None:
        raise UsageError(f"a lab is already up in {path} (phase {existing.get('phase')}, nodes "
                         f"{_node_names(existing)}); run 'fabricbench lab down"
                         + (f" --state-dir {path}" if state_dir else "") + "' first")
    created_dir = not path.exists()
    if path.exists() and any(path.iterdir()):
        raise UsageError(f"--state-dir {path} exists and is not empty; give a new or empty directory")
    t0 = time.monotonic()
    path.mkdir(parents=True, exist_ok=True)
    try:  # claim the directory: a second `up` racing for it fails here
        os.close(os.open(path / "state.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise UsageError(f"a lab is already up in {path} (another 'lab up' is creating it)") from None
    state = LabState(path, {"version": 1, "phase": "creating", "created_state_dir": created_dir,
                            "shares": shares, "pids": {}, "degradations": [], "started": time.time()})
    state.save()
    try:
        with machine_lock():
            lab_id = _free_lab_id()
            plan = make_plan(lab_id, nodes, leaves, rate_bps, cpus_per_node, **shape)
            state.data.update(lab_id=lab_id, plan=plan.as_dict())
            state.save()
            netns.run(["ip", "link", "add", plan.spine_bridge, "type", "bridge"])
            try:  # the alias is what lets `down` recognise this lab's links later
                netns.run(["ip", "link", "set", plan.spine_bridge, "alias", _owner_tag(path)])
            except BaseException:
                netns.delete_link(plan.spine_bridge)
                raise
        lab = Lab(state)
        _build_network(plan)
        say(f"network: {len(plan.nodes)} namespaces, {len(plan.leaves)} leaf bridges + spine "
            f"({time.monotonic() - t0:.2f} s)")
        _apply_all_shaping(lab)
        _write_files(lab)
        _start_slurm(lab)
        state.data["phase"] = "up"
        state.data["up_seconds"] = round(time.monotonic() - t0, 3)
        state.save()
        say(f"slurm: slurmctld + {len(plan.nodes)} slurmd, all nodes idle ({time.monotonic() - t0:.2f} s)")
        return lab
    except BaseException:
        try:
            down(path, quiet=True)
        except Exception:  # the original error is the one to report
            pass
        raise


def parse_ratio(text: str) -> float:
    """'2:1', '2', '1.5:1' -> 2.0, 2.0, 1.5 (downlink : uplink capacity of a leaf)."""
    raw = str(text).strip()
    num, _, den = raw.partition(":")
    try:
        value = float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--oversubscription '{text}': write a ratio such as 2:1 (downlink : uplink)") from None
    if not 1 <= value <= 64:
        raise UsageError(f"--oversubscription '{text}': choose 1:1 (non-blocking) to 64:1")
    return value


def _owner_tag(path: Path) -> str:
    return f"fabricbench-lab:{path}"


def _node_names(state: LabState) -> str:
    plan = state.get("plan")
    if not plan:
        return "none yet"
    names = [n["name"] for n in plan["nodes"]]
    return f"{names[0]}..{names[-1]}" if len(names) > 1 else names[0]


def _free_lab_id() -> int:
    links = netns.list_links(r"^fbl[0-9]")
    for lab_id in range(MAX_LABS):
        prefix = prefix_for(lab_id)
        if netns.list_netns(prefix + "-") or any(re.match(link_pattern(lab_id), x) for x in links):
            continue
        if netns.addr_routed(f"10.213.{lab_id}.0/24"):
            continue
        return lab_id
    raise UsageError(f"all {MAX_LABS} lab numbers are in use on this machine; remove a lab with "
                     "'fabricbench lab down --state-dir DIR'")


def _build_network(plan: Plan) -> None:
    host = [f"link set {plan.spine_bridge} up", f"addr add {plan.host_addr}/24 dev {plan.spine_bridge}"]
    for leaf in plan.leaves:
        host += [f"link add {leaf.bridge} type bridge", f"link set {leaf.bridge} up",
                 f"link add {leaf.uplink_leaf_if} type veth peer name {leaf.uplink_spine_if}",
                 f"link set {leaf.uplink_leaf_if} master {leaf.bridge}",
                 f"link set {leaf.uplink_spine_if} master {plan.spine_bridge}",
                 f"link set {leaf.uplink_leaf_if} up", f"link set {leaf.uplink_spine_if} up"]
    spaces = [(plan.ctl_netns, plan.ctl_host_if, plan.spine_bridge, plan.ctl_addr)]
    bridge_of = {leaf.name: leaf.bridge for leaf in plan.leaves}
    spaces += [(n.netns, n.host_if, bridge_of[n.leaf], n.addr) for n in plan.nodes]
    for name, host_if, bridge, _ in spaces:
        host += [f"netns add {name}", f"link add {host_if} type veth peer name eth0 netns {name}",
                 f"link set {host_if} master {bridge}", f"link set {host_if} up"]
    netns.ip_batch(host)
    for name, _, _, addr in spaces:
        netns.ip_batch(["link set lo up", f"addr add {addr}/24 dev eth0", "link set eth0 up"], netns=name)


# ---------------------------------------------------------------------------------------------- shaping

def _iface_specs(lab: Lab) -> dict[tuple[str | None, str], tc.IfaceSpec]:
    """Desired shaping of every lab interface: (netns or None for the host, device) -> spec."""
    plan = lab.plan
    link = plan.link_rate_bps
    specs: dict[tuple[str | None, str], tc.IfaceSpec] = {}
    for node in plan.nodes:
        specs[(node.netns, "eth0")] = tc.IfaceSpec(tc.Shape(link))  # node -> switch
        specs[(None, node.host_if)] = tc.IfaceSpec(tc.Shape(link))  # switch -> node
    for leaf in plan.leaves:  # unshaped (non-blocking) unless the lab is oversubscribed
        specs[(None, leaf.uplink_leaf_if)] = tc.IfaceSpec(tc.Shape(leaf.uplink_rate_bps))
        specs[(None, leaf.uplink_spine_if)] = tc.IfaceSpec(tc.Shape(leaf.uplink_rate_bps))
    for deg in lab.state.get("degradations", []):
        shape = tc.Shape(deg.get("rate_bps"), deg.get("delay_us"), deg.get("loss_pct"))
        if deg["kind"] == "nic":
            node = plan.node(deg["target"])
            for key in nic_ifaces(node, deg.get("direction", "both")):
                base = specs[key].base
                specs[key].base = tc.Shape(shape.rate_bps or base.rate_bps, shape.delay_us, shape.loss_pct)
        elif deg["kind"] == "uplink":
            leaf = plan.leaf(deg["target"])
            for dev in (leaf.uplink_leaf_if, leaf.uplink_spine_if):
                specs[(None, dev)].base = tc.Shape(shape.rate_bps or leaf.uplink_rate_bps, shape.delay_us,
                                                   shape.loss_pct)
    for deg in lab.state.get("degradations", []):  # pairs last: they combine with the NIC's own shape
        if deg["kind"] == "pair":
            a, b = plan.node(deg["a"]), plan.node(deg["b"])
            specs[(a.netns, "eth0")].per_dst[b.addr] = tc.Shape(deg.get("rate_bps"), deg.get("delay_us"),
                                                                 deg.get("loss_pct"))
    return specs


NIC_DIRECTIONS = ("both", "rx", "tx")


def nic_ifaces(node, direction: str) -> list[tuple[str | None, str]]:
    """The egress interfaces that carry a node's traffic in `direction`: tx (out of the node) leaves through
    its own eth0; rx (into the node) leaves the leaf bridge through the node's switch port (host side)."""
    out = []
    if direction in ("both", "tx"):
        out.append((node.netns, "eth0"))
    if direction in ("both", "rx"):
        out.append((None, node.host_if))
    return out


def _apply(specs: dict, only: set | None = None) -> None:
    by_ns: dict[str | None, list[list[str]]] = {}
    for (ns, dev), spec in specs.items():
        if only is not None and (ns, dev) not in only:
            continue
        if only is not None:  # replacing: drop the old tree first (no error when there is none)
            netns.run(["tc"] + (["-n", ns] if ns else []) + ["qdisc", "del", "dev", dev, "root"], check=False)
        by_ns.setdefault(ns, []).extend(tc.commands_for(dev, spec))
    for ns, cmds in by_ns.items():
        netns.tc_batch(cmds, netns=ns)


def _apply_all_shaping(lab: Lab) -> None:
    _apply(_iface_specs(lab))


def _reapply_changed(lab: Lab, before: dict) -> None:
    after = _iface_specs(lab)
    changed = {key for key, spec in after.items()
               if tc.commands_for(key[1], spec) != tc.commands_for(key[1], before.get(key, tc.IfaceSpec()))}
    _apply(after, only=changed)
    _set_segmentation(lab)


def _set_segmentation(lab: Lab) -> None:
    """Loss must hit packets, not 64 KB GSO super-packets: while any loss is set, senders segment at the source.

    veth passes TCP's GSO skbs through the bridges whole, so a dropped skb would be up to 44 segments. With
    gso_max_segs 1 on every node's eth0, TCP builds one-segment skbs (measured: no throughput cost at 400mbit)."""
    want = 1 if any(d.get("loss_pct") for d in lab.state.get("degradations", [])) else 65535
    if lab.state.get("gso_max_segs", 65535) == want:
        return
    for node in lab.plan.nodes:
        netns.run(["ip", "-n", node.netns, "link", "set", "dev", "eth0", "gso_max_segs", str(want)], check=False)
    lab.state.data["gso_max_segs"] = want


# ------------------------------------------------------------------------------------------------ slurm

def _write_files(lab: Lab) -> None:
    plan, d = lab.plan, lab.dir
    for sub in ("log", "ctld", "shared"):
        (d / sub).mkdir(exist_ok=True)
    for node in plan.nodes:
        for sub in ("spool", "tmp"):
            (d / "nodes" / node.name / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "nodes" / node.name / "tmp", 0o1777)
    os.chmod(d / "shared", 0o1777)
    write_text_atomic(d / "hosts", hosts_file(plan))
    write_text_atomic(d / "slurm.conf", slurm_cluster.render_slurm_conf(plan, d))
    write_text_atomic(d / "topology.conf", slurm_cluster.render_topology_conf(plan))
    write_text_atomic(d / "topology.yaml", render_yaml(plan))


def _slurmd_argv(lab: Lab, node) -> list[str]:
    d = lab.dir
    return slurm_cluster.namespace_wrapper(node.netns, node.name, [(d / "hosts", "/etc/hosts")],
                                           ["slurmd", "-f", str(lab.conf), "-N", node.name],
                                           private_tmp=d / "nodes" / node.name / "tmp",
                                           shares=lab.state.get("shares", []))


def default_shares() -> list[str]:
    """Host directories under /tmp that nodes must see: the fabricbench checkout when it lives there (CI)."""
    import fabricbench

    root = Path(fabricbench.__file__).resolve().parents[1]
    return [str(root)] if _under_tmp(root) else []


def _under_tmp(path: Path) -> bool:
    parts = Path(path).resolve().parts
    return len(parts) >= 3 and parts[1] == "tmp"


def _check_shares(shares: list[str]) -> list[str]:
    out = []
    for share in shares:
        path = Path(share).expanduser().resolve()
        if not path.is_dir():
            raise UsageError(f"--share {share}: not a directory")
        if not _under_tmp(path):
            continue  # everything outside /tmp is visible in the nodes anyway
        if not _SAFE_PATH.match(str(path)):
            raise UsageError(f"--share {share}: use only letters, digits and ./_+- in the path")
        if str(path) not in out:
            out.append(str(path))
    return out


def _start_slurm(lab: Lab) -> None:
    plan, d = lab.plan, lab.dir
    ctl = slurm_cluster.namespace_wrapper(plan.ctl_netns, plan.ctl_name, [(d / "hosts", "/etc/hosts")],
                                          ["slurmctld", "-f", str(lab.conf), "-i"])
    slurm_cluster.start_daemons([ctl], lab.conf, ["slurmctld"])
    slurm_cluster.wait_controller(lab.conf, d / "log" / "slurmctld.log")
    _record_pids(lab)
    slurm_cluster.start_daemons([_slurmd_argv(lab, n) for n in plan.nodes], lab.conf,
                                [f"slurmd {n.name}" for n in plan.nodes])
    _record_pids(lab)
    slurm_cluster.wait_nodes_idle(lab.conf, [n.name for n in plan.nodes], d / "log")
    _record_pids(lab)


def _record_pids(lab: Lab) -> None:
    pids = {"slurmctld": slurm_cluster.read_pid(lab.dir / "ctld" / "slurmctld.pid")}
    for node in lab.plan.nodes:
        pids[node.name] = slurm_cluster.read_pid(lab.dir / "nodes" / node.name / "slurmd.pid")
    lab.state.data["pids"] = {k: v for k, v in pids.items() if v}
    lab.state.save()


def slurmd_pid(lab: Lab, node: str) -> int | None:
    pid = slurm_cluster.read_pid(lab.dir / "nodes" / node / "slurmd.pid")
    if pid and netns.pid_alive(pid) and pid in netns.pids_in_netns(lab.plan.node(node).netns):
        return pid
    return None


# ------------------------------------------------------------------------------------------------ down

def down(state_dir=None, quiet: bool = False) -> list[str]:
    """Remove the lab in `state_dir`: processes, namespaces, links, files. Idempotent. Returns what it did."""
    require_root("down")
    path = resolve_state_dir(state_dir)
    state = LabState.load(path)
    done: list[str] = []
    if state is None:
        return done
    if state.get("phase") != "creating":
        state.data["phase"] = "removing"
        state.save()
    plan = Plan.from_dict(state["plan"]) if state.get("plan") else None
    if plan is not None:
        spine_alias = netns.link_alias(plan.spine_bridge)
        owned = spine_alias == _owner_tag(path)
        spaces = [plan.ctl_netns] + [n.netns for n in plan.nodes]
        links = [n.host_if for n in plan.nodes] + [plan.ctl_host_if]
        links += [x for leaf in plan.leaves for x in (leaf.uplink_leaf_if, leaf.bridge)]
        if owned:  # leftovers of a crash between creating something and recording it
            spaces += [s for s in netns.list_netns(plan.prefix + "-") if s not in spaces]
            links += [x for x in netns.list_links(link_pattern(plan.lab_id)) if x not in links]
        if not owned:
            # No spine of ours: either `up` died before creating it (then nothing else exists, and the number
            # may since belong to another lab) or an earlier `down` removed everything (the spine goes last).
            # Either way, touch no namespace or link of that number.
            spaces, links = [], []
        killed = 0
        left = netns.kill_netns_processes(spaces)
        if left:
            raise netns.LabCommandFailed(f"processes {left} in the lab's namespaces survived SIGKILL; "
                                         "run 'fabricbench lab down' again")
        for pid_name, pid in (state.get("pids") or {}).items():  # normally already gone with their namespace
            if pid and netns.pid_alive(pid) and str(path) in _cmdline(pid):
                netns.kill_pids([pid])
                killed += 1
        for link in links:
            if link != plan.spine_bridge and netns.link_exists(link):
                netns.delete_link(link)
                done.append(f"link {link}")
        for space in spaces:
            if netns.netns_exists(space):
                netns.delete_netns(space)
                done.append(f"netns {space}")
        if owned:
            netns.delete_link(plan.spine_bridge)
            done.append(f"bridge {plan.spine_bridge}")
        _wait_gone(links + ([plan.spine_bridge] if owned else []))
    if state.get("created_state_dir"):
        shutil.rmtree(path, ignore_errors=True)
        done.append(f"dir {path}")
    else:
        for entry in list(path.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        done.append(f"contents of {path}")
    return done


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(links: list[str], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(netns.link_exists(x) for x in links):
        time.sleep(0.05)


# -------------------------------------------------------------------------------------- degrade / heal

def _target_key(deg: dict) -> tuple:
    return (deg["kind"], deg.get("target"), deg.get("a"), deg.get("b"))


def degrade(lab: Lab, kind: str, target: str | None = None, a: str | None = None, b: str | None = None,
            rate: str | None = None, delay: str | None = None, loss: str | None = None,
            direction: str | None = None) -> dict:
    """Add (or replace) one degradation: kind nic (target node; `direction` rx = traffic into it, tx = out of
    it, both), pair (a -> b), uplink (target leaf)."""
    require_root("degrade")
    plan = lab.plan
    if direction is not None and kind != "nic":
        raise UsageError("--direction is for --nic (a pair is one direction already; an uplink is both)")
    if direction is not None and direction not in NIC_DIRECTIONS:
        raise UsageError(f"--direction {direction}: choose rx (traffic into the node), tx (out of it) or both")
    if kind == "nic":
        plan.node(target)
        reference = plan.link_rate_bps
    elif kind == "pair":
        plan.node(a), plan.node(b)
        if a == b:
            raise UsageError(f"--pair {a} {b}: a pair needs two different nodes")
        reference = plan.link_rate_bps
    elif kind == "uplink":
        leaf = plan.leaf(target)
        target = leaf.name
        reference = leaf.uplink_rate_bps or (plan.link_rate_bps * len(leaf.nodes) if plan.link_rate_bps else None)
    else:
        raise UsageError(f"unknown degradation kind {kind!r}")
    rate_bps = tc.parse_rate(rate, "--rate", relative_to=reference) if rate is not None else None
    deg = {"kind": kind, "target": target, "a": a, "b": b, "rate_bps": rate_bps,
           "direction": (direction or "both") if kind == "nic" else None,
           "delay_us": tc.parse_delay(delay), "loss_pct": tc.parse_loss(loss)}
    if deg["delay_us"] and not tc.netem_available(plan.ctl_netns):
        raise UsageError("--delay needs the kernel's netem qdisc (CONFIG_NET_SCH_NETEM), which this kernel "
                         "lacks; --rate and --loss work without it")
    if not (deg["rate_bps"] or deg["delay_us"] or deg["loss_pct"]):
        raise UsageError("say how to degrade: --rate, --delay and/or --loss (e.g. --rate 60% or --delay 5ms)")
    deg = {k: v for k, v in deg.items() if v is not None}
    before = _iface_specs(lab)
    degs = [d for d in lab.state.get("degradations", []) if _target_key(d) != _target_key(deg)]
    lab.state.data["degradations"] = degs + [deg]
    _reapply_changed(lab, before)
    lab.state.save()
    return deg


def heal(lab: Lab, kind: str | None = None, target: str | None = None, a: str | None = None,
         b: str | None = None) -> list[dict]:
    """Remove every degradation (kind None) or the one on this target; returns those removed."""
    require_root("heal")
    plan = lab.plan
    if kind == "nic":
        plan.node(target)
    elif kind == "pair":
        plan.node(a), plan.node(b)
    elif kind == "uplink":
        target = plan.leaf(target).name
    degs = lab.state.get("degradations", [])
    if kind is None:
        removed, kept = degs, []
    else:
        key = (kind, target, a, b)
        removed = [d for d in degs if _target_key(d) == key]
        kept = [d for d in degs if _target_key(d) != key]
    before = _iface_specs(lab)
    lab.state.data["degradations"] = kept
    _reapply_changed(lab, before)
    lab.state.save()
    return removed


def describe(deg: dict) -> str:
    sides = {"both": "both directions", "rx": "receive only: traffic into it", "tx": "send only: traffic out of it"}
    what = {"nic": lambda: f"nic {deg['target']} ({sides[deg.get('direction', 'both')]})",
            "pair": lambda: f"pair {deg['a']} -> {deg['b']}",
            "uplink": lambda: f"uplink {deg['target']} <-> spine (both directions)"}[deg["kind"]]()
    parts = []
    if deg.get("rate_bps"):
        parts.append(f"rate {tc.format_rate(deg['rate_bps'])}")
    if deg.get("delay_us"):
        parts.append(f"+{tc.format_delay(deg['delay_us'])} delay")
    if deg.get("loss_pct"):
        parts.append(f"{deg['loss_pct']:g}% loss")
    return f"{what}: {', '.join(parts)}"


# ----------------------------------------------------------------------------------------------- status

def status(lab: Lab) -> dict:
    plan = lab.plan
    states = slurm_cluster.node_states(lab.conf)
    degs = lab.state.get("degradations", [])
    nodes = []
    for node in plan.nodes:
        mine = [describe(d) for d in degs if d.get("target") == node.name or d.get("a") == node.name]
        nodes.append({"name": node.name, "addr": node.addr, "leaf": node.leaf, "netns": node.netns,
                      "slurm": states.get(node.name, "unreachable" if not states else "missing"),
                      "slurmd_pid": slurmd_pid(lab, node.name), "degraded": mine})
    return {"state_dir": str(lab.dir), "lab_id": plan.lab_id, "subnet": plan.subnet,
            "slurm_conf": str(lab.conf), "controller": f"{plan.ctl_name} ({plan.ctl_addr})",
            "link_rate": tc.format_rate(plan.link_rate_bps), "link_rate_bps": plan.link_rate_bps,
            "oversubscription": plan.oversubscription,
            "uplink_rate_bps": {leaf.name: leaf.uplink_rate_bps for leaf in plan.leaves},
            "leaves": {leaf.name: leaf.nodes for leaf in plan.leaves}, "nodes": nodes,
            "degradations": degs, "degradations_text": [describe(d) for d in degs],
            "up_seconds": lab.state.get("up_seconds"), "shared_dir": str(lab.dir / "shared"),
            "topology_yaml": str(lab.dir / "topology.yaml")}


# ------------------------------------------------------------------------------------------ node access

def exec_argv(lab: Lab, node: str, argv: list[str]) -> list[str]:
    """argv that runs `argv` inside `node` as its job steps see it: network, mounts (/tmp, /etc/hosts), hostname.

    Enters slurmd's namespaces; with slurmd gone (a killed node) only the network namespace remains."""
    n = lab.plan.node(node)
    pid = slurmd_pid(lab, node)
    if pid:
        cwd = os.getcwd()
        shares = lab.state.get("shares", [])
        if _under_tmp(Path(cwd)) and not any(cwd == s or cwd.startswith(s + "/") for s in shares):
            cwd = "/"  # the node's /tmp is its own: this directory does not exist there
        return ["nsenter", "-t", str(pid), "--net", "--mount", "--uts", f"--wd={cwd}", "--", *argv]
    return ["nsenter", f"--net=/var/run/netns/{n.netns}", "--", *argv]


def kill_node(lab: Lab, node: str) -> int:
    """Crash a node: kill every process in its namespace (slurmd, slurmstepd, the job's ranks). Returns count."""
    require_root("kill-node")
    n = lab.plan.node(node)
    pids = netns.pids_in_netns(n.netns)
    left = netns.kill_pids(pids, grace_s=0.0)
    if left:
        raise netns.LabCommandFailed(f"processes {left} in {n.netns} survived SIGKILL")
    return len(pids)


def start_node(lab: Lab, node: str, wait: bool = True) -> None:
    """Start a node's slurmd again (after kill_node); with `wait`, until Slurm says it is usable."""
    require_root("start-node")
    n = lab.plan.node(node)
    if slurmd_pid(lab, node):
        return
    slurm_cluster.start_daemons([_slurmd_argv(lab, n)], lab.conf, [f"slurmd {node}"])
    _record_pids(lab)
    if wait:
        # A node that was DOWN comes back by itself (ReturnToService=2) once slurmd registers.
        slurm_cluster.scontrol(lab.conf, "update", f"NodeName={node}", "State=RESUME", check=False)
        slurm_cluster.wait_nodes_idle(lab.conf, [node], lab.dir / "log")


def run_in_node(lab: Lab, node: str, argv: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(exec_argv(lab, node, argv), timeout=timeout, **kwargs)
