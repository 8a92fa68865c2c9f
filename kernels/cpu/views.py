"""Matmul operands as NumPy views of a fused body's inputs through its prologue (view chains)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphc.ir import Node, Value
from graphc.ir.ops import is_last_axes_swap

from .codegen import Unsupported


def blasable(x: np.ndarray) -> bool:
    """Whether np.matmul hands ``x`` to BLAS as it is (one unit-stride axis of its matrices)."""
    # NumPy's matmul calls BLAS only for matrices with one unit-stride axis; others take its
    # naive loop, far slower than copying first.
    if x.ndim < 2 or x.size == 0:
        return True
    item, (r, c), (sr, sc) = x.itemsize, x.shape[-2:], x.strides[-2:]
    return (sc == item and sr % item == 0 and sr >= c * item) or (
        sr == item and sc % item == 0 and sc >= r * item
    )


def operand_view(
    v: Value, inputs: list[Value], prologue: list[Node]
) -> tuple[Callable[[list], np.ndarray], bool]:
    """``ins -> array``: operand ``v`` as a NumPy view of a body input through its prologue, and
    whether that view may lack a BLAS layout (only slices, reshapes and permuting transposes can
    leave one without a unit-stride axis; checking costs a few microseconds per call).

    NumPy hands BLAS a transposed or strided view as it is (a transpose flag, a leading
    dimension): attention's q, k and v are read straight out of the QKV projection's output.
    """
    if v in inputs:
        k = inputs.index(v)
        return (lambda ins: ins[k]), False
    node = next((n for n in prologue if n.outputs[0] is v), None)
    if node is None:
        raise Unsupported("matmul operands computed inside the body")
    if is_last_axes_swap(node) and node.inputs[0] in inputs:
        k = inputs.index(node.inputs[0])  # the common case (a weight), one call less
        return (lambda ins: ins[k].swapaxes(-1, -2)), False
    inner, _ = operand_view(node.inputs[0], inputs, prologue)
    if node.op == "transpose":
        perm = tuple(node.attrs["perm"])
        return (lambda ins: inner(ins).transpose(perm)), True
    if node.op == "slice":
        a = node.attrs
        index = tuple(slice(*r) for r in zip(a["starts"], a["stops"], a["steps"]))
        return (lambda ins: inner(ins)[index]), True
    shape = node.outputs[0].shape
    return (lambda ins: inner(ins).reshape(shape)), True  # a copy where no view has this shape
