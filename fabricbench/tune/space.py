"""Candidates per backend and op: the implementation subspace (searched by successive halving) and the
resource axes inside each subspace (coordinate descent)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fabricbench.errors import UsageError
from fabricbench.tune import knobs
from fabricbench.tune.search import Candidate

DEFAULT = "default"


def _cand(name, env=None, group="", resources=None, is_default=False) -> Candidate:
    return Candidate(name, tuple(sorted((env or {}).items())), group, tuple(sorted((resources or {}).items())),
                     is_default)


@dataclass
class Space:
    backend: str
    op: str
    implementations: list[Candidate]  # the default first
    axes: dict[str, dict[str, list]] = field(default_factory=dict)  # group -> resource axis -> ordered values
    start: dict[str, dict[str, object]] = field(default_factory=dict)  # group -> resource starting point

    resource_axes: dict[str, knobs.ResourceAxis] = field(default_factory=dict)  # axis name -> declaration

    def with_resources(self, base: Candidate, point: dict) -> Candidate:
        """The candidate `base` (an implementation) with resource values `point` (same group). Values equal to
        an axis' default (or None) are not set, so the point at the defaults is `base` itself."""
        res = dict(base.resources)
        if self.backend == "mpi":
            alg = int(res["algorithm"])
            seg = int(point.get("segsize") or 0)
            coll = knobs.OMPI_COLLS[self.op]
            name = f"{coll.stem}={coll.algorithms[alg]}" + (f",segsize={seg}" if seg else "")
            return _cand(name, coll.forced_env(alg, seg), base.group, {"algorithm": alg, "segsize": seg})
        env = dict(base.env_dict)
        name = base.name
        for axis_name, value in point.items():
            axis = self.resource_axes[axis_name]
            extra = axis.env_for(value)
            if extra:
                env.update(extra)
                name += f",{axis_name}={value}"
                res[axis_name] = value
        return _cand(name, env, base.group, res)


def ompi_space(op: str, nranks: int) -> Space:
    coll = knobs.OMPI_COLLS.get(op)
    algos = knobs.ompi_algorithms(op, nranks)
    impl = [_cand(DEFAULT, {}, DEFAULT, {"algorithm": 0, "segsize": 0}, is_default=True)]
    axes, start = {}, {}
    for alg, name in algos.items():
        group = f"{coll.stem}={name}"
        impl.append(_cand(group, coll.forced_env(alg), group, {"algorithm": alg, "segsize": 0}))
        if alg in coll.segmented:
            axes[group] = {"segsize": list(knobs.OMPI_SEGSIZES)}
            start[group] = {"segsize": knobs.OMPI_SEGSIZE_AXIS.default}
    return Space("mpi", op, impl, axes, start, {"segsize": knobs.OMPI_SEGSIZE_AXIS})


def nccl_space(op: str, version=None, resources: bool = True) -> Space:
    if op not in knobs.NCCL_COLL:
        raise UsageError(f"NCCL's tuner covers {', '.join(knobs.NCCL_COLL)}; '{op}' has no algorithm choice")
    impl = [_cand(DEFAULT, {}, DEFAULT, {}, is_default=True)]
    axes, start = {}, {}
    raxes = knobs.nccl_resource_axes(version) if resources else []
    for algo in knobs.nccl_algos(op, version):
        for proto in knobs.NCCL_PROTOS:
            group = f"{algo}/{proto}"
            env = {"NCCL_ALGO": knobs.NCCL_ALGO_ENV[algo], "NCCL_PROTO": knobs.NCCL_PROTO_ENV[proto]}
            impl.append(_cand(group, env, group, {"algo": algo, "proto": proto}))
            if raxes:
                axes[group] = {a.name: list(a.values) for a in raxes}
                start[group] = {a.name: a.default for a in raxes}
    # System knobs NCCL reads in this version, each tried alone on top of the defaults.
    for knob in knobs.nccl_knobs(version):
        if knob.kind != "system":
            continue
        for value in knob.values:
            name = f"{knob.env}={value}"
            impl.append(_cand(name, {knob.env: str(value)}, name, {"knob": knob.name, "value": value}))
    return Space("nccl", op, impl, axes, start, {a.name: a for a in raxes})


def build_space(backend: str, op: str, nranks: int, nccl_version=None) -> Space:
    why = knobs.nothing_to_tune(backend)
    if why:
        raise UsageError(why)
    if backend == "mpi":
        return ompi_space(op, nranks)
    if backend == "nccl":
        return nccl_space(op, nccl_version)
    raise UsageError(f"--backend {backend}: tune supports nccl (GPUs) and mpi (Open MPI coll tuned)")
