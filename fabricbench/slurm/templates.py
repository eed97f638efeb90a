"""sbatch scripts from the templates in `slurm/`, rendered with real quoting.

Two kinds of text reach a script, and each has its own rule:
- shell words (paths, commands, environment values) go through `shlex.quote`, so a value with spaces,
  quotes, `$(...)`, backticks or newlines is one literal word and can never run anything;
- `#SBATCH` lines are parsed by sbatch, not by the shell, so their values are validated against the
  characters Slurm allows (node names, partitions, accounts, time limits, ...) and anything else is refused
  with a clear error; free-form values (`--sbatch-arg`, the output path) may hold spaces but never a newline,
  a double quote or a control character, and are written inside double quotes.

Templates use `{{NAME}}` placeholders; every placeholder must be filled, and a filled value can never create a
new placeholder or a new line outside of what this module wrote itself.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fabricbench.errors import UsageError

TEMPLATE_ENV = "FABRICBENCH_SLURM_TEMPLATES"  # a directory with run.sbatch, pairwise.sbatch, rail-sweep.sbatch, tune.sbatch
TEMPLATES = ("run", "pairwise", "rail-sweep", "tune")

# Slurm's rules, a little stricter than slurmctld (which also accepts some characters that break tools):
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a host name as in NodeName
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")  # partition, account, qos, reservation, job name
_FEATURES = re.compile(r"^[A-Za-z0-9_.\-&|,*\[\]():!]{1,512}$")  # --constraint expressions
_TIME = re.compile(r"^(?:UNLIMITED|INFINITE|\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}"
                   r"|\d+-\d+:\d{1,2}:\d{1,2})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SBATCH_OPT = re.compile(r"^--?[A-Za-z][A-Za-z0-9-]*$")
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def template_dir() -> Path:
    """`$FABRICBENCH_SLURM_TEMPLATES`, else the `slurm/` directory of this checkout, else the package's own
    `fabricbench/templates/` (where an installed wheel would carry them as package data)."""
    override = os.environ.get(TEMPLATE_ENV)
    candidates = [Path(override)] if override else []
    candidates.append(Path(__file__).resolve().parents[2] / "slurm")
    candidates.append(Path(__file__).resolve().parents[1] / "templates")
    for path in candidates:
        if (path / "run.sbatch").is_file():
            return path
    raise UsageError(f"the sbatch templates (run.sbatch, pairwise.sbatch) were not found in "
                     f"{', '.join(map(str, candidates))}; set {TEMPLATE_ENV} to the directory that holds them")


def load_template(name: str) -> str:
    if name not in TEMPLATES:
        raise UsageError(f"unknown sbatch template '{name}'; choose one of {', '.join(TEMPLATES)}")
    return (template_dir() / f"{name}.sbatch").read_text()


# -- validation -----------------------------------------------------------------------------------------------
def _show(value: str) -> str:
    return repr(value) if len(value) < 80 else repr(value[:77] + "...")


def check_node_name(name: str, option: str = "--nodelist") -> str:
    if not _NODE.match(name):
        raise UsageError(f"{option}: {_show(name)} is not a valid Slurm node name (letters, digits, '.', '_', "
                         "'-'; starting with a letter or digit)")
    return name


def expand_nodes(spec: str, option: str = "--nodelist") -> list[str]:
    """A Slurm host list ('node[01-04],gpu7') -> names, each validated; expanded with python-hostlist."""
    import hostlist

    if _CONTROL.search(spec) or not spec.strip():
        raise UsageError(f"{option}: {_show(spec)} is not a Slurm node list")
    try:
        names = hostlist.expand_hostlist(spec.strip())
    except hostlist.BadHostlist as err:
        raise UsageError(f"{option}: cannot expand node list {_show(spec)} ({err})") from None
    if not names:
        raise UsageError(f"{option}: node list {_show(spec)} is empty")
    for name in names:
        check_node_name(name, option)
    return names


def compress_nodes(names: Sequence[str]) -> str:
    import hostlist

    return hostlist.collect_hostlist(list(names))


def check_name(value: str, option: str) -> str:
    if not _NAME.match(value):
        raise UsageError(f"{option}: {_show(value)} is not a valid Slurm name (letters, digits, '_', '.', '+', "
                         "'-')")
    return value


def check_constraint(value: str) -> str:
    if not _FEATURES.match(value):
        raise UsageError(f"--constraint: {_show(value)} is not a Slurm feature expression (features joined "
                         "by & | , with optional [ ] ( ) * counts)")
    return value


def check_time(value: str) -> str:
    if not _TIME.match(value.strip()):
        raise UsageError(f"--time: {_show(value)} is not a Slurm time limit (minutes, MM:SS, HH:MM:SS, "
                         "D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED)")
    return value.strip()


def parse_env(items: Iterable[str]) -> list[tuple[str, str]]:
    """`--env NAME=VALUE` items: NAME must be a shell variable name; VALUE is anything (it is quoted)."""
    out: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--env {_show(item)}: expected NAME=VALUE (e.g. --env NCCL_IB_HCA=mlx5_0)")
        if not _ENV_NAME.match(name):
            raise UsageError(f"--env {_show(item)}: {_show(name)} is not a valid environment variable name "
                             "(letters, digits and '_', not starting with a digit)")
        if "\x00" in value:
            raise UsageError(f"--env {name}: the value contains a NUL byte, which no environment can hold")
        out.append((name, value))
    return out


def check_free_value(value: str, what: str) -> str:
    """A value written inside double quotes on an #SBATCH line: no newline, quote, backslash or control char."""
    if _CONTROL.search(value) or '"' in value or "\\" in value:
        raise UsageError(f"{what}: {_show(value)} cannot go on an #SBATCH line (it holds a newline, a double "
                         "quote, a backslash or a control character)")
    return value


# sbatch options fabricbench sets or depends on. sbatch (getopt_long) accepts any unambiguous prefix of a
# long option (--outp = --output) and short options with the value attached (-ofile): both are matched.
_RESERVED_LONG = ("output", "error", "wrap", "parsable", "wait", "test-only")
_RESERVED_SHORT = set("oeW")


def _reserved_sbatch_option(opt: str) -> bool:
    if opt.startswith("--"):
        name = opt[2:]
        return any(full.startswith(name) for full in _RESERVED_LONG)
    return len(opt) != 2 or opt[1] in _RESERVED_SHORT  # -X only; grouped or attached (-Qofile) refused


def parse_sbatch_arg(item: str) -> tuple[str, str | None]:
    """`--sbatch-arg=--mail-type=END` or `--sbatch-arg '--comment=a b'` -> ('--mail-type', 'END')."""
    opt, sep, value = item.partition("=")
    if not _SBATCH_OPT.match(opt):
        raise UsageError(f"--sbatch-arg {_show(item)}: expected an sbatch option such as --mail-type=END "
                         "(one option per --sbatch-arg)")
    if _reserved_sbatch_option(opt):
        raise UsageError(f"--sbatch-arg {_show(opt)}: fabricbench sets this itself (--output, --error, --wrap, "
                         "--parsable, --wait; or their abbreviations and -o/-e/-W); it cannot be changed here")
    if sep:
        check_free_value(value, f"--sbatch-arg {opt}")
        return opt, value
    return opt, None


def sbatch_path(path: str, what: str = "--out") -> str:
    """A path for #SBATCH --output: validated, and '%' escaped (sbatch expands %j, %N, ... in file names)."""
    check_free_value(path, what)
    return path.replace("%", "%%")


# -- the directives -------------------------------------------------------------------------------------------
@dataclass
class JobSpec:
    """What goes into the #SBATCH lines of any template."""

    job_name: str = "fabricbench"
    nodes: int | None = None
    nodelist: list[str] | None = None
    exclude: list[str] | None = None
    ntasks_per_node: int = 1
    gpus_per_node: int | None = None
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    qos: str | None = None
    reservation: str | None = None
    constraint: str | None = None
    exclusive: bool = False
    no_kill: bool = False
    output_dir: str | None = None  # the batch script's output goes to <output_dir>/slurm-<jobid>.out
    extra: list[tuple[str, str | None]] = field(default_factory=list)

    def validate(self) -> JobSpec:
        check_name(self.job_name, "--job-name")
        if self.nodes is not None and self.nodes < 1:
            raise UsageError(f"--nodes must be at least 1, got {self.nodes}")
        if self.nodelist and self.nodes is not None and self.nodes < len(self.nodelist):
            raise UsageError(f"--nodes {self.nodes} is fewer than the {len(self.nodelist)} nodes of --nodelist")
        for node in (self.nodelist or []) + (self.exclude or []):
            check_node_name(node)
        if self.ntasks_per_node < 1:
            raise UsageError(f"--ntasks-per-node must be at least 1, got {self.ntasks_per_node}")
        if self.gpus_per_node is not None and self.gpus_per_node < 0:
            raise UsageError(f"--gpus-per-node must be 0 or more, got {self.gpus_per_node}")
        for value, option in ((self.partition, "--partition"), (self.account, "--account"), (self.qos, "--qos"),
                              (self.reservation, "--reservation")):
            if value is not None:
                check_name(value, option)
        if self.constraint is not None:
            check_constraint(self.constraint)
        if self.time is not None:
            self.time = check_time(self.time)
        return self

    def directives(self) -> list[str]:
        self.validate()
        lines = [f"--job-name={self.job_name}"]
        if self.nodes is not None:
            lines.append(f"--nodes={self.nodes}")
        if self.nodelist:
            lines.append(f"--nodelist={compress_nodes(self.nodelist)}")
        if self.exclude:
            lines.append(f"--exclude={compress_nodes(self.exclude)}")
        lines.append(f"--ntasks-per-node={self.ntasks_per_node}")
        if self.gpus_per_node:
            lines.append(f"--gpus-per-node={self.gpus_per_node}")
        for value, option in ((self.partition, "partition"), (self.account, "account"), (self.time, "time"),
                              (self.qos, "qos"), (self.reservation, "reservation"),
                              (self.constraint, "constraint")):
            if value is not None:
                lines.append(f"--{option}={value}")
        if self.exclusive:
            lines.append("--exclusive")
        if self.no_kill:
            lines.append("--no-kill")
        if self.output_dir:
            lines.append(f'--output="{sbatch_path(self.output_dir)}/slurm-%j.out"')
        for opt, value in self.extra:
            lines.append(opt if value is None else f'{opt}="{check_free_value(value, "--sbatch-arg " + opt)}"')
        return ["#SBATCH " + line for line in lines]


def env_lines(env: Sequence[tuple[str, str]]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in parse_env(f"{n}={v}" for n, v in env)]


def shell_words(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill every {{NAME}} once. Values are already quoted; a value that looks like a placeholder stays text."""
    missing = sorted(set(_PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise UsageError(f"sbatch template: no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)

