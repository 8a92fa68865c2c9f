"""CUDA generators of the movement ops: reshape, transpose, slice, pad, concat."""

from __future__ import annotations

from graphc.ir import Node

from .loops import (
    IndexCtx,
    affine,
    contiguous_strides,
    map_kernel,
)
from .source import KernelSource, literal


def gen_reshape(node: Node) -> KernelSource:
    """A flat copy (the runtime skips reshapes whose output aliases the input)."""
    return map_kernel(node, node.outputs[0].shape, lambda ctx: ["out0[i] = in0[i]"])


def gen_transpose(node: Node) -> KernelSource:
    """out[d] = in[d permuted back]."""
    perm = node.attrs["perm"]
    strides = contiguous_strides(node.inputs[0].shape)
    coeffs = [strides[p] for p in perm]
    return map_kernel(node, node.outputs[0].shape, lambda ctx: [f"out0[i] = in0[{affine(ctx, coeffs)}]"])


def gen_slice(node: Node) -> KernelSource:
    """out[d] = in[start + d * step]."""
    strides = contiguous_strides(node.inputs[0].shape)
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    const = sum(s * st for s, st in zip(starts, strides))
    coeffs = [step * st for step, st in zip(steps, strides)]
    return map_kernel(
        node, node.outputs[0].shape, lambda ctx: [f"out0[i] = in0[{affine(ctx, coeffs, const)}]"]
    )


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
        off = affine(ctx, strides, const)
        if not conds:
            return [f"out0[i] = in0[{off}]"]
        return [f"if {' and '.join(conds)}:", f"    out0[i] = in0[{off}]", "else:", f"    out0[i] = {fill}"]

    return map_kernel(node, node.outputs[0].shape, make)


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
            off = affine(ctx, strides, -start * strides[axis])
            cond = f"{ctx.dim(axis)} < {start + size}" if ctx.domain[axis] != 1 else "True"
            lines += [f"{'if' if not lines else 'elif'} {cond}:", f"    out0[i] = in{m}[{off}]"]
            start += size
        return lines or ["pass"]

    return map_kernel(node, node.outputs[0].shape, make)
