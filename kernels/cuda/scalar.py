"""The CUDA backend's scalar code: its dialect of ``scalar_ops``, its overrides, the RNG's lines.

Override: a cast from bool picks one of the two values (1 or 0) with a conditional expression.
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Node
from graphc.kernels import scalar_ops
from graphc.kernels.scalar_ops import Dialect, elementwise_ops

from .source import NUMBA_TYPES, literal


def _cast_to(dtype: str, expr: str, src_dtype: str) -> str:
    if dtype == "bool":
        return f"({expr} != 0)"
    if src_dtype == "bool":
        return f"({NUMBA_TYPES[dtype]}(1) if {expr} else {NUMBA_TYPES[dtype]}(0))"
    return f"{NUMBA_TYPES[dtype]}({expr})"


def _wrap(dtype: str, expr: str) -> str:
    # Every numeric result is cast back to its dtype: on the GPU this keeps f32 math in f32 (a
    # bare float literal would promote to f64); in the simulator it keeps NumPy scalar semantics.
    return expr if dtype == "bool" else f"{NUMBA_TYPES[dtype]}({expr})"


CUDA = Dialect(name="cuda", type_name=NUMBA_TYPES.__getitem__, literal=literal, wrap=_wrap)
CUDA_SCALAR_OVERRIDES: dict[str, Callable[..., str | None]] = {
    "cast": lambda d, node, a: _cast_to(node.outputs[0].dtype, a[0], node.inputs[0].dtype),
}
# Every op a kernel computes inline (elementwise ops, const, rng_uniform).
SCALAR_OPS = frozenset(elementwise_ops(CUDA_SCALAR_OVERRIDES))


def scalar_expr(node: Node, args: list[str]) -> str:
    """Source of one elementwise op applied to scalar variables ``args``."""
    return scalar_ops.scalar_expr(CUDA, node, args, CUDA_SCALAR_OVERRIDES)


M32 = "uint64(0xFFFFFFFF)"


def hash32_lines(dst: str, src: str) -> list[str]:
    """lowbias32 on a uint64 holding a 32-bit value (``scalar_ops.hash32_lines``)."""
    return scalar_ops.hash32_lines(dst, src, "uint64")


def rng_key_lines(key: str, offset_expr: str, seed: int) -> list[str]:
    """Lines computing rng_uniform's per-call key from the i64 offset (reference.rng_key)."""
    t = f"{key}_t"
    lines = [
        f"{t} = int64({offset_expr})",
        f"{key}_lo = uint64({t} & 0xFFFFFFFF)",
        f"{key}_hi = uint64(({t} >> 32) & 0xFFFFFFFF)",
    ]
    lines += hash32_lines(f"{key}_h", f"{key}_hi")
    lines += hash32_lines(f"{key}_h", f"({key}_lo ^ {key}_h)")
    lines += hash32_lines(key, f"(uint64({seed & 0xFFFFFFFF}) ^ {key}_h)")
    return lines


def rng_value_lines(dst: str, key: str, index_expr: str, dtype: str) -> list[str]:
    """Lines computing element ``index_expr`` of rng_uniform: top 24 hash bits times 2**-24."""
    h = f"{dst}_h"
    lines = hash32_lines(h, f"((uint64({index_expr}) & {M32}) ^ {key})")
    value = f"float64({h} >> uint64({32 - scalar_ops.UNIFORM_BITS})) * {scalar_ops.UNIFORM_SCALE!r}"
    lines.append(f"{dst} = {_cast_to(dtype, value, 'f64')}")
    return lines
