"""Communicator split as nccl-tests does it (`NCCL_TESTS_SPLIT`, `NCCL_TESTS_SPLIT_MASK`).

Each rank gets a colour from its rank; ranks of one colour form a group, and every group runs the same
operation at the same time. `MOD 8` (or `%8`) on nodes of 8 GPUs gives 8 groups of one GPU per node: 8
single-rail inter-node tests in parallel. Operators: AND (&), OR (|), MOD (%), DIV (/); values decimal or 0x hex.
"""

from __future__ import annotations

import re

from fabricbench.errors import UsageError

_OPS = {"AND": "AND", "&": "AND", "OR": "OR", "|": "OR", "MOD": "MOD", "%": "MOD", "DIV": "DIV", "/": "DIV"}
_SPEC = re.compile(r"^\s*(AND|OR|MOD|DIV|&|\||%|/)\s*(0x[0-9a-f]+|\d+)\s*$", re.IGNORECASE)


def parse_split(spec: str) -> tuple[str, int]:
    match = _SPEC.match(spec)
    if not match:
        raise UsageError(f"--split '{spec}': expected an operator and a number as NCCL_TESTS_SPLIT takes them, "
                         "for example 'MOD 8' (one GPU per node of 8), 'DIV 8', 'AND 0x7' or '%8'")
    op, raw = _OPS[match.group(1).upper()], match.group(2)
    value = int(raw, 16) if raw.lower().startswith("0x") else int(raw)
    if op in ("MOD", "DIV") and value == 0:
        raise UsageError(f"--split '{spec}': {op} by zero")
    return op, value


def split_from_env(env) -> str | None:
    """nccl-tests' variables, so an existing job script's split carries over. As in nccl-tests (src/common.cu),
    NCCL_TESTS_SPLIT_MASK wins over NCCL_TESTS_SPLIT and is hexadecimal (strtoul base 16): '10' is 0x10."""
    mask = env.get("NCCL_TESTS_SPLIT_MASK")
    if mask:
        mask = mask.strip()
        if not re.fullmatch(r"(0[xX])?[0-9a-fA-F]+", mask):
            raise UsageError(f"NCCL_TESTS_SPLIT_MASK='{mask}' is not a hexadecimal mask; nccl-tests reads it in "
                             "base 16, e.g. NCCL_TESTS_SPLIT_MASK=0x7")
        return f"AND 0x{mask[2:] if mask.lower().startswith('0x') else mask}"
    if env.get("NCCL_TESTS_SPLIT"):
        return env["NCCL_TESTS_SPLIT"]
    return None


def color_of(rank: int, spec: str) -> int:
    op, value = parse_split(spec)
    return {"AND": rank & value, "OR": rank | value, "MOD": rank % value, "DIV": rank // value}[op]


def groups_of(nranks: int, spec: str) -> dict[int, list[int]]:
    """colour -> the world ranks in that group, in rank order."""
    groups: dict[int, list[int]] = {}
    for r in range(nranks):
        groups.setdefault(color_of(r, spec), []).append(r)
    return dict(sorted(groups.items()))
