"""`fabricbench topo list|validate|expect|show|discover|generate|efficiency`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from fabricbench.errors import UsageError

topo_app = typer.Typer(name="topo", help="Topology files, discovery, expected bandwidth and drawings.",
                       no_args_is_help=True, add_completion=False)


def _load(spec: str, link_rate: str | None = None, uplink_rate: str | None = None):
    from fabricbench.topology.load import load_topology, parse_topology
    from fabricbench.topology.rates import parse_rate

    topo = load_topology(spec)
    if link_rate is None and uplink_rate is None:
        return topo
    data = topo.model_dump(mode="json", exclude_none=True)
    for option, value in (("--link-rate", link_rate), ("--uplink-rate", uplink_rate)):
        if value is not None:
            try:
                parse_rate(value)
            except ValueError as err:
                raise UsageError(f"{option}: {err}") from None
    if link_rate is not None:
        for nt in data["node_types"].values():
            for nic in nt.get("nics", []):
                nic["rate"] = link_rate
        if data["node_types"][data["fabric"]["node_type"]].get("nics"):
            data["fabric"].pop("link_rate", None)
        else:  # hosts without NICs (e.g. discovered from topology.conf alone) reach the fabric at this rate
            data["fabric"]["link_rate"] = link_rate
    if uplink_rate is not None:
        data["fabric"]["uplink_rate"] = uplink_rate
    return parse_topology(data, f"{spec} (with rate overrides)")


def _write_json(path: str, obj: object) -> None:
    if path == "-":
        typer.echo(json.dumps(obj, indent=2))
        return
    from fabricbench.results.io import atomic_write_json

    atomic_write_json(path, obj)


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [x.strip().lower().replace("-", "_") for v in values for x in v.split(",") if x.strip()]


def register(app: typer.Typer) -> None:
    app.add_typer(topo_app, name="topo")


@topo_app.command("list")
def list_cmd() -> None:
    """The shipped topologies (topologies/*.yaml and $FABRICBENCH_TOPOLOGIES)."""
    from fabricbench.topology.load import list_topologies, load_topology
    from fabricbench.topology.table import render

    from fabricbench.errors import UsageError

    rows = []
    for name, path in list_topologies().items():
        try:
            topo = load_topology(str(path))
        except UsageError as err:  # one bad file in $FABRICBENCH_TOPOLOGIES must not hide the others
            rows.append([name, "-", "invalid", " ".join(str(err).split())[:90]])
            continue
        rows.append([name, len(topo.host_names()), topo.fabric.kind, topo.description[:90]])
    typer.echo(render(["name", "hosts", "fabric", "description"], rows))


@topo_app.command("validate")
def validate_cmd(files: List[str] = typer.Argument(..., help="Topology files or names.")) -> None:
    """Check topology files against the schema (and build their graphs); one line per file."""
    from fabricbench.topology.graph import build_graph
    from fabricbench.topology.load import load_topology

    from fabricbench.errors import UsageError

    for spec in files:
        topo = load_topology(spec)
        try:
            graph = build_graph(topo)
        except UsageError as err:
            # what `topo discover` writes from topology.conf alone: valid, with the rate left to --link-rate
            if "no link_rate" not in str(err):
                raise
            typer.echo(f"{spec}: ok ({len(topo.host_names())} hosts; no link rate in the file: give --link-rate "
                       "to topo expect/show)")
            continue
        typer.echo(f"{spec}: ok ({len(topo.host_names())} hosts, {graph.number_of_nodes()} graph nodes, "
                   f"{graph.number_of_edges()} links)")


@topo_app.command("efficiency")
def efficiency_cmd(json_out: Optional[str] = typer.Option(None, "--json", help="Write JSON to FILE ('-': stdout).")) -> None:
    """Line-rate → achievable factors per link class, with the figure each was fitted on and checked against."""
    from fabricbench.topology.efficiency import EFFICIENCY
    from fabricbench.topology.table import render

    if json_out:
        _write_json(json_out, [e.as_dict() for e in EFFICIENCY.values()])
        if json_out == "-":
            return
    typer.echo(render(["class", "factor", "fitted on", "checked against"],
                      [[e.link_class, e.factor, e.fitted_on, e.checked_against] for e in EFFICIENCY.values()]))


@topo_app.command("expect")
def expect_cmd(
    topology: str = typer.Argument(..., help="A topology file or the name of a shipped one (see 'topo list')."),
    pair: Optional[List[str]] = typer.Option(None, "--pair", "-p", help="Endpoints 'A,B': host, host:gpuN or "
                                             "host:NIC (a bare gpuN/NIC means the first host). Repeatable."),
    nodes: Optional[int] = typer.Option(None, "--nodes", "-N", help="Hosts in the layout (default: all)."),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", "-g",
                                                help="Ranks per host (default: every GPU, or ranks_per_node)."),
    op: Optional[List[str]] = typer.Option(None, "--op", help="Operations (comma list; default all)."),
    algo: Optional[List[str]] = typer.Option(None, "--algo", help="ring, tree, nvls (comma list; default all)."),
    link_rate: Optional[str] = typer.Option(None, "--link-rate", help="Set every host port to this rate, e.g. 400mbit."),
    uplink_rate: Optional[str] = typer.Option(None, "--uplink-rate", help="Set every leaf-spine link to this rate."),
    json_out: Optional[str] = typer.Option(None, "--json", help="Also write JSON to FILE ('-': only JSON on stdout)."),
) -> None:
    """Expected bandwidth: pairs of endpoints (path, bottleneck, line, achievable) and collectives (busbw, formula)."""
    from fabricbench.topology.collectives import expectations
    from fabricbench.topology.graph import build_graph
    from fabricbench.topology.paths import pair as pair_expect
    from fabricbench.topology.table import num, render

    topo = _load(topology, link_rate, uplink_rate)
    result: dict = {"topology": topo.name}
    out: list[str] = []
    if pair:
        graph = build_graph(topo, nodes)
        pairs = []
        for spec in pair:
            ends = [x for x in spec.split(",") if x.strip()]
            if len(ends) != 2:
                raise UsageError(f"--pair {spec!r}: give two endpoints separated by a comma, e.g. node01:gpu0,node02:gpu0")
            pairs.append(pair_expect(graph, topo, ends[0], ends[1]))
        result["pairs"] = pairs
        for p in pairs:
            out.append(f"{p['a']} -> {p['b']}: line {num(p['line_GBps'])} GB/s, expected {num(p['expected_GBps'])} GB/s"
                       f" ({p['kind']})")
            for path in p["paths"][:4]:
                out.append(f"  path: {path}")
            if len(p["paths"]) > 4:
                out.append(f"  ... {len(p['paths']) - 4} more equal paths")
            if p.get("bottleneck_note"):
                out.append(f"  bottleneck: {p['bottleneck_note']}")
            for b in p["bottleneck"][:4]:
                out.append(f"  bottleneck: {b['link']} ({b['label']}) line {num(b['line_GBps'])}, achievable "
                           f"{num(b['achievable_GBps'])} = x{b['efficiency']} [{b['class']}: {b['efficiency_source']}]")
    if not pair or op or algo or gpus_per_node:
        coll = expectations(topo, nodes, gpus_per_node, _split(op), _split(algo))
        result["collectives"] = coll
        out.append(f"{topo.name}: {coll['nodes']} host(s) x {coll['ranks_per_node']} rank(s) = {coll['n']} ranks; "
                   f"{coll['domain']}; D = {coll['D']} domain(s). busbw in GB/s (nccl-tests convention).")
        rows = []
        for r in coll["rows"]:
            if r.get("applicable"):
                rows.append([r["op"], r["algorithm"], num(r["line_busbw"]), num(r["expected_busbw"]), r["bound"],
                             r["formula"]])
            else:
                rows.append([r["op"], r["algorithm"], "-", "-", "n/a", r["why"]])
        out.append(render(["op", "algo", "line", "expected", "bound", "formula (expected, GB/s)"], rows))
        intra_lines = {r.get("intra") for r in coll["rows"] if r.get("intra")}
        net_lines = {r.get("network") for r in coll["rows"] if r.get("network")}
        out.extend(f"B_intra: {x}" for x in sorted(intra_lines))
        out.extend(f"B_nic: {x}" for x in sorted(net_lines))
    if json_out == "-":
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    typer.echo("\n".join(out))
    if json_out:
        _write_json(json_out, result)


@topo_app.command("show")
def show_cmd(
    topology: str = typer.Argument(..., help="A topology file or shipped name."),
    out: str = typer.Option(..., "--out", "-o", help="Output file: .png or .svg."),
    nodes: Optional[int] = typer.Option(None, "--nodes", "-N", help="Hosts to draw in the fabric view."),
    host: Optional[str] = typer.Option(None, "--host", help="Draw this host's inside (default: the first host)."),
    view: str = typer.Option("auto", "--view", help="auto, node (inside one host or NVLink domain), fabric, heatmap."),
    link_rate: Optional[str] = typer.Option(None, "--link-rate", help="Set every host port to this rate."),
) -> None:
    """Draw a host's inside (GPUs, NVSwitch, PCIe, NICs) and the switch tree; a heatmap for hundreds of hosts."""
    from fabricbench.topology.show import draw

    topo = _load(topology, link_rate)
    path = draw(topo, out, nodes=nodes, host=host, view=view)
    typer.echo(f"wrote {path}")


@topo_app.command("generate")
def generate_cmd(
    kind: str = typer.Argument(..., help="lab: the fabric lab's layout."),
    out: str = typer.Option("-", "--out", "-o", help="Output YAML file ('-': stdout)."),
    leaves: int = typer.Option(3, "--leaves", help="Leaf bridges."),
    nodes_per_leaf: int = typer.Option(2, "--nodes-per-leaf", help="Namespaces per leaf bridge."),
    link_rate: str = typer.Option("400 Mbit/s", "--link-rate", help="Rate of every host veth (as `lab up --link-rate`: "
                                  "400mbit, 1gbit; none = unshaped)."),
    uplink_rate: Optional[str] = typer.Option(None, "--uplink-rate", help="Leaf-spine veth rate (default: unshaped, "
                                              "non-blocking)."),
    ranks_per_node: int = typer.Option(1, "--ranks-per-node", help="gloo ranks in each namespace."),
) -> None:
    """Write a generated topology (today: the fabric lab's) as YAML."""
    from fabricbench.topology.lab import lab_topology
    from fabricbench.topology.load import dump_topology

    if kind != "lab":
        raise UsageError(f"topo generate {kind!r}: choose lab")
    if ranks_per_node < 1:
        raise UsageError("--ranks-per-node must be 1 or more")
    text = dump_topology(lab_topology(leaves, nodes_per_leaf, link_rate, uplink_rate, ranks_per_node))
    if out == "-":
        typer.echo(text, nl=False)
    else:
        from fabricbench.results.io import atomic_write_text

        atomic_write_text(out, text)
        typer.echo(f"wrote {out}")


@topo_app.command("discover")
def discover_cmd(
    out: str = typer.Option("-", "--out", "-o", help="Topology YAML to write ('-': stdout)."),
    nvidia_smi_topo: Optional[Path] = typer.Option(None, "--nvidia-smi-topo", help="Saved `nvidia-smi topo -m` output."),
    nccl_xml: Optional[Path] = typer.Option(None, "--nccl-xml", help="NCCL topology XML (NCCL_TOPO_DUMP_FILE)."),
    slurm_topology: Optional[Path] = typer.Option(None, "--slurm-topology", help="Slurm topology.conf."),
    ibnetdiscover: Optional[Path] = typer.Option(None, "--ibnetdiscover", help="Saved `ibnetdiscover` output."),
    link_state: Optional[Path] = typer.Option(None, "--link-state", help="Saved `ibstat`/`ibstatus`/`ibv_devinfo -v` "
                                              "output or a copied sysfs tree: NIC speeds and link layers."),
    sysfs_root: Optional[Path] = typer.Option(None, "--sysfs-root", help="Read /sys from here instead of / (tests, "
                                              "copies taken on another machine)."),
    local: bool = typer.Option(True, "--local/--no-local", help="Also run nvidia-smi / NVML / read /sys here."),
    name: str = typer.Option("discovered", "--name", help="Name of the topology written."),
    link_rate: Optional[str] = typer.Option(None, "--link-rate", help="Fabric link rate when no source gives one."),
) -> None:
    """Build a topology from tool outputs (live or saved) and say what could not be read."""
    import re

    from fabricbench.errors import UsageError
    from fabricbench.topology.discover import discover
    from fabricbench.topology.load import dump_topology

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,99}", name):  # it goes into the file's comment header
        raise UsageError(f"--name {name!r}: letters, digits, '.', '_', '-' and spaces only (at most 100)")
    topo, report = discover(nvidia_smi_topo=nvidia_smi_topo, nccl_xml=nccl_xml, slurm_topology=slurm_topology,
                            ibnetdiscover=ibnetdiscover, sysfs_root=sysfs_root, local=local, name=name,
                            link_rate=link_rate, link_state=link_state)
    text = dump_topology(topo)
    for line in report:
        typer.echo(f"discover: {line}", err=True)
    if out == "-":
        typer.echo(text, nl=False)
    else:
        from fabricbench.results.io import atomic_write_text

        atomic_write_text(out, text)
        typer.echo(f"wrote {out}", err=True)


def standalone_main(argv: list[str] | None = None) -> None:
    """`python -m fabricbench.topology topo ...`: the same commands and error handling as `fabricbench topo ...`,
    without importing the other areas (useful while one of them is broken, and for tests of this area)."""
    from fabricbench.console import new_app, run_app

    root = new_app("fabricbench (topology area only).")

    @root.callback()
    def _root() -> None:
        """fabricbench (topology area only)."""

    register(root)
    run_app(root, argv)
