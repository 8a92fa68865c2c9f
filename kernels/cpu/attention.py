"""The CPU kernel of a fused attention node: scores, row softmax and value product per block.

One parallel task per (batch matrix, block of query rows): BLAS computes the block's scores
q_rows @ k^T into a thread-local buffer, the fused reduction's body (generated over one matrix,
serial) turns them into probabilities in a second buffer while both sit in cache, and BLAS
multiplies those by v straight into the output, through the head transpose when the node has
one. Run as three kernels, the scores and probabilities of every matrix went to memory and
back twice. The stages and their operand views are the contract's (``ir.fused.attention_parts``,
``ir.fused.matmul_parts``); a node this kernel cannot take runs its stages one by one
(``staged``), as they ran before stitching.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from graphc.ir import GraphcError, Node, TensorType, Value
from graphc.ir.fused import OperandView, attention_parts, matmul_parts
from graphc.ir.views import View

from . import blas
from .cache import load_kernel
from .codegen import NP_TYPE, REDUCTIONS, Body, Unsupported, decorator, reduction_source, use_parallel
from .threads import num_threads
from .views import operand_array

# Query rows per task: a block's scores and probabilities (two buffers of rows x keys) stay
# within this many elements, so both fit in a core's L2 cache beside the operands' panels.
SCORE_BLOCK = 1 << 15
# Parallel tasks are handed out in at most this many chunks (each allocating its two buffers once).
TASK_CHUNKS = 64


@dataclass
class Stages:
    """A fused attention body taken apart: where q, k^T and v come from, the row body, the output."""

    scores: Node  # the fused matmul computing q @ k^T
    rows: Node  # the fused reduction computing the probabilities
    values: Node  # the fused matmul computing probabilities @ v
    head_perm: tuple[int, ...] | None  # the transpose of the product into the output, if any


def stages(node: Node) -> Stages:
    """The stage nodes of a fused attention node (``ir.fused.attention_parts``), or Unsupported."""
    try:
        parts = attention_parts(node)
    except GraphcError as err:
        raise Unsupported(str(err)) from None
    return Stages(parts.scores, parts.rows, parts.values, parts.head_perm)


def _matmul_parts(stage: Node) -> tuple[Node, tuple[OperandView, OperandView], list[Value]]:
    """A matmul stage's matmul, its operand views, and the values its operand arrays bind to."""
    if stage.op == "matmul":
        views = tuple(OperandView(v, (), View.dense(v.shape)) for v in stage.inputs)
        return stage, views, list(stage.inputs)  # type: ignore[return-value]
    parts = matmul_parts(stage)  # attention_parts checked: a product with no epilogue
    return parts.matmul, parts.operands, list(stage.subgraph.inputs)


def per_matrix_rows(rows: Node) -> Body:
    """The reduction stage's body over one matrix of scores: the batch dims dropped from every
    value (values of rank <= 2, or with leading dims of 1, broadcast over all matrices). The
    contract (``ir.fused.row_body_fits``) already holds: last-axis reductions, no random op."""
    body = rows.subgraph
    domain = rows.outputs[0].shape
    lead = len(domain) - 2

    def trim(v: Value) -> Value:
        extra = len(v.shape) - 2
        if extra <= 0:
            return Value(v.name, v.type)
        if v.shape[:extra] != domain[:lead] and any(d != 1 for d in v.shape[:extra]):
            raise Unsupported(f"a {v.type} value varies over the attention's batch dims")
        return Value(v.name, TensorType(v.shape[extra:], v.dtype))

    env = {v: trim(v) for v in body.inputs}
    nodes = []
    for n in body.nodes:
        if n.op == "broadcast_to" and len(n.attrs["shape"]) > 2:
            raise Unsupported(f"{n.op} in attention's row body")
        attrs = dict(n.attrs)
        if n.op in REDUCTIONS:
            attrs["axes"] = (1,)
        outs = [trim(v) for v in n.outputs]
        if n.op in REDUCTIONS and not attrs.get("keepdims", False):
            raise Unsupported("attention's row body drops the reduced axis")
        nodes.append(Node(n.op, [env[v] for v in n.inputs], attrs, outs, n.source))
        env.update(zip(n.outputs, outs))
    return Body([env[v] for v in body.inputs], nodes, [env[v] for v in body.outputs])


def driver_source(row_source: str, dtype: str, sliced: list[bool], parallel: bool, int_bytes: int) -> str:
    """The kernel module: the row function ``_rows`` then the parallel driver ``kernel``.

    Extra operands of the row body follow the fixed arguments; ``sliced[k]`` says whether the
    k-th varies along the query rows (then each task passes its block of rows).
    """
    bi = blas.BLAS_INT[int_bytes]
    extras = "".join(f", e{k}" for k in range(len(sliced)))
    row_args = "".join(f"e{k}[lo:hi], " if s else f"e{k}, " for k, s in enumerate(sliced))
    loop = "prange" if parallel else "range"
    nt, rm = blas.NO_TRANS, blas.ROW_MAJOR
    return (
        row_source
        + f"""

from graphc.kernels.cpu.blas import batch_offset, call_gemm


{decorator(parallel)}
def kernel(
    fn, tq, tk, tv, m, n, k, d, one, zero, pq, ldq, pk, ldk, pv, ldv, po, ldo,
    shape, sq, sk, sv, so, nblocks, item{extras},
):
    nbatch = 1
    for a in range(shape.shape[0]):
        nbatch *= shape[a]
    ntasks = nbatch * nblocks
    nch = min(ntasks, {TASK_CHUNKS})
    most = (m + nblocks - 1) // nblocks
    for c in {loop}(nch):
        s = np.empty((most, n), {NP_TYPE[dtype]})
        p = np.empty((most, n), {NP_TYPE[dtype]})
        for t in range(c * ntasks // nch, (c + 1) * ntasks // nch):
            matrix = t // nblocks
            part = t % nblocks
            oq = batch_offset(matrix, shape, sq)
            ok = batch_offset(matrix, shape, sk)
            ov = batch_offset(matrix, shape, sv)
            oo = batch_offset(matrix, shape, so)
            lo = part * m // nblocks
            hi = (part + 1) * m // nblocks
            oq += lo * ldq if tq == {nt} else lo
            oo += lo * ldo
            call_gemm(
                fn, np.int32({rm}), np.int32(tq), np.int32(tk), {bi}(hi - lo), {bi}(n), {bi}(k), one,
                pq + oq * item, {bi}(ldq), pk + ok * item, {bi}(ldk), zero, s.ctypes.data, {bi}(n),
            )
            _rows(s[: hi - lo], {row_args}p[: hi - lo])
            call_gemm(
                fn, np.int32({rm}), np.int32({nt}), np.int32(tv), {bi}(hi - lo), {bi}(d), {bi}(n), one,
                p.ctypes.data, {bi}(n), pv + ov * item, {bi}(ldv), zero, po + oo * item, {bi}(ldo),
            )
"""
    )


def build_attention(node: Node) -> tuple[str, Callable[[], Callable[..., bool]]]:
    """The fused kernel of an attention node: its source, and a loader of its wrapper, which
    returns False, having written nothing, where a call's arrays do not suit it (the caller then
    runs the stages)."""
    st = stages(node)
    lib = blas.numpy_openblas()
    if lib is None:
        raise Unsupported("no bundled OpenBLAS to call per task")
    body = node.subgraph
    position = {v: i for i, v in enumerate(body.inputs)}
    score_mm, score_ops, score_vals = _matmul_parts(st.scores)
    value_mm, value_ops, value_vals = _matmul_parts(st.values)
    dtype = st.scores.outputs[0].dtype
    if dtype not in ("f32", "f64") or any(v.dtype != dtype for v in (*score_mm.inputs, *value_mm.inputs)):
        raise Unsupported(f"attention in {dtype}")
    scores_shape = st.scores.outputs[0].shape
    batch = scores_shape[:-2]
    m, n = scores_shape[-2:]

    def bound(stage: Node) -> list[int | None]:  # None: the probabilities, made inside
        return [position.get(v) for v in stage.inputs]

    a_args, v_args = bound(st.scores), bound(st.values)
    get_q, get_k = (operand_array(ov, score_vals) for ov in score_ops)
    get_v = operand_array(value_ops[1], value_vals)

    row_body = per_matrix_rows(st.rows)
    if not any(n_.op in REDUCTIONS for n_ in row_body.nodes):
        raise Unsupported("attention's row body has no reduction")
    row_source = reduction_source(
        row_body, "attention rows (the reduction stage over a block of scores)", function="_rows", serial=True
    )
    extra_args = [position[v] for v in st.rows.inputs[1:]]
    extra_shapes = [v.shape for v in row_body.inputs[1:]]
    sliced = [len(s) == 2 and s[0] != 1 for s in extra_shapes]
    parallel = use_parallel(math.prod(scores_shape), math.prod(batch) * m)
    source = "# graphc CPU kernel: fused attention (per block of query rows: BLAS, rows, BLAS)\n"
    source += driver_source(row_source, dtype, sliced, parallel, lib.int_bytes)
    inverse = tuple(np.argsort(st.head_perm)) if st.head_perm is not None else None
    n_in = len(node.inputs)
    nbatch = math.prod(batch)

    def make() -> Callable[..., bool]:
        fn = load_kernel(source)
        gemm = lib.gemm[np.dtype(st.scores.outputs[0].type.np_dtype)]
        typed = np.dtype(st.scores.outputs[0].type.np_dtype).type
        one, zero = typed(1), typed(0)
        shape = np.array(batch, np.int64)

        def fused_attention(*arrays: np.ndarray) -> bool:
            ins, out = arrays[:n_in], arrays[n_in]
            a_ins = [ins[i] for i in a_args]
            q, kt = get_q(a_ins), get_k(a_ins)
            v = get_v([None if i is None else ins[i] for i in v_args])
            if out.size == 0 or n == 0 or q.shape[-1] == 0:
                return False
            o = out.transpose(inverse) if inverse is not None else out
            layouts = [blas.matrix_layout(x) for x in (q, kt, v, o)]
            strides = [blas.batch_strides(x, batch) for x in (q, kt, v, o)]
            if None in layouts or any(s is None for s in strides) or layouts[3][0] != blas.NO_TRANS:
                return False
            extras = [ins[i].reshape(s) for i, s in zip(extra_args, extra_shapes)]
            threads = num_threads() if parallel else 1
            nblocks = max(-(-m * n // SCORE_BLOCK), -(-threads // nbatch))
            (lq, dq), (lk, dk), (lv, dv), (_, do) = layouts
            with blas.one_thread_per_call(lib):
                fn(
                    gemm, lq, lk, lv, m, n, q.shape[-1], v.shape[-1], one, zero,
                    q.ctypes.data, dq, kt.ctypes.data, dk, v.ctypes.data, dv, o.ctypes.data, do,
                    shape, *strides, min(nblocks, m), out.itemsize, *extras,
                )  # fmt: skip
            return True

        return fused_attention

    return source, make
