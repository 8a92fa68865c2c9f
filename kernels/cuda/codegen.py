"""Building blocks of the CUDA code generator: launch sizes, index maps, scalar expressions.

Everything here is string work with no numba import, so kernel sources can be produced (for plan
files, dumps and coverage tests) in a process that has no GPU and no numba-cuda.

Generated kernels never call ``@cuda.jit(device=True)`` helpers: every helper is inlined. That
keeps each kernel self-contained and lets ``check.typecheck`` run numba's CUDA typing and
lowering on it with no driver (device functions need a device to compile against).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from graphc.ir import Graph, Node, Value, broadcast_shapes, to_numpy_dtype
from graphc.kernels.quoting import comment


class Unsupported(Exception):
    """The generator cannot handle this node or body; the caller falls back or reports it."""


# graphc dtype -> numba type name (usable as a cast in kernels and in signature strings).
NUMBA_TYPES = {"f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64", "bool": "boolean"}


def simulator() -> bool:
    """Whether numba's CUDA simulator is (or will be, once numba is imported) enabled."""
    if "numba" in sys.modules:
        from numba import config

        return bool(config.ENABLE_CUDASIM)
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@dataclass(frozen=True)
class LaunchConfig:
    """Launch sizes baked into generated sources."""

    threads: int  # threads per block of elementwise kernels
    max_blocks: int  # grid cap; grid-stride loops cover the rest
    reduce_block: int  # largest block of a row reduction (a power of two)
    mm_threads: int  # matmul block is mm_threads x mm_threads threads
    mm_reg: int  # each matmul thread computes mm_reg x mm_reg outputs
    mm_bk: int  # matmul K-tile depth held in shared memory
    row_thread_max: int  # rows up to this long are reduced by one thread each, not one block


# The simulator runs one Python thread per CUDA thread, so it gets tiny blocks and grids; the
# grid-stride loops keep the kernels correct for any size.
GPU_CONFIG = LaunchConfig(
    threads=256, max_blocks=65535, reduce_block=256, mm_threads=16, mm_reg=4, mm_bk=16, row_thread_max=16
)
SIM_CONFIG = LaunchConfig(
    threads=8, max_blocks=2, reduce_block=8, mm_threads=2, mm_reg=2, mm_bk=4, row_thread_max=8
)


def launch_config() -> LaunchConfig:
    """The launch sizes for the current target (GPU or simulator)."""
    return SIM_CONFIG if simulator() else GPU_CONFIG


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a shape."""
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    """Element strides of a C-contiguous array."""
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return strides[::-1]


def broadcasts_into(shape: Sequence[int], domain: Sequence[int]) -> bool:
    """Whether ``shape`` broadcasts to exactly ``domain`` (NumPy rules, trailing alignment)."""
    if len(shape) > len(domain):
        return False
    try:
        return broadcast_shapes(tuple(shape), tuple(domain)) == tuple(domain)
    except Exception:
        return False


def literal(value: object, dtype: str) -> str:
    """Source text of a scalar constant of a graphc dtype, converted as NumPy would."""
    v = np.asarray(value).astype(to_numpy_dtype(dtype)).item()
    if dtype == "bool":
        return "True" if v else "False"
    if dtype in ("i32", "i64"):
        return f"{NUMBA_TYPES[dtype]}({int(v)})"
    if math.isnan(v):
        text = "math.nan"
    elif math.isinf(v):
        text = "math.inf" if v > 0 else "-math.inf"
    else:
        text = repr(float(v))
    return f"{NUMBA_TYPES[dtype]}({text})"


# ------------------------------------------------------------------ index maps
class IndexCtx:
    """Maps the multi-index of an iteration domain to flat offsets of broadcast operands.

    ``dim_exprs[k]`` computes the domain index along axis k from loop variables; only the axes an
    offset actually needs are declared (``decls``). ``flat`` is the flat offset of an operand whose
    shape equals the domain, when the loop has it for free.
    """

    def __init__(self, domain: Sequence[int], dim_exprs: Sequence[str], flat: str | None, prefix: str):
        self.domain = tuple(domain)
        self.dim_exprs = list(dim_exprs)
        self.flat = flat
        self.prefix = prefix
        self.used: set[int] = set()

    def dim(self, k: int) -> str:
        """The variable holding the domain index along axis k."""
        self.used.add(k)
        return f"{self.prefix}{k}"

    def offset(self, shape: Sequence[int]) -> str:
        """Flat offset into a C-contiguous operand of ``shape`` broadcast over the domain."""
        shape = tuple(shape)
        if not broadcasts_into(shape, self.domain):
            raise Unsupported(f"shape {shape} does not broadcast into {self.domain}")
        if numel(shape) <= 1:
            return "0"
        if shape == self.domain and self.flat is not None:
            return self.flat
        pad = len(self.domain) - len(shape)
        terms = []
        for k, (size, stride) in enumerate(zip(shape, contiguous_strides(shape))):
            if size != 1:
                var = self.dim(pad + k)
                terms.append(var if stride == 1 else f"{var} * {stride}")
        return " + ".join(terms)

    def canonical(self, shape: Sequence[int]) -> str | None:
        """Condition under which this domain point is the one that writes a smaller output."""
        pad = len(self.domain) - len(shape)
        conds = []
        for k, size in enumerate(self.domain):
            own = shape[k - pad] if k >= pad else 1
            # An axis pinned to 0 by the loop (a reduced axis in per-row code) needs no test.
            if own == 1 and size > 1 and self.dim_exprs[k] != "0":
                conds.append(f"{self.dim(k)} == 0")
        return " and ".join(conds) or None

    def decls(self) -> list[str]:
        """Lines that define the axis variables used so far."""
        return [f"{self.prefix}{k} = {self.dim_exprs[k]}" for k in sorted(self.used)]


def decompose(var: str, sizes: Sequence[int]) -> list[str]:
    """Expressions for each axis index of a flat index ``var`` over ``sizes`` (C order)."""
    exprs = []
    for k, size in enumerate(sizes):
        inner = numel(sizes[k + 1 :])
        e = var if inner == 1 else f"({var} // {inner})"
        if k > 0 and size != 1:
            e = f"({e} % {size})"
        elif size == 1:
            e = "0"
        exprs.append(e)
    return exprs


# ------------------------------------------------------------------ scalar expressions
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


_MATH = {"exp", "log", "sqrt", "tanh", "erf", "sin", "cos"}
_COMPARE = {"lt": "<", "le": "<=", "eq": "==", "ne": "!=", "gt": ">", "ge": ">="}
_ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
SCALAR_OPS = (
    _MATH
    | set(_COMPARE)
    | set(_ARITH)
    | {"neg", "abs", "sign", "rsqrt", "reciprocal", "cast", "maximum", "minimum", "where", "broadcast_to"}
)


def scalar_expr(node: Node, args: list[str]) -> str:
    """Source of one pointwise/broadcast op applied to scalar variables ``args``."""
    op, dtype = node.op, node.outputs[0].dtype
    one = literal(1, dtype) if dtype != "bool" else "True"
    if op in _MATH:
        return _wrap(dtype, f"math.{op}({args[0]})")
    if op == "neg":
        return _wrap(dtype, f"-{args[0]}")
    if op == "abs":
        return _wrap(dtype, f"abs({args[0]})")
    if op == "sign":
        a = args[0]
        # Returns the operand itself for 0 and NaN, as NumPy does.
        return f"({one} if {a} > 0 else ({literal(-1, dtype)} if {a} < 0 else {a}))"
    if op == "rsqrt":
        return _wrap(dtype, f"{one} / math.sqrt({args[0]})")
    if op == "reciprocal":
        return _wrap(dtype, f"{one} / {args[0]}")
    if op == "cast":
        return _cast_to(dtype, args[0], node.inputs[0].dtype)
    if op in _ARITH:
        return _wrap(dtype, f"{args[0]} {_ARITH[op]} {args[1]}")
    if op in _COMPARE:
        return f"({args[0]} {_COMPARE[op]} {args[1]})"
    if op in ("maximum", "minimum"):
        a, b = args
        cmp = ">" if op == "maximum" else "<"
        # NaN-propagating like np.maximum/np.minimum (a != a is true only for NaN).
        return f"({a} if ({a} {cmp} {b} or {a} != {a}) else {b})"
    if op == "where":
        return f"({args[1]} if {args[0]} else {args[2]})"
    if op == "broadcast_to":
        return args[0]
    raise Unsupported(f"no scalar form for op {op!r}")


M32 = "uint64(0xFFFFFFFF)"


def hash32_lines(dst: str, src: str) -> list[str]:
    """lowbias32 on a uint64 holding a 32-bit value (kernels/reference.hash32, step by step).

    numba widens uint32 arithmetic to 64 bits, so the products are masked back to 32 bits.
    """
    return [
        f"{dst} = {src} ^ ({src} >> uint64(16))",
        f"{dst} = ({dst} * uint64(0x7FEB352D)) & {M32}",
        f"{dst} = {dst} ^ ({dst} >> uint64(15))",
        f"{dst} = ({dst} * uint64(0x846CA68B)) & {M32}",
        f"{dst} = {dst} ^ ({dst} >> uint64(16))",
    ]


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
    value = f"float64({h} >> uint64(8)) * {1.0 / (1 << 24)!r}"
    lines.append(f"{dst} = {_cast_to(dtype, value, 'f64')}")
    return lines


# ------------------------------------------------------------------ bodies
class Scope:
    """One place in a kernel where body values are computed: an index map, lines, variables."""

    def __init__(self, ctx: IndexCtx, prefix: str, known: dict[Value, str] | None = None):
        self.ctx = ctx
        self.prefix = prefix
        self.lines: list[str] = []
        self.vars: dict[Value, str] = dict(known or {})

    def code(self) -> list[str]:
        """Axis declarations followed by the computed lines."""
        return self.ctx.decls() + self.lines


class BodyEmitter:
    """Emits the scalar code of a body graph's values into scopes, on demand (dead values skipped).

    ``args`` maps body input values to kernel parameter names (flat device arrays).
    """

    def __init__(self, body: Graph, args: dict[Value, str]):
        self.body = body
        self.args = args
        self.producer = body.producers()
        self.index = {n: k for k, n in enumerate(body.nodes)}

    def emit(self, v: Value, scope: Scope) -> str:
        """The variable holding ``v`` at the scope's domain point, emitting its code if needed."""
        if v in scope.vars:
            return scope.vars[v]
        if v in self.args:
            var = f"{scope.prefix}_{self.args[v]}"
            scope.lines.append(f"{var} = {self.args[v]}[{scope.ctx.offset(v.shape)}]")
        else:
            node = self.producer.get(v)
            if node is None:
                raise Unsupported(f"body value %{v.name} has no producer")
            var = f"{scope.prefix}_v{self.index[node]}"
            if node.op == "const":
                scope.lines.append(f"{var} = {literal(node.attrs['value'], v.dtype)}")
            elif node.op == "rng_uniform":
                self._emit_rng(node, var, scope)
            elif node.op in SCALAR_OPS:
                if not broadcasts_into(v.shape, scope.ctx.domain):
                    raise Unsupported(f"{node.op} result {v.shape} exceeds domain {scope.ctx.domain}")
                args = [self.emit(u, scope) for u in node.inputs]
                scope.lines.append(f"{var} = {scalar_expr(node, args)}")
            else:
                raise Unsupported(f"op {node.op!r} cannot be computed inline")
        scope.vars[v] = var
        return var

    def _emit_rng(self, node: Node, var: str, scope: Scope) -> None:
        offset = self.emit(node.inputs[0], scope)
        key = f"{var}_key"
        scope.lines += rng_key_lines(key, offset, int(node.attrs["seed"]))
        # The element index is the flat position within the rng's own shape.
        index = scope.ctx.offset(node.outputs[0].shape)
        scope.lines += rng_value_lines(var, key, index, node.outputs[0].dtype)

    def store(self, pairs: Sequence[tuple[Value, str]], scope: Scope) -> None:
        """Write each value to its flat output array; a smaller output is written by one point.

        Every value is computed (every input loaded) before the first store, so an output that
        shares memory with an input (in-place) cannot clobber an element still to be read.
        """
        for v, _ in pairs:
            self.emit(v, scope)
        for v, array in pairs:
            line = f"{array}[{scope.ctx.offset(v.shape)}] = {scope.vars[v]}"
            cond = scope.ctx.canonical(v.shape)
            if cond:
                scope.lines += [f"if {cond}:", f"    {line}"]
            else:
                scope.lines.append(line)


# ------------------------------------------------------------------ whole kernels
@dataclass
class KernelSource:
    """One generated module: its source text and what the host side needs to launch it.

    The module defines the kernels and ``launch(*inputs, *outputs, *extras[, flag])`` over flat
    (1-D, C-contiguous) device arrays. ``extras`` are constant arrays (body const inputs) the
    host uploads once; ``flag`` names an error (bad index) the kernel may raise via a flag array.
    """

    title: str
    source: str
    kernels: list[tuple[str, str]]  # (kernel function name, numba signature) for PTX/type checks
    extras: list[np.ndarray] = field(default_factory=list)
    flag: str | None = None


def signature(dtypes: Sequence[str]) -> str:
    """The numba signature of a kernel over flat arrays of the given dtypes."""
    return "void(" + ", ".join(f"{NUMBA_TYPES[d]}[::1]" for d in dtypes) + ")"


HEADER = '''"""graphc CUDA kernel: {title}"""
# Generated by graphc.kernels.cuda; the file name is a hash of this text.
import math

from numba import boolean, cuda, float32, float64, int32, int64, uint64  # noqa: F401
'''


def indent(lines: Sequence[str], level: int) -> list[str]:
    """Indent lines by ``level`` four-space steps."""
    pad = "    " * level
    return [pad + line for line in lines]


def kernel_def(name: str, params: Sequence[str], body: Sequence[str]) -> str:
    """A ``@cuda.jit`` kernel definition."""
    lines = ["", "", "@cuda.jit(cache=True)", f"def {name}({', '.join(params)}):"]
    lines += indent(body or ["pass"], 1)
    return "\n".join(lines) + "\n"


def module_source(title: str, kernels: Sequence[str], params: Sequence[str], launch: Sequence[str]) -> str:
    """Assemble a module: header, kernels, and the host ``launch`` function."""
    text = HEADER.format(title=comment(title))
    text += "".join(kernels)
    text += f"\n\ndef launch({', '.join(params)}):\n"
    text += "\n".join(indent(launch or ["pass"], 1)) + "\n"
    return text


def grid_1d(n: int, cfg: LaunchConfig) -> int:
    """Blocks for a grid-stride loop over ``n`` items."""
    return max(1, min(-(-n // cfg.threads), cfg.max_blocks))
