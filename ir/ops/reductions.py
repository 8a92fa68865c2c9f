"""Reductions (sum, max, min, prod; argmax) and ``matmul``."""

from __future__ import annotations

from ..errors import GraphcError
from ..types import TensorType
from .registry import AXES, AXIS, Attr, BoolSpec, _check, _register, _RuleError, _same_dtype, broadcast_shapes


# ---------------------------------------------------------------- reductions
def _check_axes(rank: int, axes) -> tuple[int, ...]:
    axes = tuple(axes)
    _check(all(0 <= a < rank for a in axes), f"axes {axes} out of range for rank {rank}")
    _check(len(set(axes)) == len(axes), f"repeated axis in {axes}")
    return axes


def _reduce(inputs, attrs):
    (x,) = inputs
    axes = _check_axes(x.rank, attrs["axes"])
    shape = tuple((1 if attrs["keepdims"] else None) if i in axes else d for i, d in enumerate(x.shape))
    return [TensorType(tuple(d for d in shape if d is not None), x.dtype)]


def _argmax(inputs, attrs):
    (x,) = inputs
    (axis,) = _check_axes(x.rank, (attrs["axis"],))
    _check(x.shape[axis] > 0, "argmax of an empty axis")
    shape = list(x.shape)
    if attrs["keepdims"]:
        shape[axis] = 1
    else:
        del shape[axis]
    return [TensorType(tuple(shape), "i64")]


def _reduce_numeric(inputs, attrs):
    _check(inputs[0].dtype != "bool", "prod of bool; cast first")
    return _reduce(inputs, attrs)


# prod: the product over the axes (1 over none), in the operand's dtype (integers wrap).
REDUCTION_OPS = ("sum", "max", "min", "prod")
_REDUCE_ATTRS = {"axes": Attr(AXES), "keepdims": Attr(BoolSpec(), False)}
for _name in REDUCTION_OPS:
    _register(_name, 1, "reduction", _reduce_numeric if _name == "prod" else _reduce, _REDUCE_ATTRS)
_register("argmax", 1, "opaque", _argmax, {"axis": Attr(AXIS), "keepdims": Attr(BoolSpec(), False)})


# ---------------------------------------------------------------- matmul
def _matmul(inputs, attrs):
    a, b = inputs
    dtype = _same_dtype(inputs)
    _check(dtype != "bool", "matmul of bool")
    _check(a.rank >= 2 and b.rank >= 2, "matmul operands need rank >= 2 (reshape vectors first)")
    _check(
        a.shape[-1] == b.shape[-2],
        f"inner dimensions differ: {a.shape[-1]} (left) vs {b.shape[-2]} (right)",
    )
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except GraphcError as err:
        raise _RuleError(f"batch dimensions: {err}") from None
    return [TensorType((*batch, a.shape[-2], b.shape[-1]), dtype)]


_register("matmul", 2, "opaque", _matmul)
