"""CUDA source generators: one per primitive op (``GENERATORS``) and one per fused-node kind.

A generator takes a node and returns a ``KernelSource``; it raises ``Unsupported`` when it cannot
handle the node (a fused node then falls back to running its body node by node). Kernels work on
flat (1-D) device arrays; shapes, strides and launch sizes are constants baked into the source,
so each distinct node shape is its own small, cacheable module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from graphc.ir import Graph, Node, Value
from graphc.ir.ops import REGISTRY, conv_output_size
from graphc.ir.types import FLOAT_DTYPES

from .codegen import (
    NUMBA_TYPES,
    SCALAR_OPS,
    BodyEmitter,
    IndexCtx,
    KernelSource,
    Scope,
    Unsupported,
    broadcasts_into,
    contiguous_strides,
    decompose,
    grid_1d,
    indent,
    kernel_def,
    launch_config,
    literal,
    module_source,
    numel,
    signature,
    simulator,
)

Generator = Callable[[Node], KernelSource]
GENERATORS: dict[str, Generator] = {}
REDUCTIONS = ("sum", "max", "min", "argmax")


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


def _register(*ops: str):
    def wrap(fn: Generator) -> Generator:
        for op in ops:
            GENERATORS[op] = fn
        return fn

    return wrap


def _finish(
    node: Node, params: Params, kernels: list[tuple[str, str]], launch: list[str], flag: str | None = None
) -> KernelSource:
    # No file:line in the text: equal nodes from different lines share one module and one compile.
    title = describe(node, where=False)
    sig = signature(params.dtypes)
    source = module_source(title, [src for _, src in kernels], params.names, launch)
    return KernelSource(title, source, [(name, sig) for name, _ in kernels], params.extras, flag)


# ------------------------------------------------------------------ elementwise / fused pointwise
def gen_pointwise(node: Node, body: Graph) -> KernelSource:
    """One thread per output element, grid-stride, the whole body inline.

    Outputs of different shapes get one kernel each, over their own shape, largest first. Every
    element is then read and written by the same thread, so an output may share memory with an
    input of its shape (in-place): the smaller kernels run after the larger ones have finished
    reading that input. (One kernel over the broadcast domain would race: another thread could
    still read the input element after the writing thread overwrote it.)
    """
    cfg = launch_config()
    params = Params(node, body)
    emitter = BodyEmitter(body, params.args)
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, v in enumerate(body.outputs):
        groups.setdefault(v.shape, []).append(k)
    kernels, launch = [], []
    for g, shape in enumerate(sorted(groups, key=lambda s: (-numel(s), -len(s)))):
        n = numel(shape)
        scope = Scope(IndexCtx(shape, decompose("i", shape), "i", "d"), "s")
        emitter.store([(body.outputs[k], f"out{k}") for k in groups[shape]], scope)
        lines = [f"for i in range(cuda.grid(1), {n}, cuda.gridsize(1)):"] + indent(scope.code(), 1)
        name = "kernel" if g == 0 else f"kernel{g}"
        kernels.append((name, kernel_def(name, params.names, lines)))
        if n:
            launch.append(f"{name}[{grid_1d(n, cfg)}, {cfg.threads}]({', '.join(params.names)})")
    return _finish(node, params, kernels, launch)


_POINTWISE_PRIMS = sorted(SCALAR_OPS | {"const", "rng_uniform"})
for _op in _POINTWISE_PRIMS:
    GENERATORS[_op] = lambda node: gen_pointwise(node, single_body(node))


# ------------------------------------------------------------------ reductions
def _reduced_axes(node: Node) -> tuple[int, ...]:
    if node.op == "argmax":
        return (node.attrs["axis"],)
    return tuple(sorted(node.attrs["axes"]))


def _acc_dtype(node: Node) -> str:
    dtype = node.inputs[0].dtype
    if dtype == "bool":
        return "i32"  # bools reduce as 0/1 (sum/max = any, min = all)
    if node.op == "sum" and dtype in ("i32", "i64"):
        return "i64"
    return dtype


def _identity(op: str, dtype: str) -> str:
    if op == "sum":
        return literal(0, dtype)
    if dtype in ("f32", "f64"):
        return f"{NUMBA_TYPES[dtype]}({'-' if op in ('max', 'argmax') else ''}math.inf)"
    info = np.iinfo(np.int32 if dtype == "i32" else np.int64)
    return literal(info.min if op in ("max", "argmax") else info.max, dtype)


def _to_acc(expr: str, src: str, acc: str) -> str:
    if src == acc:
        return expr
    if src == "bool":
        return f"(int32(1) if {expr} else int32(0))"
    return f"{NUMBA_TYPES[acc]}({expr})"


def _combine(op: str, a: str, b: str) -> str:
    """The new accumulator value from accumulator ``a`` and value ``b`` (NaN-propagating)."""
    if op == "sum":
        return f"{a} + {b}"
    cmp = ">" if op == "max" else "<"
    return f"({b} if ({b} {cmp} {a} or {b} != {b}) else {a})"


def _next_pow2(n: int) -> int:
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
    B = 1 if per_thread else min(cfg.reduce_block, max(_next_pow2(R), 4 if simulator() else 32))
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
        acc = NUMBA_TYPES[_acc_dtype(rn)]
        lines.append(f"sh{j} = cuda.shared.array({B}, {acc})")
        if rn.op == "argmax":
            lines.append(f"shi{j} = cuda.shared.array({B}, int64)")
    row: list[str] = []
    known: dict[Value, str] = {}
    for L in range(npasses):
        here = [(j, rn) for j, rn in enumerate(reds) if level[rn] == L]
        scope = Scope(d_ctx(f"d{L}_", True), f"s{L}", known)
        for j, rn in here:
            acc_t = _acc_dtype(rn)
            row.append(f"acc{j} = {_identity(rn.op, acc_t)}")
            value = _to_acc(emitter.emit(rn.inputs[0], scope), rn.inputs[0].dtype, acc_t)
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
                scope.lines.append(f"acc{j} = {_combine(rn.op, f'acc{j}', value)}")
        row += [r_loop] + indent(scope.code() or ["pass"], 1)
        row += _finish_pass(here) if per_thread else _tree(here, B)
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
    return _finish(node, params, [("kernel", kernel_def("kernel", params.names, lines))], launch)


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


def _tree(here: list[tuple[int, Node]], B: int) -> list[str]:
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
                step.append(f"sh{j}[tid] = {_combine(rn.op, f'sh{j}[tid]', f'sh{j}[tid + {s}]')}")
        lines += [f"if tid < {s}:"] + indent(step, 1) + ["cuda.syncthreads()"]
        s //= 2
    lines += [_red_value(j, rn, f"sh{j}[0]", f"shi{j}[0]") for j, rn in here]
    # Nobody may overwrite sh[0] (next row) before every thread has read it.
    lines.append("cuda.syncthreads()")
    return lines


for _op in REDUCTIONS:
    GENERATORS[_op] = lambda node: gen_reduction(node, single_body(node))


# ------------------------------------------------------------------ matmul (+ epilogue)
def gen_matmul(node: Node, body: Graph) -> KernelSource:
    """Tiled shared-memory matmul with broadcast batch dims; the body's epilogue runs per element.

    A block of mm_threads x mm_threads threads computes a (mm_threads*mm_reg)^2 output tile; each
    thread keeps mm_reg x mm_reg accumulators in registers (unrolled scalars in the generated
    source), and the K axis advances mm_bk at a time through shared memory.
    """
    cfg = launch_config()
    if not body.nodes or body.nodes[0].op != "matmul":
        raise Unsupported("matmul body must start with its matmul")
    mm = body.nodes[0]
    params = Params(node, body)
    if any(v not in params.args for v in mm.inputs):
        raise Unsupported("matmul operands must be inputs of the fused node")
    a, b = mm.inputs
    out = mm.outputs[0]
    M, K = a.shape[-2:]
    N = b.shape[-1]
    Bo = out.shape[:-2]
    batch = numel(Bo)
    dtype = out.dtype
    acc_t = "i64" if dtype in ("i32", "i64") else dtype
    bdims = decompose("bz", Bo)

    def base(shape: tuple[int, ...], mat: int) -> str:
        pad = len(Bo) - len(shape)
        terms = []
        for k, (size, stride) in enumerate(zip(shape, contiguous_strides(shape))):
            if size != 1:
                terms.append(f"{bdims[pad + k]} * {stride * mat}")
        return " + ".join(terms) or "0"

    A, Bp = params.args[a], params.args[b]
    TT, RR, BK = cfg.mm_threads, cfg.mm_reg, cfg.mm_bk
    BM = BN = TT * RR
    NT = TT * TT
    acc = NUMBA_TYPES[acc_t]
    tile_t = NUMBA_TYPES[dtype]
    zero = literal(0, dtype)
    emitter = BodyEmitter(body, params.args)
    # Thread (tx, ty) owns rows i0 + ty + m*TT and columns j0 + tx + n*TT of the tile at (i0, j0):
    # neighbouring threads
    # touch neighbouring columns (coalesced stores, conflict-free shared reads).
    epilogue = []
    for m in range(RR):
        epilogue.append(f"row{m} = i0 + ty + {m * TT}")
    for n in range(RR):
        epilogue.append(f"col{n} = j0 + tx + {n * TT}")
    for m in range(RR):
        for n in range(RR):
            i, j = f"row{m}", f"col{n}"
            ctx = IndexCtx(out.shape, bdims + [i, j], f"bz * {M * N} + {i} * {N} + {j}", f"d{m}{n}_")
            scope = Scope(ctx, f"s{m}{n}", {out: f"mm{m}{n}"})
            emitter.store([(v, f"out{k}") for k, v in enumerate(body.outputs)], scope)
            epilogue += [f"if {i} < {M} and {j} < {N}:", f"    mm{m}{n} = {tile_t}(c{m}{n})"]
            epilogue += indent(scope.code(), 1)
    tiles = [
        f"j0 = bj * {BN}",
        *(f"c{m}{n} = {literal(0, acc_t)}" for m in range(RR) for n in range(RR)),
        f"for t in range(0, {K}, {BK}):",
        f"    for e in range(tid, {BM * BK}, {NT}):",
        f"        r = e // {BK}",
        f"        c = e % {BK}",
        f"        if i0 + r < {M} and t + c < {K}:",
        f"            sa[c, r] = {A}[abase + (i0 + r) * {K} + t + c]",
        "        else:",
        f"            sa[c, r] = {zero}",
        f"    for e in range(tid, {BK * BN}, {NT}):",
        f"        r = e // {BN}",
        f"        c = e % {BN}",
        f"        if t + r < {K} and j0 + c < {N}:",
        f"            sb[r, c] = {Bp}[bbase + (t + r) * {N} + j0 + c]",
        "        else:",
        f"            sb[r, c] = {zero}",
        "    cuda.syncthreads()",
        f"    for kk in range({BK}):",
        *(f"        a{m} = {acc}(sa[kk, ty + {m * TT}])" for m in range(RR)),
        *(f"        b{n} = {acc}(sb[kk, tx + {n * TT}])" for n in range(RR)),
        *(f"        c{m}{n} += a{m} * b{n}" for m in range(RR) for n in range(RR)),
        "    cuda.syncthreads()",
        *epilogue,
    ]
    MT, NTL = -(-M // BM), -(-N // BN)
    lines = [
        # The A tile is stored k-major with one pad column so its column-wise stores avoid bank
        # conflicts; the compute loop then reads both tiles row-wise.
        f"sa = cuda.shared.array(({BK}, {BM + 1}), {tile_t})",
        f"sb = cuda.shared.array(({BK}, {BN}), {tile_t})",
        "tx = cuda.threadIdx.x",
        "ty = cuda.threadIdx.y",
        f"tid = ty * {TT} + tx",
        f"for bz in range(cuda.blockIdx.z, {batch}, cuda.gridDim.z):",
        f"    abase = {base(a.shape[:-2], M * K)}",
        f"    bbase = {base(b.shape[:-2], K * N)}",
        f"    for bi in range(cuda.blockIdx.y, {MT}, cuda.gridDim.y):",
        f"        i0 = bi * {BM}",
        f"        for bj in range(cuda.blockIdx.x, {NTL}, cuda.gridDim.x):",
        *indent(tiles, 3),
    ]
    cap = cfg.max_blocks
    grid = (max(1, min(NTL, cap)), max(1, min(MT, cap)), max(1, min(batch, cap)))
    launch = [f"kernel[{grid}, ({TT}, {TT})]({', '.join(params.names)})"] if M * N * batch else []
    return _finish(node, params, [("kernel", kernel_def("kernel", params.names, lines))], launch)


GENERATORS["matmul"] = lambda node: gen_matmul(node, single_body(node))


# ------------------------------------------------------------------ movement
def _map_kernel(
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
    return _finish(node, params, kernels, [call] if n else [], flag)


def _affine(ctx: IndexCtx, coeffs: Sequence[int], const: int = 0) -> str:
    """``const + sum(dim_k * coeffs[k])`` over the domain axes of size > 1."""
    terms = [str(const)] if const else []
    for k, c in enumerate(coeffs):
        if ctx.domain[k] != 1 and c != 0:
            terms.append(ctx.dim(k) if c == 1 else f"{ctx.dim(k)} * {c}")
    return " + ".join(terms) or "0"


@_register("reshape")
def gen_reshape(node: Node) -> KernelSource:
    """A flat copy (the runtime skips reshapes whose output aliases the input)."""
    return _map_kernel(node, node.outputs[0].shape, lambda ctx: ["out0[i] = in0[i]"])


@_register("transpose")
def gen_transpose(node: Node) -> KernelSource:
    """out[d] = in[d permuted back]."""
    perm = node.attrs["perm"]
    strides = contiguous_strides(node.inputs[0].shape)
    coeffs = [strides[p] for p in perm]
    return _map_kernel(node, node.outputs[0].shape, lambda ctx: [f"out0[i] = in0[{_affine(ctx, coeffs)}]"])


@_register("slice")
def gen_slice(node: Node) -> KernelSource:
    """out[d] = in[start + d * step]."""
    strides = contiguous_strides(node.inputs[0].shape)
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    const = sum(s * st for s, st in zip(starts, strides))
    coeffs = [step * st for step, st in zip(steps, strides)]
    return _map_kernel(
        node, node.outputs[0].shape, lambda ctx: [f"out0[i] = in0[{_affine(ctx, coeffs, const)}]"]
    )


@_register("pad")
def gen_pad(node: Node) -> KernelSource:
    """Copy inside the original extent, the pad value outside it."""
    x = node.inputs[0]
    pads = node.attrs["pads"]
    fill = literal(node.attrs["value"], x.dtype)
    strides = contiguous_strides(x.shape)

    def make(ctx: IndexCtx) -> list[str]:
        if x.type.numel == 0:
            return [f"out0[i] = {fill}"]
        conds, const = [], 0
        for k, (lo, hi) in enumerate(pads):
            if lo or hi:
                conds.append(f"{lo} <= {ctx.dim(k)} < {lo + x.shape[k]}")
            const -= lo * strides[k]
        off = _affine(ctx, strides, const)
        if not conds:
            return [f"out0[i] = in0[{off}]"]
        return [f"if {' and '.join(conds)}:", f"    out0[i] = in0[{off}]", "else:", f"    out0[i] = {fill}"]

    return _map_kernel(node, node.outputs[0].shape, make)


@_register("concat")
def gen_concat(node: Node) -> KernelSource:
    """Pick the operand by the index along the concat axis (an if/elif chain of constant bounds)."""
    axis = node.attrs["axis"]

    def make(ctx: IndexCtx) -> list[str]:
        lines, start = [], 0
        for m, v in enumerate(node.inputs):
            size = v.shape[axis]
            if size == 0:
                continue
            strides = contiguous_strides(v.shape)
            off = _affine(ctx, strides, -start * strides[axis])
            cond = f"{ctx.dim(axis)} < {start + size}" if ctx.domain[axis] != 1 else "True"
            lines += [f"{'if' if not lines else 'elif'} {cond}:", f"    out0[i] = in{m}[{off}]"]
            start += size
        return lines or ["pass"]

    return _map_kernel(node, node.outputs[0].shape, make)


# ------------------------------------------------------------------ indexing
def _gather_offsets(ctx: IndexCtx, xshape: Sequence[int], ishape: Sequence[int], axis: int):
    """(index offset, x offset without the gathered axis) for the gather/scatter domain."""
    nidx = len(ishape)
    istr = contiguous_strides(ishape)
    xstr = contiguous_strides(xshape)
    icoeffs = [0] * len(ctx.domain)
    xcoeffs = [0] * len(ctx.domain)
    for k in range(len(ctx.domain)):
        if k < axis:
            xcoeffs[k] = xstr[k]
        elif k < axis + nidx:
            icoeffs[k] = istr[k - axis]
        else:
            xcoeffs[k] = xstr[k - nidx + 1]
    return _affine(ctx, icoeffs), _affine(ctx, xcoeffs), xstr[axis]


@_register("gather")
def gen_gather(node: Node) -> KernelSource:
    """out[pre, j, post] = x[pre, idx[j], post]; an out-of-range index sets the error flag."""
    x, idx = node.inputs
    axis = node.attrs["axis"]
    size = x.shape[axis]

    def make(ctx: IndexCtx) -> list[str]:
        ioff, xoff, astride = _gather_offsets(ctx, x.shape, idx.shape, axis)
        return [
            f"k = int64(in1[{ioff}])",
            f"if 0 <= k < {size}:",
            f"    out0[i] = in0[{xoff} + k * {astride}]",
            "else:",
            f"    out0[i] = {literal(0, x.dtype)}",
            "    flag[0] = 1",
        ]

    flag = f"gather: index out of range [0, {size}) on axis {axis}"
    return _map_kernel(node, node.outputs[0].shape, make, flag)


@_register("scatter_add")
def gen_scatter_add(node: Node) -> KernelSource:
    """Zero the output, then add each update at its index with cuda.atomic.add."""
    cfg = launch_config()
    idx, upd = node.inputs
    axis, shape = node.attrs["axis"], tuple(node.attrs["shape"])
    size = shape[axis]
    params = Params(node)
    params.add_flag()
    n_out, n_upd = numel(shape), numel(upd.shape)
    zero = [
        f"for i in range(cuda.grid(1), {n_out}, cuda.gridsize(1)):",
        f"    out0[i] = {literal(0, upd.dtype)}",
    ]
    ctx = IndexCtx(upd.shape, decompose("i", upd.shape), "i", "d")
    ioff, xoff, astride = _gather_offsets(ctx, shape, idx.shape, axis)
    # Atomics have no bool form; OR-ing True in is what np.add.at does to a bool array.
    add = (
        ["    if in1[i]:", f"        out0[{xoff} + k * {astride}] = True"]
        if upd.dtype == "bool"
        else [f"    cuda.atomic.add(out0, {xoff} + k * {astride}, in1[i])"]
    )
    body = [f"k = int64(in0[{ioff}])", f"if 0 <= k < {size}:", *add, "else:", "    flag[0] = 1"]
    scatter = [f"for i in range(cuda.grid(1), {n_upd}, cuda.gridsize(1)):"] + indent(ctx.decls() + body, 1)
    kernels = [
        ("zero", kernel_def("zero", params.names, zero)),
        ("scatter", kernel_def("scatter", params.names, scatter)),
    ]
    args = ", ".join(params.names)
    launch = []
    if n_out:
        launch.append(f"zero[{grid_1d(n_out, cfg)}, {cfg.threads}]({args})")
    if n_upd:
        launch.append(f"scatter[{grid_1d(n_upd, cfg)}, {cfg.threads}]({args})")
    flag = f"scatter_add: index out of range [0, {size}) on axis {axis}"
    return _finish(node, params, kernels, launch, flag)


# ------------------------------------------------------------------ image
def _window(attrs: dict, h: int, w: int):
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    (ph, pw), (dh, dw) = attrs["padding"], attrs["dilation"]
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    return kh, kw, sh, sw, ph, pw, dh, dw, oh, ow


@_register("im2col")
def gen_im2col(node: Node) -> KernelSource:
    """cols[n, (c, i, j), (y, x)] = xpad[n, c, y*sh + i*dh, x*sw + j*dw] (zero outside)."""
    n_, c_, h, w = node.inputs[0].shape
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = _window(node.attrs, h, w)
    zero = literal(0, node.inputs[0].dtype)

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"n = i // {c_ * kh * kw * oh * ow}",
            f"row = (i // {oh * ow}) % {c_ * kh * kw}",
            f"pos = i % {oh * ow}",
            f"c = row // {kh * kw}",
            f"ki = (row // {kw}) % {kh}",
            f"kj = row % {kw}",
            f"y = (pos // {ow}) * {sh} - {ph} + ki * {dh}",
            f"x = (pos % {ow}) * {sw} - {pw} + kj * {dw}",
            f"if 0 <= y < {h} and 0 <= x < {w}:",
            f"    out0[i] = in0[((n * {c_} + c) * {h} + y) * {w} + x]",
            "else:",
            f"    out0[i] = {zero}",
        ]

    return _map_kernel(node, node.outputs[0].shape, make)


@_register("col2im")
def gen_col2im(node: Node) -> KernelSource:
    """Gather form: each image pixel sums the column entries that read it (no atomics)."""
    n_, c_, h, w = node.attrs["image_shape"]
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = _window(node.attrs, h, w)
    dtype = node.outputs[0].dtype
    acc_t = "i64" if dtype in ("i32", "i64") else dtype

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"n = i // {c_ * h * w}",
            f"c = (i // {h * w}) % {c_}",
            f"yy = (i // {w}) % {h} + {ph}",
            f"xx = i % {w} + {pw}",
            f"acc = {literal(0, acc_t)}",
            f"for ki in range({kh}):",
            f"    ty = yy - ki * {dh}",
            f"    if ty >= 0 and ty % {sh} == 0 and ty // {sh} < {oh}:",
            f"        for kj in range({kw}):",
            f"            tx = xx - kj * {dw}",
            f"            if tx >= 0 and tx % {sw} == 0 and tx // {sw} < {ow}:",
            f"                col = ((n * {c_} + c) * {kh} + ki) * {kw} + kj",
            f"                at = col * {oh * ow} + (ty // {sh}) * {ow} + tx // {sw}",
            f"                acc += {NUMBA_TYPES[acc_t]}(in0[at])",
            f"out0[i] = {NUMBA_TYPES[dtype]}(acc)",
        ]

    return _map_kernel(node, node.outputs[0].shape, make)


def _first_max_lines(x_dtype: str, base: str, w: int, kh: int, kw: int, dh: int, dw: int) -> list[str]:
    """Lines leaving in ``best``/``arg`` the value and x offset of the window's first maximum.

    The window's top-left element is at x offset ``base``; elements are visited in row-major
    window order and NaN counts as the maximum (the first NaN wins), as in PyTorch.
    """
    take = "v > best or (v != v and best == best)" if x_dtype in FLOAT_DTYPES else "v > best"
    return [
        f"best = in0[{base}]",
        f"arg = {base}",
        f"for a in range({kh}):",
        f"    for b in range({kw}):",
        f"        at = {base} + a * {dh * w} + b * {dw}",
        "        v = in0[at]",
        f"        if {take}:",
        "            best = v",
        "            arg = at",
    ]


@_register("max_pool2d")
def gen_max_pool2d(node: Node) -> KernelSource:
    """y[n, c, oy, ox] = the first maximum of x's window at (oy*sh, ox*sw) (NaN counts as the maximum)."""
    x = node.inputs[0]
    n_, c_, h, w = x.shape
    kh, kw, sh, sw, _, _, dh, dw, oh, ow = _window({**node.attrs, "padding": (0, 0)}, h, w)

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"nc = i // {oh * ow}",
            f"base = nc * {h * w} + ((i // {ow}) % {oh}) * {sh * w} + (i % {ow}) * {sw}",
            *_first_max_lines(x.dtype, "base", w, kh, kw, dh, dw),
            "out0[i] = best",
        ]

    return _map_kernel(node, node.outputs[0].shape, make)


@_register("max_pool2d_grad")
def gen_max_pool2d_grad(node: Node) -> KernelSource:
    """Gather form: each x element sums dy over the windows whose first maximum it is (no atomics)."""
    x, dy = node.inputs
    n_, c_, h, w = x.shape
    kh, kw, sh, sw, _, _, dh, dw, oh, ow = _window({**node.attrs, "padding": (0, 0)}, h, w)
    dtype = node.outputs[0].dtype
    # Window (oy, ox) reads this element at (ki, kj) when iy = oy*sh + ki*dh and ix = ox*sw + kj*dw;
    # its first maximum is recomputed there, and dy[oy, ox] is added if that maximum is this element.
    window = [
        f"base = nc * {h * w} + oy * {sh * w} + ox * {sw}",
        *_first_max_lines(x.dtype, "base", w, kh, kw, dh, dw),
        "if arg == i:",
        f"    acc += in1[nc * {oh * ow} + oy * {ow} + ox]",
    ]

    def make(ctx: IndexCtx) -> list[str]:
        return [
            f"nc = i // {h * w}",
            f"iy = (i // {w}) % {h}",
            f"ix = i % {w}",
            f"acc = {literal(0, dtype)}",
            f"for ki in range({kh}):",
            f"    ty = iy - ki * {dh}",
            f"    if ty >= 0 and ty % {sh} == 0 and ty // {sh} < {oh}:",
            f"        oy = ty // {sh}",
            f"        for kj in range({kw}):",
            f"            tx = ix - kj * {dw}",
            f"            if tx >= 0 and tx % {sw} == 0 and tx // {sw} < {ow}:",
            f"                ox = tx // {sw}",
            *indent(window, 4),
            "out0[i] = acc",
        ]

    return _map_kernel(node, node.outputs[0].shape, make)


# ------------------------------------------------------------------ fused
FUSED_KINDS = {"pointwise": gen_pointwise, "reduction": gen_reduction, "matmul": gen_matmul}


@_register("fused")
def gen_fused(node: Node) -> KernelSource:
    """Generate one kernel for a fused node by its kind; Unsupported means: run the body instead."""
    if node.subgraph is None:
        raise Unsupported("fused node without a body")
    gen = FUSED_KINDS.get(node.attrs.get("kind"))
    if gen is None:
        raise Unsupported(f"unknown fused kind {node.attrs.get('kind')!r}")
    return gen(node, node.subgraph)


def missing_ops() -> list[str]:
    """Ops of the registry with no CUDA generator (the coverage test wants this empty)."""
    return sorted(set(REGISTRY) - set(GENERATORS))
