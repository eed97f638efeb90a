"""`fabricbench lab ...`: a real Slurm cluster of network namespaces on this machine (see docs/lab.md)."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional, Tuple

import typer

from fabricbench.errors import UsageError

STATE_DIR_HELP = ("The lab's state directory (slurm.conf, logs, spool, state.json) (default: $FABRICBENCH_LAB_DIR "
                  "or /var/lib/fabricbench-lab). Never under /tmp.")


def _state_dir_option():
    return typer.Option(None, "--state-dir", help=STATE_DIR_HELP, show_default=False)


def _target(nic: str | None, pair: tuple | None, uplink: str | None, required: bool) -> tuple:
    given = [x for x in (nic, pair, uplink) if x]
    if len(given) > 1:
        raise UsageError("give one target: --nic NODE, --pair A B or --uplink LEAF")
    if nic:
        return ("nic", nic, None, None)
    if pair:
        return ("pair", None, pair[0], pair[1])
    if uplink:
        return ("uplink", uplink, None, None)
    if required:
        raise UsageError("give a target: --nic NODE, --pair A B (traffic A -> B) or --uplink LEAF")
    return (None, None, None, None)


def register(app: typer.Typer) -> None:
    lab_app = typer.Typer(name="lab", no_args_is_help=True, add_completion=False,
                          help="A real Slurm cluster made of network namespaces on this machine, with faults "
                               "injected by tc (root). See docs/lab.md.")
    app.add_typer(lab_app, name="lab")

    @lab_app.command("up")
    def up_cmd(
        nodes: int = typer.Option(4, "--nodes", "-N", help="Number of nodes (lab1..labN)."),
        leaves: int = typer.Option(1, "--leaves", "-L", help="Leaf switches (bridges) under one spine; nodes "
                                   "are spread over them in contiguous blocks."),
        link_rate: str = typer.Option("400mbit", "--link-rate", help="tc rate of every node link, each "
                                      "direction (e.g. 400mbit, 1gbit; 'none' = unshaped, CPU-bound)."),
        oversubscription: Optional[str] = typer.Option(None, "--oversubscription", help="Shape every leaf's "
                                                       "uplink to (its nodes x link rate) / R, e.g. 2:1 "
                                                       "(default: unshaped, non-blocking).", show_default=False),
        uplink_rate: Optional[str] = typer.Option(None, "--uplink-rate", help="Shape every leaf's uplink to this "
                                                  "tc rate, each direction (e.g. 400mbit).", show_default=False),
        cpus_per_node: int = typer.Option(4, "--cpus-per-node", help="CPUs each node declares to Slurm."),
        no_install: bool = typer.Option(False, "--no-install", help="Do not apt-get install missing Slurm "
                                        "daemons; fail instead."),
        share: list[str] = typer.Option([], "--share", help="A host directory under /tmp that must stay "
                                        "visible inside the nodes (whose /tmp is private); repeatable. The "
                                        "fabricbench checkout is shared by default when it lives under /tmp."),
        state_dir: Optional[str] = _state_dir_option(),
    ) -> None:
        """Build the lab: slurmctld + one slurmd per node, each node in its own namespace, bridges, tc, topology."""
        from fabricbench.lab import manager

        lab = manager.up(nodes, leaves, link_rate, state_dir, cpus_per_node, install=not no_install, shares=share,
                         log=lambda msg: typer.echo(f"lab: {msg}", err=True), oversubscription=oversubscription,
                         uplink_rate=uplink_rate)
        plan = lab.plan
        typer.echo(f"lab {plan.lab_id} up in {lab.state['up_seconds']:.1f} s: {len(plan.nodes)} nodes "
                   f"({plan.nodes[0].name}..{plan.nodes[-1].name}) on {len(plan.leaves)} "
                   f"{'leaf' if len(plan.leaves) == 1 else 'leaves'}, links "
                   f"{manager.tc.format_rate(plan.link_rate_bps)}"
                   + (f", uplinks {', '.join(sorted({manager.tc.format_rate(l.uplink_rate_bps) for l in plan.leaves}))}"
                      if any(l.uplink_rate_bps for l in plan.leaves) else "")
                   + f", subnet {plan.subnet}, state {lab.dir}")
        typer.echo(f'use it: eval "$(fabricbench lab env'
                   + (f" --state-dir {lab.dir}" if state_dir else "") + ')"; srun -N2 hostname')

    @lab_app.command("down")
    def down_cmd(state_dir: Optional[str] = _state_dir_option()) -> None:
        """Remove everything `up` created (daemons and job processes, namespaces, links, bridges, files)."""
        from fabricbench.lab import manager
        from fabricbench.lab.state import resolve_state_dir

        done = manager.down(state_dir)
        if not done:
            typer.echo(f"no lab in {resolve_state_dir(state_dir)}; nothing to remove")
            return
        links = sum(1 for d in done if d.startswith(("link", "bridge")))
        spaces = sum(1 for d in done if d.startswith("netns"))
        typer.echo(f"lab removed: {spaces} namespaces, {links} links/bridges, {done[-1]}")

    @lab_app.command("env")
    def env_cmd(state_dir: Optional[str] = _state_dir_option()) -> None:
        """Print `export SLURM_CONF=...` for eval, so that srun/sbatch/fabricbench submit use the lab."""
        import shlex

        from fabricbench.lab import manager

        lab = manager.load(state_dir)
        typer.echo(f"export SLURM_CONF={shlex.quote(str(lab.conf))}")
        typer.echo(f"export FABRICBENCH_LAB_DIR={shlex.quote(str(lab.dir))}")

    @lab_app.command("status")
    def status_cmd(
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
        state_dir: Optional[str] = _state_dir_option(),
    ) -> None:
        """Nodes, their Slurm state (sinfo) and leaf, and the current degradations."""
        from fabricbench.lab import manager

        info = manager.status(manager.load(state_dir))
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        typer.echo(f"lab {info['lab_id']} in {info['state_dir']}: subnet {info['subnet']}, controller "
                   f"{info['controller']}, links {info['link_rate']}")
        rows = [("node", "address", "leaf", "slurm", "degraded")]
        rows += [(n["name"], n["addr"], n["leaf"], n["slurm"], "; ".join(n["degraded"]) or "-")
                 for n in info["nodes"]]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        typer.echo("degradations: " + ("; ".join(info["degradations_text"]) or "none"))

    @lab_app.command("degrade")
    def degrade_cmd(
        nic: Optional[str] = typer.Option(None, "--nic", help="A node's link (both directions unless --direction)."),
        direction: Optional[str] = typer.Option(None, "--direction", help="With --nic: rx (traffic into the node), "
                                                "tx (traffic out of it) or both [default: both].",
                                                show_default=False),
        pair: Optional[Tuple[str, str]] = typer.Option(None, "--pair", help="Traffic from A to B only (tc "
                                                       "filter on A's egress by B's address).", show_default=False),
        uplink: Optional[str] = typer.Option(None, "--uplink", help="A leaf's uplink to the spine (leaf2 or 2), "
                                             "both directions."),
        rate: Optional[str] = typer.Option(None, "--rate", help="New rate: 200mbit, or a percentage of the "
                                           "link rate (60%); for an uplink, of link rate x nodes on the leaf."),
        delay: Optional[str] = typer.Option(None, "--delay", help="Extra one-way delay, e.g. 5ms."),
        loss: Optional[str] = typer.Option(None, "--loss", help="Packet loss, e.g. 1%."),
        state_dir: Optional[str] = _state_dir_option(),
    ) -> None:
        """Degrade one link (replaces an earlier degradation of the same target)."""
        from fabricbench.lab import manager

        kind, target, a, b = _target(nic, pair, uplink, required=True)
        lab = manager.load(state_dir)
        deg = manager.degrade(lab, kind, target, a, b, rate, delay, loss, direction=direction)
        typer.echo(f"degraded {manager.describe(deg)}")

    @lab_app.command("heal")
    def heal_cmd(
        nic: Optional[str] = typer.Option(None, "--nic", help="Heal only this node's link."),
        pair: Optional[Tuple[str, str]] = typer.Option(None, "--pair", help="Heal only traffic A -> B.",
                                                       show_default=False),
        uplink: Optional[str] = typer.Option(None, "--uplink", help="Heal only this leaf's uplink."),
        state_dir: Optional[str] = _state_dir_option(),
    ) -> None:
        """Remove degradations: all of them, or the one on the given target."""
        from fabricbench.lab import manager

        kind, target, a, b = _target(nic, pair, uplink, required=False)
        removed = manager.heal(manager.load(state_dir), kind, target, a, b)
        typer.echo(f"healed {len(removed)}: " + ("; ".join(manager.describe(d) for d in removed) or "nothing was degraded"))

    @lab_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def exec_cmd(
        node: str = typer.Argument(..., help="Node name, e.g. lab1."),
        command: list[str] = typer.Argument(..., help="Command and arguments (after --)."),
        state_dir: Optional[str] = _state_dir_option(),
    ) -> None:
        """Run a command inside a node (its network, /tmp, /etc/hosts and hostname), as its job steps see it."""
        from fabricbench.lab import manager

        lab = manager.load(state_dir)
        argv = manager.exec_argv(lab, node, list(command))
        sys.stdout.flush()
        os.execvp(argv[0], argv)

    @lab_app.command("probe")
    def probe_cmd(
        src: str = typer.Argument(..., help="Sending node."),
        dst: str = typer.Argument(..., help="Receiving node."),
        seconds: float = typer.Option(1.5, "--seconds", help="How long to send (at most 512 MiB)."),
        state_dir: Optional[str] = _state_dir_option(),
    ) -> None:
        """Measure TCP goodput SRC -> DST over the lab network (a few seconds, bounded)."""
        from fabricbench.lab import manager, probe

        if not 0 < seconds <= 60:
            raise UsageError(f"--seconds {seconds}: choose 0 to 60")
        lab = manager.load(state_dir)
        lab.plan.node(src), lab.plan.node(dst)
        bps = probe.measure(lab, src, dst, seconds=seconds)
        typer.echo(f"{src} -> {dst}: {bps / 1e6:.1f} Mbit/s goodput (link rate {manager.tc.format_rate(lab.plan.link_rate_bps)})")

    @lab_app.command("kill-node")
    def kill_node_cmd(node: str = typer.Argument(..., help="Node to crash."),
                      state_dir: Optional[str] = _state_dir_option()) -> None:
        """Crash a node: kill its slurmd and every job process in it (its network stays)."""
        from fabricbench.lab import manager

        count = manager.kill_node(manager.load(state_dir), node)
        typer.echo(f"{node}: killed {count} processes")

    @lab_app.command("start-node")
    def start_node_cmd(node: str = typer.Argument(..., help="Node to start again."),
                       state_dir: Optional[str] = _state_dir_option()) -> None:
        """Start a killed node's slurmd again and wait until Slurm can use it."""
        from fabricbench.lab import manager

        manager.start_node(manager.load(state_dir), node)
        typer.echo(f"{node}: slurmd running, node idle")
