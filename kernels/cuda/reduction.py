"""The CUDA generator of reductions (sum/max/min/argmax, fused softmax/layer_norm bodies).

Start values and combine steps are ``scalar_ops.REDUCTIONS``.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphc.ir import Graph, Node, Value
from graphc.kernels.scalar_ops import REDUCTIONS as REDUCTION_STEPS
from graphc.kernels.scalar_ops import Unsupported

from .loops import (
    BodyEmitter,
    IndexCtx,
    Params,
    Scope,
    broadcasts_into,
    decompose,
    finish,
    grid_1d,
    launch_config,
    numel,
    simulator,
)
from .pointwise import gen_pointwise
from .source import NUMBA_TYPES, KernelSource, indent, kernel_def, literal

REDUCTIONS = (*REDUCTION_STEPS, "argmax")


def _reduced_axes(node: Node) -> tuple[int, ...]:
    if node.op == "argmax":
        return (node.attrs["axis"],)
    return tuple(sorted(node.attrs["axes"]))


def acc_dtype(node: Node) -> str:
    """The dtype a reduction node accumulates in."""
    dtype = node.inputs[0].dtype
    if dtype == "bool":
        return "i32"  # bools reduce as 0/1 (sum/max = any, min = all)
    if node.op == "sum" and dtype in ("i32", "i64"):
        return "i64"
    return dtype


def identity(op: str, dtype: str) -> str:
    """The accumulator's start value (argmax starts as max does)."""
    return literal(REDUCTION_STEPS["max" if op == "argmax" else op].start(dtype), dtype)


def to_acc(expr: str, src: str, acc: str) -> str:
    """``expr`` of dtype ``src`` converted to the accumulator dtype ``acc``."""
    if src == acc:
        return expr
    if src == "bool":
        return f"(int32(1) if {expr} else int32(0))"
    return f"{NUMBA_TYPES[acc]}({expr})"


def combine(rn: Node, a: str, b: str) -> str:
    """The new accumulator value from accumulator ``a`` and value ``b`` (NaN-propagating)."""
    return REDUCTION_STEPS[rn.op].combine(acc_dtype(rn), a, b)


def next_pow2(n: int) -> int:
    """The least power of two >= n (1 for n <= 1)."""
    return 1 << max(0, (n - 1).bit_length())


def gen_reduction(node: Node, body: Graph) -> KernelSource:
    """One block per row of kept indices (threads stride over the row), or one thread per row.

    Every reduction in the body reduces the same axes of the same domain D. Reductions that
    depend on earlier reductions (softmax: max, then sum of exp(x - max)) run in later passes over
    the row; in the block form each pass ends in a shared-memory tree reduction. Outputs that
    vary along the row are written in a last pass; per-row outputs are written once per row.
    Rows of at most ``row_thread_max`` elements get a thread each: a block would leave most of
    its threads idle, and many short rows (a bias gradient: sum over the batch) would need as
    many blocks.
    """
    reds = [n for n in body.nodes if n.op in REDUCTIONS]
    if not reds:
        return gen_pointwise(node, body)
    cfg = launch_config()
    D = reds[0].inputs[0].shape
    axes = _reduced_axes(reds[0])
    for r in reds:
        if r.inputs[0].shape != D or _reduced_axes(r) != axes:
            raise Unsupported("reductions over different domains or axes")
    kept = [k for k in range(len(D)) if k not in axes]
    P = tuple(D[k] for k in kept)
    Rshape = tuple(D[k] for k in axes)
    rows, R = numel(P), numel(Rshape)
    trailing = axes == tuple(range(len(D) - len(axes), len(D)))

    # Which values vary per element of D ("D") and which live per row in kept-axes space ("P").
    space: dict[Value, str] = {}
    dep: dict[Value, int] = {v: -1 for v in body.inputs}
    level: dict[Node, int] = {}
    for n in body.nodes:
        d = max((dep.get(u, -1) for u in n.inputs), default=-1)
        if n.op in REDUCTIONS:
            if space.get(n.inputs[0]) == "P":
                raise Unsupported("reduction of a per-row value")
            level[n] = d + 1
            d += 1
            keep = n.attrs["keepdims"]
            space[n.outputs[0]] = "D" if keep or not P else "P"
        else:
            spaces = {space[u] for u in n.inputs if u in space}
            if len(spaces) > 1:
                raise Unsupported("an op mixes per-row (reduced) and per-element values")
            if spaces:
                space[n.outputs[0]] = spaces.pop()
        for v in n.outputs:
            dep[v] = d
    npasses = max(level.values()) + 1

    per_thread = R <= cfg.row_thread_max
    B = 1 if per_thread else min(cfg.reduce_block, max(next_pow2(R), 4 if simulator() else 32))
    r_loop = f"for r in range({R}):" if per_thread else f"for r in range(tid, {R}, {B}):"
    params = Params(node, body)
    emitter = BodyEmitter(body, params.args)
    pdims = decompose("p", P)
    rdims = decompose("r", Rshape)

    def d_ctx(prefix: str, in_loop: bool) -> IndexCtx:
        exprs = []
        for k in range(len(D)):
            exprs.append(pdims[kept.index(k)] if k in kept else (rdims[axes.index(k)] if in_loop else "0"))
        flat = (f"p * {R} + r" if in_loop else f"p * {R}") if trailing else None
        return IndexCtx(D, exprs, flat, prefix)

    lines = [] if per_thread else ["tid = cuda.threadIdx.x"]
    for j, rn in enumerate(reds if not per_thread else []):
        acc = NUMBA_TYPES[acc_dtype(rn)]
        lines.append(f"sh{j} = cuda.shared.array({B}, {acc})")
        if rn.op == "argmax":
            lines.append(f"shi{j} = cuda.shared.array({B}, int64)")
    row: list[str] = []
    known: dict[Value, str] = {}
    for L in range(npasses):
        here = [(j, rn) for j, rn in enumerate(reds) if level[rn] == L]
        scope = Scope(d_ctx(f"d{L}_", True), f"s{L}", known)
        for j, rn in here:
            acc_t = acc_dtype(rn)
            row.append(f"acc{j} = {identity(rn.op, acc_t)}")
            value = to_acc(emitter.emit(rn.inputs[0], scope), rn.inputs[0].dtype, acc_t)
            if rn.op == "argmax":
                row.append(f"acci{j} = int64({R})")
                scope.lines += [
                    f"nv{j} = {value}",
                    # The first element seen, then NaN over numbers, then strictly larger values.
                    f"if acci{j} == {R} or (nv{j} != nv{j} and acc{j} == acc{j}) or nv{j} > acc{j}:",
                    f"    acc{j} = nv{j}",
                    f"    acci{j} = int64(r)",
                ]
            else:
                scope.lines.append(f"acc{j} = {combine(rn, f'acc{j}', value)}")
        row += [r_loop] + indent(scope.code() or ["pass"], 1)
        row += _finish_pass(here) if per_thread else tree(here, B)
        for j, rn in here:
            known[rn.outputs[0]] = f"red{j}"

    # Per-row outputs (reduced values and anything built from them) are written by thread 0.
    row_scope = Scope(d_ctx("e", False), "sr", known)
    p_scope = Scope(IndexCtx(P, pdims, "p", "q"), "sp", known)
    loop_scope = Scope(d_ctx("f", True), "sf", known)
    stores: dict[str, list[tuple[Value, str]]] = {"P": [], "row": [], "loop": []}
    for k, v in enumerate(body.outputs):
        sp = space.get(v)
        if sp is None:  # an input or a value made of inputs and constants only
            if broadcasts_into(v.shape, D):
                sp = "D"
            elif broadcasts_into(v.shape, P):
                sp = "P"
            else:
                raise Unsupported(f"output {v.shape} fits neither {D} nor {P}")
        where = "P" if sp == "P" else ("row" if _row_constant(v.shape, D, axes) else "loop")
        stores[where].append((v, f"out{k}"))
    emitter.store(stores["P"], p_scope)
    emitter.store(stores["row"], row_scope)
    emitter.store(stores["loop"], loop_scope)
    once = p_scope.code() + row_scope.code()
    if once:
        row += once if per_thread else ["if tid == 0:"] + indent(once, 1)
    if loop_scope.lines:
        row += [r_loop] + indent(loop_scope.code(), 1)
    if per_thread:
        lines += [f"for p in range(cuda.grid(1), {rows}, cuda.gridsize(1)):"] + indent(row, 1)
        config = f"{grid_1d(rows, cfg)}, {cfg.threads}"
    else:
        lines += [f"for p in range(cuda.blockIdx.x, {rows}, cuda.gridDim.x):"] + indent(row, 1)
        config = f"{max(1, min(rows, cfg.max_blocks))}, {B}"
    launch = [f"kernel[{config}]({', '.join(params.names)})"] if rows else []
    return finish(node, params, [("kernel", kernel_def("kernel", params.names, lines))], launch)


def _row_constant(shape: Sequence[int], D: Sequence[int], axes: Sequence[int]) -> bool:
    pad = len(D) - len(shape)
    return all(k < pad or shape[k - pad] == 1 for k in axes)


def _red_value(j: int, rn: Node, acc: str, index: str) -> str:
    """The line turning a finished accumulator into the reduction's value red<j>."""
    out = rn.outputs[0].dtype
    if rn.op == "argmax":
        return f"red{j} = int64({index})"
    if out == "bool":
        return f"red{j} = {acc} != 0"
    return f"red{j} = {NUMBA_TYPES[out]}({acc})"


def _finish_pass(here: list[tuple[int, Node]]) -> list[str]:
    """One thread per row: the accumulators already hold the row's result."""
    return [_red_value(j, rn, f"acc{j}", f"acci{j}") for j, rn in here]


def tree(here: list[tuple[int, Node]], B: int) -> list[str]:
    """Shared-memory tree reduction of the accumulators of one pass; leaves red<j> in registers."""
    lines = []
    for j, rn in here:
        lines.append(f"sh{j}[tid] = acc{j}")
        if rn.op == "argmax":
            lines.append(f"shi{j}[tid] = acci{j}")
    lines.append("cuda.syncthreads()")
    s = B // 2
    while s >= 1:
        step = []
        for j, rn in here:
            if rn.op == "argmax":
                av, ai, bv, bi = f"sh{j}[tid]", f"shi{j}[tid]", f"sh{j}[tid + {s}]", f"shi{j}[tid + {s}]"
                # NaN wins (the first one), then the larger value, then the smaller index.
                take = (
                    f"({bv} != {bv} and ({av} == {av} or {bi} < {ai})) or "
                    f"({av} == {av} and ({bv} > {av} or ({bv} == {av} and {bi} < {ai})))"
                )
                step += [f"if {take}:", f"    {av} = {bv}", f"    {ai} = {bi}"]
            else:
                step.append(f"sh{j}[tid] = {combine(rn, f'sh{j}[tid]', f'sh{j}[tid + {s}]')}")
        lines += [f"if tid < {s}:"] + indent(step, 1) + ["cuda.syncthreads()"]
        s //= 2
    lines += [_red_value(j, rn, f"sh{j}[0]", f"shi{j}[0]") for j, rn in here]
    # Nobody may overwrite sh[0] (next row) before every thread has read it.
    lines.append("cuda.syncthreads()")
    return lines
