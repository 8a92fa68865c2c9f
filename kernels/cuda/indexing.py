"""CUDA generators of the indexing ops: gather, scatter_add and scatter_reduce (error flag on a bad index)."""

from __future__ import annotations

from collections.abc import Sequence

from graphc.ir import Node
from graphc.ir.ops import scatter_identity

from .loops import (
    IndexCtx,
    Params,
    affine,
    contiguous_strides,
    decompose,
    finish,
    grid_1d,
    launch_config,
    map_kernel,
    numel,
)
from .source import KernelSource, indent, kernel_def, literal


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
    return affine(ctx, icoeffs), affine(ctx, xcoeffs), xstr[axis]


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
    return map_kernel(node, node.outputs[0].shape, make, flag)


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
    return finish(node, params, kernels, launch, flag)


def _combine(reduction: str, dtype: str) -> list[str]:
    """Lines folding update ``u`` into ``out0[p]`` (which holds ``o``); a NaN update wins, a NaN stays."""
    if reduction == "mul":
        return [f"out0[p] = {'o and u' if dtype == 'bool' else 'o * u'}"]
    cmp = ">" if reduction == "max" else "<"
    return [f"if u {cmp} o or u != u:", "    out0[p] = u"]


def gen_scatter_reduce(node: Node) -> KernelSource:
    """Fill the output with the reduction's identity, then fold the updates in.

    CUDA has no atomic multiply, so one thread owns each (before-axis, after-axis) column of the
    output and folds that column's updates in index order (as the CPU kernel does): no two
    threads touch one element, the result is deterministic, and a scatter into a flat tensor
    (ONNX ScatterND) runs on one thread.
    """
    cfg = launch_config()
    idx, upd = node.inputs
    axis, shape, reduction = node.attrs["axis"], tuple(node.attrs["shape"]), node.attrs["reduction"]
    size = shape[axis]
    na, nb, k_n = numel(shape[:axis]), numel(shape[axis + 1 :]), idx.type.numel
    params = Params(node)
    params.add_flag()
    n_out, n_cols = numel(shape), na * nb
    init = literal(scatter_identity(reduction, upd.type.np_dtype).item(), upd.dtype)
    fill = [
        f"for i in range(cuda.grid(1), {n_out}, cuda.gridsize(1)):",
        f"    out0[i] = {init}",
    ]
    body = [
        f"a = t // {nb}",
        f"b = t % {nb}",
        f"for k in range({k_n}):",
        "    j = int64(in0[k])",
        "    if j < 0:",
        f"        j += {size}",
        f"    if 0 <= j < {size}:",
        f"        p = (a * {size} + j) * {nb} + b",
        f"        u = in1[(a * {k_n} + k) * {nb} + b]",
        "        o = out0[p]",
        *indent(_combine(reduction, upd.dtype), 2),
        "    else:",
        "        flag[0] = 1",
    ]
    fold = [f"for t in range(cuda.grid(1), {n_cols}, cuda.gridsize(1)):"] + indent(body, 1)
    kernels = [
        ("fill", kernel_def("fill", params.names, fill)),
        ("fold", kernel_def("fold", params.names, fold)),
    ]
    args = ", ".join(params.names)
    launch = []
    if n_out:
        launch.append(f"fill[{grid_1d(n_out, cfg)}, {cfg.threads}]({args})")
    if n_cols and k_n:
        launch.append(f"fold[{grid_1d(n_cols, cfg)}, {cfg.threads}]({args})")
    flag = f"scatter_reduce: index out of range [{-size}, {size}) on axis {axis}"
    return finish(node, params, kernels, launch, flag)
