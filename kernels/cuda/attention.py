"""The CUDA generator of fused attention nodes: ``softmax(q k^T ...) v`` as one kernel.

The stages come from ``ir.fused.attention_parts``; q, k^T and v are read through their
``OperandView``s (strided views of the node's inputs: the packed QKV projection), so nothing is
copied. One thread block per (matrix, query row), grid-stride over the rows:

1. the row's query goes to shared memory; each thread computes the scores of its keys
   (threads stride over the keys) into a shared row of ``n`` scores;
2. the reduction stage's body runs over that row as ``gen_reduction``'s block form does (one pass
   per level of dependent reductions, each ending in a shared-memory tree), and its result, the
   probabilities, overwrites the scores in shared memory;
3. each thread computes output columns ``probs @ v`` of the row and writes them through the head
   transpose, if the node has one.

Scores and probabilities never leave the chip. A row of keys must fit in shared memory
(``SHARED_BYTES``); a longer one raises Unsupported and the node runs its stages one by one.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphc.ir import GraphcError, Node, Value
from graphc.ir.fused import REDUCTION_OPS, attention_parts, matmul_parts
from graphc.ir.views import View, c_strides
from graphc.kernels.scalar_ops import Unsupported

from .loops import BodyEmitter, IndexCtx, Params, Scope, decompose, finish, launch_config, numel, simulator
from .matmul import batch_base, element
from .reduction import acc_dtype, combine, identity, next_pow2, to_acc, tree
from .source import NUMBA_TYPES, KernelSource, indent, kernel_def, literal

# Shared memory a block may use for the row of scores, the query and the reduction trees
# (48 KiB is what every CUDA GPU gives a block without opting in to more).
SHARED_BYTES = 48 * 1024


def _stage_operands(stage: Node, args: dict[Value, str]) -> list[tuple[str, View] | None]:
    """Each operand of a matmul stage as (kernel array, view of it); None for one that is not a
    view of an attention-node input (the probabilities)."""
    if stage.op == "matmul":
        return [(args[v], View.dense(v.shape)) if v in args else None for v in stage.inputs]
    body = stage.subgraph
    binds = dict(zip(body.data_inputs, stage.inputs))
    out: list[tuple[str, View] | None] = []
    for ov in matmul_parts(stage).operands:
        outer = binds.get(ov.input)
        out.append((args[outer], ov.view) if outer in args else None)
    return out


def _levels(body_nodes: Sequence[Node], reds: list[Node]) -> dict[Node, int]:
    """The pass each reduction runs in: one after the latest reduction it depends on."""
    dep: dict[Value, int] = {}
    level: dict[Node, int] = {}
    for n in body_nodes:
        d = max((dep.get(u, -1) for u in n.inputs), default=-1)
        if n in reds:
            level[n] = d = d + 1
        for v in n.outputs:
            dep[v] = d
    return level


def gen_attention(node: Node) -> KernelSource:
    """One kernel for an ``attention`` fused node (this module's docstring); Unsupported where the
    node's stages must run one by one."""
    try:
        parts = attention_parts(node)
    except GraphcError as err:
        raise Unsupported(str(err)) from None
    body = node.subgraph
    last = body.nodes[-1]
    if len(node.outputs) != 1 or list(body.outputs) != [last.outputs[0]]:
        raise Unsupported("an attention node whose output is not its last stage's")
    cfg = launch_config()
    params = Params(node, body)
    q_op, k_op = _stage_operands(parts.scores, params.args)
    probs_op, v_op = _stage_operands(parts.values, params.args)
    if q_op is None or k_op is None or v_op is None or probs_op is not None:
        raise Unsupported("attention's q, k^T and v must be views of the node's inputs")
    (q_arr, vq), (k_arr, vk), (v_arr, vv) = q_op, k_op, v_op
    scores = parts.scores.outputs[0]
    values = parts.values.outputs[0]
    dtype = scores.dtype
    if any(x.dtype != dtype for x in (values, parts.rows.outputs[0])):
        raise Unsupported("attention stages of different dtypes")
    batch = scores.shape[:-2]
    m, n = scores.shape[-2:]
    kd, d = vq.shape[-1], vv.shape[-1]
    if values.shape[:-2] != batch or values.shape[-2] != m:
        raise Unsupported("attention's value product broadcasts past the scores' batch")

    rows_body = parts.rows.subgraph
    reds = [r for r in rows_body.nodes if r.op in REDUCTION_OPS]
    for r in reds:
        if not r.attrs.get("keepdims") or r.inputs[0].shape[-1] != n:
            raise Unsupported("attention's row reduction must keep the reduced axis of the scores")
    row_args: dict[Value, str] = {}
    for inner, outer in list(zip(rows_body.data_inputs, parts.rows.inputs))[1:]:
        if outer not in params.args:
            raise Unsupported(f"attention's row operand %{outer.name} is not an input of the node")
        row_args[inner] = params.args[outer]

    item = {"f32": 4, "f64": 8}[dtype]
    B = min(cfg.reduce_block, max(next_pow2(max(n, d)), 4 if simulator() else 32))
    used = (n + kd) * item + B * 8 * len(reds)
    if used > SHARED_BYTES:
        raise Unsupported(f"a row of {n} keys needs {used} bytes of shared memory (> {SHARED_BYTES})")

    t = NUMBA_TYPES[dtype]
    zero = literal(0, dtype)
    bdims = decompose("bz", batch)
    if parts.head_perm is None:
        o_strides = list(c_strides(values.shape))
    else:
        final = c_strides(node.outputs[0].shape)
        o_strides = [0] * len(values.shape)
        for a, p in enumerate(parts.head_perm):
            o_strides[p] = final[a]
    o_view = View(values.shape, tuple(o_strides), 0)

    lines = [
        "tid = cuda.threadIdx.x",
        f"sc = cuda.shared.array({max(n, 1)}, {t})",
        f"qs = cuda.shared.array({max(kd, 1)}, {t})",
    ]
    for j, rn in enumerate(reds):
        lines.append(f"sh{j} = cuda.shared.array({B}, {NUMBA_TYPES[acc_dtype(rn)]})")
    row = [
        f"bz = p // {m}",
        f"i = p % {m}",
        f"qbase = {batch_base(vq, bdims)}",
        f"kbase = {batch_base(vk, bdims)}",
        f"vbase = {batch_base(vv, bdims)}",
        f"obase = {batch_base(o_view, bdims)}",
        f"for c in range(tid, {kd}, {B}):",
        f"    qs[c] = {element(q_arr, 'qbase', vq, 'i', 'c')}",
        "cuda.syncthreads()",
        f"for r in range(tid, {n}, {B}):",
        f"    acc = {zero}",
        f"    for c in range({kd}):",
        f"        acc += qs[c] * {element(k_arr, 'kbase', vk, 'c', 'r')}",
        "    sc[r] = acc",
    ]
    # The reduction stage over the row: its first operand (the scores) is sc[r].
    emitter = BodyEmitter(rows_body, row_args)
    known: dict[Value, str] = {rows_body.data_inputs[0]: "sc[r]"}
    level = _levels(rows_body.nodes, reds)
    dims = [*bdims, "i", "r"]
    for L in range(max(level.values(), default=-1) + 1):
        here = [(j, rn) for j, rn in enumerate(reds) if level[rn] == L]
        scope = Scope(IndexCtx(scores.shape, dims, None, f"d{L}_"), f"s{L}", known)
        for j, rn in here:
            acc_t = acc_dtype(rn)
            row.append(f"acc{j} = {identity(rn.op, acc_t)}")
            value = to_acc(emitter.emit(rn.inputs[0], scope), rn.inputs[0].dtype, acc_t)
            scope.lines.append(f"acc{j} = {combine(rn, f'acc{j}', value)}")
        row += [f"for r in range(tid, {n}, {B}):"] + indent(scope.code() or ["pass"], 1)
        row += tree(here, B)
        known.update({rn.outputs[0]: f"red{j}" for j, rn in here})
    scope = Scope(IndexCtx(scores.shape, dims, None, "f"), "sf", known)
    probs = emitter.emit(rows_body.outputs[0], scope)
    row += [f"for r in range(tid, {n}, {B}):"] + indent([*scope.code(), f"sc[r] = {probs}"], 1)
    row += [
        "cuda.syncthreads()",
        f"for c in range(tid, {d}, {B}):",
        f"    acc = {zero}",
        f"    for r in range({n}):",
        f"        acc += sc[r] * {element(v_arr, 'vbase', vv, 'r', 'c')}",
        f"    {element('out0', 'obase', o_view, 'i', 'c')} = acc",
        # Nobody may overwrite qs and sc (next row) before every thread is done with them.
        "cuda.syncthreads()",
    ]
    rows = numel(batch) * m
    lines += [f"for p in range(cuda.blockIdx.x, {rows}, cuda.gridDim.x):"] + indent(row, 1)
    launch = [f"kernel[{max(1, min(rows, cfg.max_blocks))}, {B}]({', '.join(params.names)})"] if rows else []
    return finish(node, params, [("kernel", kernel_def("kernel", params.names, lines))], launch)
