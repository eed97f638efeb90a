"""Element types by their nccl-tests names, with what each backend needs to know about them.

`exact_limit` is the largest integer the type holds exactly (floats: 2**(mantissa bits + 1)); the check
patterns keep every partial result within it so that any reduction order gives the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fabricbench.errors import UsageError


@dataclass(frozen=True)
class DType:
    name: str  # nccl-tests name, as printed in the 'type' column
    itemsize: int
    kind: str  # 'float' | 'int' | 'uint'
    exact_limit: int
    host: str  # numpy dtype used on the host; bfloat16 travels as its raw uint16 bits
    bits: str  # unsigned numpy dtype of the same width, for bit-exact comparison

    @property
    def signed(self) -> bool:
        return self.kind != "uint"

    @property
    def host_dtype(self) -> np.dtype:
        return np.dtype(self.host)

    def to_host(self, values: np.ndarray) -> np.ndarray:
        """Exact integer values (int64/float64 array) -> the host array whose bits the device should hold."""
        if self.name == "bfloat16":
            # Every value we generate is exactly representable, so truncating float32 to its top 16 bits is exact.
            return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return values.astype(self.host_dtype)


_TYPES = [
    DType("int8", 1, "int", 127, "int8", "uint8"),
    DType("uint8", 1, "uint", 255, "uint8", "uint8"),
    DType("int32", 4, "int", 2**31 - 1, "int32", "uint32"),
    DType("uint32", 4, "uint", 2**32 - 1, "uint32", "uint32"),
    DType("int64", 8, "int", 2**63 - 1, "int64", "uint64"),
    DType("uint64", 8, "uint", 2**64 - 1, "uint64", "uint64"),
    DType("half", 2, "float", 2**11, "float16", "uint16"),
    DType("float", 4, "float", 2**24, "float32", "uint32"),
    DType("double", 8, "float", 2**53, "float64", "uint64"),
    DType("bfloat16", 2, "float", 2**8, "uint16", "uint16"),
]
DTYPES: dict[str, DType] = {t.name: t for t in _TYPES}

_ALIASES = {
    "float32": "float", "fp32": "float", "f32": "float",
    "float16": "half", "fp16": "half", "f16": "half",
    "bf16": "bfloat16",
    "float64": "double", "fp64": "double", "f64": "double",
    "char": "int8", "int": "int32", "uint": "uint32",
}

REDOPS = ("sum", "prod", "max", "min", "avg")


def get_dtype(name: str) -> DType:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DTYPES:
        raise UsageError(f"unknown dtype '{name}'; choose one of {', '.join(DTYPES)} "
                         "(aliases: float32, fp16, bf16, float64, ...)")
    return DTYPES[key]


def get_redop(name: str) -> str:
    key = name.lower()
    if key not in REDOPS:
        raise UsageError(f"unknown reduction op '{name}'; choose one of {', '.join(REDOPS)}")
    return key
