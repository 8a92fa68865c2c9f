"""Building blocks of the CUDA generators: launch sizes, index maps, bodies, kernel parameters.

Generated kernels never call ``@cuda.jit(device=True)`` helpers: every helper is inlined. That
keeps each kernel self-contained and lets ``check.typecheck`` run numba's CUDA typing and
lowering on it with no driver (device functions need a device to compile against).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from graphc.ir import Graph, Node, Value, broadcast_shapes
from graphc.kernels.scalar_ops import Unsupported, has_scalar_form

from .scalar import CUDA_SCALAR_OVERRIDES, literal, rng_key_lines, rng_value_lines, scalar_expr
from .source import KernelSource, indent, kernel_def, module_source, signature


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
            if node.op == "slice":  # a pointwise body's prologue: read the input at its place
                if node.inputs[0] not in self.args:
                    raise Unsupported(f"slice %{v.name} of a value computed in the body")
                array = self.args[node.inputs[0]]
                scope.lines.append(f"{var} = {array}[{slice_offset(scope.ctx, node)}]")
            elif node.op == "const":
                scope.lines.append(f"{var} = {literal(node.attrs['value'], v.dtype)}")
            elif node.op == "rng_uniform":
                self._emit_rng(node, var, scope)
            elif has_scalar_form(node.op, CUDA_SCALAR_OVERRIDES):
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

    def store(
        self, pairs: Sequence[tuple[Value, str]], scope: Scope, offsets: Sequence[str | None] | None = None
    ) -> None:
        """Write each value to its flat output array; a smaller output is written by one point.

        ``offsets``: per pair, the flat offset to write at instead of the value's own (a part of a
        concat output, ``part_offset``), or None.
        Every value is computed (every input loaded) before the first store, so an output that
        shares memory with an input (in-place) cannot clobber an element still to be read.
        """
        for v, _ in pairs:
            self.emit(v, scope)
        for k, (v, array) in enumerate(pairs):
            at = offsets[k] if offsets is not None and offsets[k] is not None else scope.ctx.offset(v.shape)
            line = f"{array}[{at}] = {scope.vars[v]}"
            cond = scope.ctx.canonical(v.shape)
            if cond:
                scope.lines += [f"if {cond}:", f"    {line}"]
            else:
                scope.lines.append(line)


def slice_offset(ctx: IndexCtx, node: Node) -> str:
    """Flat offset into a static ``slice`` node's C-contiguous input of the slice element that
    the domain point reads (the slice's output broadcast over the domain)."""
    out, shape = node.outputs[0].shape, node.inputs[0].shape
    if not broadcasts_into(out, ctx.domain):
        raise Unsupported(f"slice result {out} does not broadcast into {ctx.domain}")
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    element = contiguous_strides(shape)
    pad = len(ctx.domain) - len(out)
    coeffs = [0] * len(ctx.domain)
    for d, size in enumerate(out):
        if size != 1:
            coeffs[pad + d] = steps[d] * element[d]
    return affine(ctx, coeffs, sum(s * e for s, e in zip(starts, element)))


def part_offset(ctx: IndexCtx, node: Node, part: int) -> str:
    """Flat offset into ``concat`` node's C-contiguous output where the domain point (over the
    part's shape) writes operand ``part``."""
    axis, out = node.attrs["axis"], node.outputs[0].shape
    element = contiguous_strides(out)
    at = sum(v.shape[axis] for v in node.inputs[:part])
    if tuple(node.inputs[part].shape) != ctx.domain:
        raise Unsupported(f"concat part {node.inputs[part].shape} is not the domain {ctx.domain}")
    return affine(ctx, element, at * element[axis])


def grid_1d(n: int, cfg: LaunchConfig) -> int:
    """Blocks for a grid-stride loop over ``n`` items."""
    return max(1, min(-(-n // cfg.threads), cfg.max_blocks))


def describe(node: Node, where: bool = True) -> str:
    """A one-line description of a node for titles and messages (``where``: add its file:line)."""
    ins = ", ".join(str(v.type) for v in node.inputs)
    outs = ", ".join(str(v.type) for v in node.outputs)
    kind = f"[{node.attrs.get('kind')}]" if node.op == "fused" else ""
    src = f" at {node.source}" if node.source and where else ""
    return f"{node.op}{kind}({ins}) -> {outs}{src}"


def single_body(node: Node) -> Graph:
    """A one-node body graph for a primitive node, so primitives reuse the fused generators."""
    g = Graph(node.op)
    ins = [g.add_input(f"a{k}", v.type) for k, v in enumerate(node.inputs)]
    made = g.add_node(node.op, ins, node.attrs)
    for v in made.outputs:
        g.add_output(v)
    return g


class Params:
    """Kernel parameter names and dtypes: inputs, outputs, constant extras, optional flag."""

    def __init__(self, node: Node, body: Graph | None = None):
        self.names: list[str] = []
        self.dtypes: list[str] = []
        self.args: dict[Value, str] = {}
        self.extras: list[np.ndarray] = []
        body_inputs = body.data_inputs if body is not None else [None] * len(node.inputs)
        for k, (v, bv) in enumerate(zip(node.inputs, body_inputs)):
            self._add(f"in{k}", v.dtype)
            if bv is not None:
                self.args[bv] = f"in{k}"
        for k, v in enumerate(node.outputs):
            self._add(f"out{k}", v.dtype)
        if body is not None:
            for v in body.inputs:
                if body.kinds[v.name] == "data":
                    continue
                if v.name not in body.initializers:
                    raise Unsupported(f"body input %{v.name} has no value")
                name = f"x{len(self.extras)}"
                self._add(name, v.dtype)
                self.args[v] = name
                arr = np.ascontiguousarray(body.initializers[v.name], dtype=v.type.np_dtype)
                self.extras.append(arr.reshape(-1))

    def _add(self, name: str, dtype: str) -> None:
        self.names.append(name)
        self.dtypes.append(dtype)

    def add_flag(self) -> None:
        """Append the int32 error-flag array parameter."""
        self._add("flag", "i32")


def finish(
    node: Node, params: Params, kernels: list[tuple[str, str]], launch: list[str], flag: str | None = None
) -> KernelSource:
    # No file:line in the text: equal nodes from different lines share one module and one compile.
    title = describe(node, where=False)
    sig = signature(params.dtypes)
    source = module_source(title, [src for _, src in kernels], params.names, launch)
    return KernelSource(title, source, [(name, sig) for name, _ in kernels], params.extras, flag)


def map_kernel(
    node: Node, domain: Sequence[int], make: Callable[[IndexCtx], list[str]], flag: str | None = None
) -> KernelSource:
    """A grid-stride kernel over an output domain whose per-element lines ``make`` writes."""
    cfg = launch_config()
    params = Params(node)
    if flag:
        params.add_flag()
    n = numel(domain)
    ctx = IndexCtx(domain, decompose("i", domain), "i", "d")
    body = make(ctx)
    lines = [f"for i in range(cuda.grid(1), {n}, cuda.gridsize(1)):"] + indent(ctx.decls() + body, 1)
    call = f"kernel[{grid_1d(n, cfg)}, {cfg.threads}]({', '.join(params.names)})"
    kernels = [("kernel", kernel_def("kernel", params.names, lines))]
    return finish(node, params, kernels, [call] if n else [], flag)


def affine(ctx: IndexCtx, coeffs: Sequence[int], const: int = 0) -> str:
    """``const + sum(dim_k * coeffs[k])`` over the domain axes of size > 1."""
    terms = [str(const)] if const else []
    for k, c in enumerate(coeffs):
        if ctx.domain[k] != 1 and c != 0:
            terms.append(ctx.dim(k) if c == 1 else f"{ctx.dim(k)} * {c}")
    return " + ".join(terms) or "0"
