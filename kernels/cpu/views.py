"""Matmul operands as NumPy views of a fused body's inputs, from the contract's ``OperandView``s.

``ir.fused.matmul_parts`` says which body input each operand reads and through which chain of
transposes, slices and reshapes (``ir.views``: one strided view of the input). Inputs reach a
kernel C-contiguous with exactly their types' shapes (docs/CONTRACTS.md, "Kernels"), so whether
BLAS takes the view as it is (``ir.views.has_blas_layout``) is known when the kernel is built: an
operand without a BLAS layout is copied to a dense array before the product, every call, and no
other operand is checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from graphc.ir import Node, Value
from graphc.ir.fused import OperandView
from graphc.ir.ops import is_last_axes_swap
from graphc.ir.views import has_blas_layout

Getter = Callable[[list], np.ndarray]


def _replay(node: Node, inner: Getter) -> Getter:
    """The getter of ``node``'s output from its input's getter (NumPy's own no-copy view)."""
    if node.op == "transpose":
        perm = tuple(node.attrs["perm"])
        if is_last_axes_swap(node):
            return lambda ins: inner(ins).swapaxes(-1, -2)
        return lambda ins: inner(ins).transpose(perm)
    if node.op == "slice":
        a = node.attrs
        index = tuple(slice(*r) for r in zip(a["starts"], a["stops"], a["steps"]))
        return lambda ins: inner(ins)[index]
    shape = node.outputs[0].shape  # a view: ir.views said NumPy's reshape needs no copy here
    return lambda ins: inner(ins).reshape(shape)


def operand_array(ov: OperandView, inputs: Sequence[Value]) -> Getter:
    """``ins -> array``: the operand as a NumPy array over ``ins`` (the arrays of ``inputs``, in
    order): the input itself, its view through the operand's chain, or, where that view has no
    BLAS layout (``has_blas_layout(ov.view)``), a dense copy of it.

    NumPy hands BLAS a transposed or strided view as it is (a transpose flag, a leading
    dimension): attention's q, k and v are read straight out of the QKV projection's output.
    """
    k = list(inputs).index(ov.input)
    chain = ov.chain
    if not chain:
        return lambda ins: ins[k]
    if len(chain) == 1 and is_last_axes_swap(chain[0]):  # a weight: the common case, one call less
        get: Getter = lambda ins: ins[k].swapaxes(-1, -2)  # noqa: E731
    else:
        get = lambda ins: ins[k]  # noqa: E731
        for node in chain:
            get = _replay(node, get)
    if has_blas_layout(ov.view):
        return get
    view = get
    return lambda ins: np.ascontiguousarray(view(ins))
