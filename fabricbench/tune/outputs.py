"""Everything `tune` writes into its directory, and the environment a tuning directory gives the ranks.

- `ompi-coll-rules.conf` + `ompi-mca.env`: Open MPI coll tuned rules and the MCA parameters that enable them.
- `nccl_tuner.conf`: NCCL example-tuner CSV (read by NCCL's example plugin and by ours in nccl_tuner/).
- `nccl.env`: only knobs NCCL does not call debug-only, each with the measured reason.
- `tuning.parquet`: every measurement; `tuning.json`: decisions, plan and provenance (read by verify / run).
- `report.md`, `report.html`: speed-up per op x size with intervals, busbw vs size default vs tuned.
"""

from __future__ import annotations

import math
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fabricbench.results.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from fabricbench.tune import knobs, nccl_conf, ompi_rules
from fabricbench.tune.stats import RatioCI

RULES_FILE = "ompi-coll-rules.conf"
MCA_FILE = "ompi-mca.env"
TUNER_CONF = "nccl_tuner.conf"
NCCL_ENV = "nccl.env"
JSON_FILE = "tuning.json"
PARQUET = "tuning.parquet"
PLUGIN_NAME = "libnccl-tuner-fabricbench.so"


@dataclass
class Decision:
    op: str
    size_bytes: int
    choice: str  # candidate name ('default' = the library's own choice)
    resources: dict
    group: str
    verdict: str = ""
    kept: bool = True
    default_us: float = math.nan
    tuned_us: float = math.nan
    default_busbw: float = math.nan
    tuned_busbw: float = math.nan
    ci: RatioCI | None = None

    @property
    def effective(self) -> str:
        """What the written configuration does at this size."""
        return self.choice if self.kept else "default"

    def summary(self) -> str:
        ci = f"speed-up {self.ci.text()}" if self.ci and self.ci.pairs else ""
        return f"{self.verdict}{'; ' + ci if ci else ''}"

    def as_dict(self) -> dict:
        return {"op": self.op, "size_bytes": self.size_bytes, "choice": self.choice, "effective": self.effective,
                "resources": self.resources, "verdict": self.verdict, "kept": self.kept,
                "default_us": self.default_us, "tuned_us": self.tuned_us, "default_busbw_gbps": self.default_busbw,
                "tuned_busbw_gbps": self.tuned_busbw,
                "speedup": self.ci.speedup if self.ci else None, "ci_low": self.ci.low if self.ci else None,
                "ci_high": self.ci.high if self.ci else None, "pairs": self.ci.pairs if self.ci else 0}


# -- size ranges ------------------------------------------------------------------------------------------------
def ranges(decisions: list[Decision], use_effective: bool) -> list[tuple[int, int, Decision]]:
    """Measured sizes -> contiguous byte ranges: size i covers [size i, size i+1 - 1]; the first starts at 0 and
    the last runs to the end. Neighbours with the same choice merge."""
    ds = sorted(decisions, key=lambda d: d.size_bytes)
    out: list[tuple[int, int, Decision]] = []
    for i, d in enumerate(ds):
        lo = 0 if i == 0 else d.size_bytes
        hi = ds[i + 1].size_bytes - 1 if i + 1 < len(ds) else nccl_conf.MAX_BYTES
        key = d.effective if use_effective else d.choice
        if out and (out[-1][2].effective if use_effective else out[-1][2].choice) == key:
            out[-1] = (out[-1][0], hi, out[-1][2])
        else:
            out.append((lo, hi, d))
    return out


# -- Open MPI ---------------------------------------------------------------------------------------------------
def ompi_rules_for(decisions: list[Decision], nranks: int, use_effective: bool = True) -> ompi_rules.Rules:
    rules: ompi_rules.Rules = {}
    by_op: dict[str, list[Decision]] = {}
    for d in decisions:
        by_op.setdefault(d.op, []).append(d)
    for op, ds in by_op.items():
        coll = knobs.OMPI_COLLS[op]
        msgs = []
        for lo, _hi, d in ranges(ds, use_effective):
            chosen = d.effective if use_effective else d.choice
            alg = 0 if chosen == "default" else int(d.resources.get("algorithm", 0))
            seg = 0 if chosen == "default" else int(d.resources.get("segsize", 0))
            msgs.append(ompi_rules.MsgRule(lo, alg, 0, seg))
        if any(m.algorithm for m in msgs):
            rules[coll.rule_id] = {nranks: msgs}
    return rules


def mca_env(rules_path: Path) -> dict[str, str]:
    return {"OMPI_MCA_coll_tuned_use_dynamic_rules": "1",
            "OMPI_MCA_coll_tuned_dynamic_rules_filename": str(rules_path.resolve())}


def _rules_names() -> dict[int, str]:
    return {c.rule_id: c.stem for c in knobs.OMPI_COLLS.values()}


# -- NCCL -------------------------------------------------------------------------------------------------------
def nccl_rules_for(decisions: list[Decision], nnodes: int, nranks: int) -> list[nccl_conf.TunerRule]:
    rules = []
    by_op: dict[str, list[Decision]] = {}
    for d in decisions:
        by_op.setdefault(d.op, []).append(d)
    for op, ds in by_op.items():
        coll = knobs.NCCL_COLL[op][0]
        for lo, hi, d in ranges(ds, True):
            if d.effective == "default" or "algo" not in d.resources:
                continue
            ch = d.resources.get("channels") or -1
            why = f"{d.op} {d.size_bytes} B: {d.ci.text()}" if d.ci else ""
            rules.append(nccl_conf.TunerRule(coll, lo, hi, d.resources["algo"], d.resources["proto"], int(ch),
                                             nnodes, nranks, -1, -1, comment=why))
    return rules


def plugin_path() -> Path | None:
    """Our tuner plugin when it has been built (make -C nccl_tuner), else None."""
    env = os.environ.get("FABRICBENCH_TUNER_PLUGIN")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "nccl_tuner" / PLUGIN_NAME)
    return next((p for p in candidates if p.is_file()), None)


def tuned_env_for(space, decisions: list[Decision], staging: Path, context: dict) -> tuple[dict | None, str]:
    """The environment that applies `decisions` the way the written files will (for confirmation)."""
    staging.mkdir(parents=True, exist_ok=True)
    nranks, nnodes = int(context.get("nranks", 2)), int(context.get("nnodes", 1))
    if space.backend == "mpi":
        path = staging / f"{space.op}-{RULES_FILE}"
        atomic_write_text(path, ompi_rules.render(ompi_rules_for(decisions, nranks, use_effective=False), _rules_names()))
        return mca_env(path), ""
    env: dict[str, str] = {}
    knob_wins = [d for d in decisions if "knob" in d.resources]
    for d in knob_wins:
        env[f"NCCL_{d.resources['knob']}"] = str(d.resources["value"])
    if len({d.choice for d in knob_wins}) > 1:
        return None, "different NCCL system knobs won at different sizes; tune them one size range at a time"
    algo = [d for d in decisions if "algo" in d.resources]
    if algo:
        plugin = plugin_path()
        if plugin is None:
            return None, "algorithm/protocol choices need the tuner plugin: run make -C nccl_tuner"
        path = staging / f"{space.op}-{TUNER_CONF}"
        atomic_write_text(path, nccl_conf.render(nccl_rules_for(decisions, nnodes, nranks)))
        env.update(NCCL_TUNER_PLUGIN=str(plugin), NCCL_TUNER_CONFIG_FILE=str(path.resolve()))
    return env, ""


# -- applying a tuning directory --------------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("export "):
            line = line[len("export "):]
        if "=" in line:
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip("'\"")
    return env


def tuning_env(directory: Path) -> dict[str, str]:
    """What `fabricbench run --tuning DIR` adds to the ranks' environment."""
    from fabricbench.errors import UsageError

    directory = Path(directory)
    if not (directory / JSON_FILE).exists():
        raise UsageError(f"--tuning {directory}: not a tuning directory (no {JSON_FILE}); run 'fabricbench tune' first")
    env: dict[str, str] = {}
    if (directory / NCCL_ENV).exists():
        env.update(read_env_file(directory / NCCL_ENV))
    if (directory / MCA_FILE).exists():
        mca = read_env_file(directory / MCA_FILE)
        rules = mca.get("OMPI_MCA_coll_tuned_dynamic_rules_filename")
        if rules and not Path(rules).exists() and (directory / RULES_FILE).exists():
            mca["OMPI_MCA_coll_tuned_dynamic_rules_filename"] = str((directory / RULES_FILE).resolve())
        env.update(mca)
    conf = directory / TUNER_CONF
    if conf.exists() and nccl_conf.parse(conf.read_text()):
        env["NCCL_TUNER_CONFIG_FILE"] = str(conf.resolve())
        plugin = plugin_path()
        if plugin is not None:
            env.setdefault("NCCL_TUNER_PLUGIN", str(plugin))
    return env


def _debug_only_not_written(results) -> list[dict]:
    """Resource values the search chose that NCCL documents as debug-only: recorded here and in the report,
    never written to nccl.env and not part of the confirmed (written) configuration."""
    out = []
    for r in results:
        axes = getattr(r.space, "resource_axes", {})
        for d in r.decisions:
            for name, value in d.resources.items():
                axis = axes.get(name)
                if axis is not None and axis.debug_only and not axis.written and r.space.backend == "nccl":
                    out.append({"op": d.op, "size_bytes": d.size_bytes, "choice": d.choice, "knob": name,
                                "env": {e: str(value) for e in axis.envs}})
    return out


# -- writing everything -----------------------------------------------------------------------------------------
def measurements_frame(results) -> pd.DataFrame:
    """Every sample of every op (results: objects with .op and .ledger.samples, or (op, [Sample]) pairs)."""
    rows = []
    for r in results:
        op, samples = (r.op, r.ledger.samples) if hasattr(r, "ledger") else r
        for s in samples:
            base = {"op": op, "phase": s.phase, "round": s.round, "candidate": s.candidate, "status": s.status,
                    "reason": s.reason, "nwrong": s.nwrong, "wall_s": s.wall_s, "run_dir": s.run_dir, "retried": s.retried}
            if not s.times_us:
                rows.append({**base, "size_bytes": None, "time_us": None, "busbw_gbps": None})
            for size, t in sorted(s.times_us.items()):
                rows.append({**base, "size_bytes": size, "time_us": t, "busbw_gbps": s.busbw_gbps.get(size)})
    frame = pd.DataFrame(rows)
    return frame.astype({"size_bytes": "Int64", "round": "Int64", "nwrong": "Int64"}) if len(frame) else frame


def provenance(context: dict, opts) -> dict:
    run = context.get("run_json", {})
    return {"system": {"launcher_host": socket.gethostname(), "platform": platform.platform(),
                       "cpus": os.cpu_count()},
            "topology": {"hosts": run.get("hosts"), "nnodes": context.get("nnodes"), "nranks": context.get("nranks"),
                         "ranks": [{k: r.get(k) for k in ("rank", "host", "local_rank", "gpu")}
                                   for r in run.get("ranks", [])]},
            "versions": run.get("versions", {}), "env": run.get("env"), "backend": opts.spec.backend,
            "nccl_conf_files": run.get("nccl_conf_files")}


def write_outputs(opts, results, context: dict, echo) -> None:
    from fabricbench.tune.report import render_html, render_md

    out = opts.out
    decisions = [d for r in results for d in r.decisions]
    nranks, nnodes = int(context.get("nranks", 2)), int(context.get("nnodes", 1))
    prov = provenance(context, opts)
    stamp = (f"fabricbench tune, {prov['backend']}, {nranks} ranks on {nnodes} node(s) "
             f"({', '.join(prov['topology']['hosts'] or [])}); versions: "
             + ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if k in ("mpi", "nccl", "torch", "fabricbench")))
    frame = measurements_frame(results)
    if len(frame):
        atomic_write_bytes(out / PARQUET, frame.to_parquet(index=False))
    if opts.spec.backend == "mpi":
        rules = ompi_rules_for(decisions, nranks)
        atomic_write_text(out / RULES_FILE, ompi_rules.render(rules, _rules_names(), [stamp,
                          "Only sizes whose speed-up held over interleaved repeats choose an algorithm; 0 = Open MPI's own decision."]))
        env = mca_env(out / RULES_FILE)
        atomic_write_text(out / MCA_FILE, "# Enable the rules: export these, or pass them to mpirun as\n"
                          f"#   mpirun --mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_dynamic_rules_filename {env['OMPI_MCA_coll_tuned_dynamic_rules_filename']} ...\n"
                          + "".join(f"{k}={v}\n" for k, v in env.items()))
    else:
        rules = nccl_rules_for(decisions, nnodes, nranks)
        atomic_write_text(out / TUNER_CONF, nccl_conf.render(rules, [stamp, "Load with NCCL_TUNER_PLUGIN=<libnccl-tuner-fabricbench.so or NCCL's example plugin> "
                                                               f"NCCL_TUNER_CONFIG_FILE={(out / TUNER_CONF).resolve()}"]))
        lines = [f"# {stamp}", "# Only knobs NCCL does not list as debug-only, each kept because it measured faster."]
        debug_wins = []
        for d in decisions:
            if d.kept and "knob" in d.resources:
                knob = next(k for k in knobs.NCCL_KNOBS if k.name == d.resources["knob"])
                if knob.debug_only:
                    debug_wins.append(d)
                    continue
                lines.append(f"# {d.op} {d.size_bytes} B: {d.ci.text() if d.ci else ''}")
                lines.append(f"{knob.env}={d.resources['value']}")
        context["debug_only_wins"] = [x.as_dict() for x in debug_wins]
        atomic_write_text(out / NCCL_ENV, "\n".join(dict.fromkeys(lines)) + "\n")
    summary = {
        "command": opts.spec.argv(Path("<out>"))[1:] if not opts.spec.launcher else opts.spec.argv(Path("<out>")),
        "spec": {k: v for k, v in opts.spec.__dict__.items() if k not in ("inject", "python")},
        "mode": "exhaustive" if opts.exhaustive else "halving",
        "provenance": prov,
        "ops": [{"op": r.op, "runs": r.runs, "elapsed_s": r.elapsed_s, "rejected": r.ledger.rejected,
                 "candidates": [c.name for c in r.space.implementations],
                 "resource_stage": r.context.get("resource_stage", [])} for r in results],
        "resources": getattr(opts, "resources", True),
        "debug_only_not_written": _debug_only_not_written(results),
        "decisions": [d.as_dict() for d in decisions],
    }
    atomic_write_json(out / JSON_FILE, summary)
    atomic_write_text(out / "report.md", render_md(summary, results))
    atomic_write_text(out / "report.html", render_html(summary, results))
    echo(f"wrote {out}: tuning.json, tuning.parquet, report.md, report.html, "
         + (f"{RULES_FILE}, {MCA_FILE}" if opts.spec.backend == "mpi" else f"{TUNER_CONF}, {NCCL_ENV}"))
