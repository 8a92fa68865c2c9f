"""The registry of primitive ops: what each op *is* (arity, attributes, type rule, fusion class).

What an op *does* lives elsewhere, keyed by the op's name: reference kernels in
kernels/reference, VJP rules in passes/autodiff, code generators in kernels/cpu and kernels/cuda.
A coverage test walks ``REGISTRY`` and names every table an op is missing from.

Fusion classes, in the spirit of TVM's op patterns:
  pointwise  elementwise on one input (output index = input index)
  broadcast  elementwise over several inputs with NumPy broadcasting (and broadcast_to)
  reduction  reduces some axes
  injective  data movement where each output element reads one input element
  opaque     anything else (matmul, gather, im2col, ...): never fused into, may take epilogues
  source     nullary ops (const, rng) that a fused kernel can compute inline
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import GraphcError
from .types import DTYPES, FLOAT_DTYPES, INT8_DTYPES, INT_DTYPES, QUANT_DTYPES, TensorType, dtype_names

if TYPE_CHECKING:
    from .graph import Node

TypeRule = Callable[[list[TensorType], dict], list[TensorType]]

FUSION_CLASSES = ("pointwise", "broadcast", "reduction", "injective", "opaque", "source")
# The kinds of fused node (docs/CONTRACTS.md, "Fused nodes").
FUSED_KINDS = ("pointwise", "reduction", "matmul", "attention")

# Limits every attribute and every inferred type keeps to, whatever the graph came from.
MAX_RANK = 32
MAX_NUMEL = 2**40  # elements of one value (and the largest size-like attribute)
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1  # a bool/int attribute fits int64 or uint64
_MAX_NESTING = 4


class AttrError(Exception):
    """Raised by an attribute spec; normalize_attrs turns it into a GraphcError naming op and key."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class IntSpec:
    """An int (not a bool) in ``[lo, hi]``."""

    lo: int = _MIN_INT
    hi: int = _MAX_INT

    def check(self, value: object) -> int:
        """``value`` if it is an int in range; else AttrError."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise AttrError(f"must be an int, got {_show(value)}")
        if not self.lo <= value <= self.hi:
            raise AttrError(f"must lie in [{self.lo}, {self.hi}], got {_show(value)}")
        return value


@dataclass(frozen=True)
class BoolSpec:
    """True or False."""

    def check(self, value: object) -> bool:
        """``value`` if it is a bool; else AttrError."""
        if not isinstance(value, bool):
            raise AttrError(f"must be true or false, got {_show(value)}")
        return value


@dataclass(frozen=True)
class RealSpec:
    """A real number: a bool, an int that fits 64 bits, or a float (inf and NaN included)."""

    def check(self, value: object) -> bool | int | float:
        """``value`` if it is such a number; else AttrError."""
        if isinstance(value, bool) or isinstance(value, float):
            return value
        if isinstance(value, int):
            return IntSpec().check(value)
        raise AttrError(f"must be a number, got {_show(value)}")


@dataclass(frozen=True)
class ChoiceSpec:
    """One of a fixed set of strings."""

    choices: tuple[str, ...]

    def check(self, value: object) -> str:
        """``value`` if it is one of the choices; else AttrError."""
        if not isinstance(value, str) or value not in self.choices:
            raise AttrError(f"must be one of {list(self.choices)}, got {_show(value)}")
        return value


@dataclass(frozen=True)
class TupleSpec:
    """A tuple (a list in JSON) of items that each meet ``item``; ``length`` entries if given."""

    item: object
    length: int | None = None
    max_length: int = MAX_RANK

    def check(self, value: object) -> tuple:
        """``value`` if it is such a tuple; else AttrError."""
        if not isinstance(value, tuple):
            raise AttrError(f"must be a list, got {_show(value)}")
        if self.length is not None and len(value) != self.length:
            raise AttrError(f"must have {self.length} entries, got {_show(value)}")
        if len(value) > self.max_length:
            raise AttrError(f"must have at most {self.max_length} entries, got {len(value)}")
        return tuple(self.item.check(v) for v in value)


@dataclass(frozen=True)
class ShapeSpec:
    """A shape: at most MAX_RANK non-negative ints (``rank`` of them if given) whose product
    is at most MAX_NUMEL."""

    rank: int | None = None

    def check(self, value: object) -> tuple[int, ...]:
        """``value`` if it is such a shape; else AttrError."""
        shape = TupleSpec(IntSpec(0, MAX_NUMEL), self.rank).check(value)
        if math.prod(shape) > MAX_NUMEL:
            raise AttrError(f"has more than {MAX_NUMEL} elements: {_show(shape)}")
        return shape


REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: what its values must be, and its default (REQUIRED if none)."""

    spec: IntSpec | BoolSpec | RealSpec | ChoiceSpec | TupleSpec | ShapeSpec
    default: object = REQUIRED


# Attribute specs shared by several ops.
DTYPE = ChoiceSpec(dtype_names())  # bf16 too, before ml_dtypes is loaded
AXIS = IntSpec(0, MAX_RANK - 1)
AXES = TupleSpec(AXIS)
SHAPE = ShapeSpec()
SIZE = IntSpec(0, MAX_NUMEL)  # a count or index of elements
POSITIVE = IntSpec(1, MAX_NUMEL)
POSITIVE_PAIR = TupleSpec(POSITIVE, length=2)
NONNEGATIVE_PAIR = TupleSpec(SIZE, length=2)


@dataclass(frozen=True)
class OpDef:
    """One primitive op: its name, arity (None = variadic), attributes (name -> Attr), rule."""

    name: str
    arity: int | None
    fusion: str
    rule: TypeRule
    attrs: dict[str, Attr] = field(default_factory=dict)


REGISTRY: dict[str, OpDef] = {}


def _register(
    name: str, arity: int | None, fusion: str, rule: TypeRule, attrs: dict[str, Attr] | None = None
) -> None:
    assert fusion in FUSION_CLASSES, fusion
    assert all(isinstance(a, Attr) for a in (attrs or {}).values()), name
    REGISTRY[name] = OpDef(name, arity, fusion, rule, dict(attrs or {}))


def get_op(name: str) -> OpDef:
    """The registry entry of an op, or an error naming the unknown op."""
    if not isinstance(name, str):
        raise GraphcError(f"op name must be a string, got {_show(name)}")
    try:
        return REGISTRY[name]
    except KeyError:
        raise GraphcError(f"unknown primitive op {_show(name)}") from None


def normalize_attrs(op: str, attrs: dict | None) -> dict:
    """Fill in default attributes and check every one against the op's declared spec.

    Lists become tuples and NumPy scalars Python numbers; an unknown, missing or ill-typed
    attribute (a string where a number belongs, a negative window, a fractional stride, a
    shape of too many elements, ...) is a GraphcError naming the op and the attribute. Every
    graph, whatever its source (tracing, the text form, JSON, passes), is built through here.
    """
    opdef = get_op(op)
    if attrs is None:
        attrs = {}
    if not isinstance(attrs, dict):
        raise GraphcError(f"{op}: attributes must be a mapping, got {_show(attrs)}")
    unknown = [k for k in attrs if k not in opdef.attrs]
    if unknown:
        raise GraphcError(f"{op}: unknown attribute(s) {sorted(map(_show, unknown))}")
    out = {}
    for key, attr in opdef.attrs.items():
        if key not in attrs:
            if attr.default is REQUIRED:
                raise GraphcError(f"{op}: missing required attribute {key!r}")
            out[key] = attr.default
            continue
        try:
            out[key] = attr.spec.check(_freeze(attrs[key], 0))
        except AttrError as err:
            raise GraphcError(f"{op}: attribute {key!r} {err}") from None
    return out


def _freeze(value, depth: int):
    if depth > _MAX_NESTING:
        raise AttrError("is nested too deeply")
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim else value.item()
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, depth + 1) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_result(op: str, types: list[TensorType]) -> list[TensorType]:
    for t in types:
        if t.rank > MAX_RANK or math.prod(t.shape) > MAX_NUMEL:
            raise GraphcError(f"{op}: result {t} has more than {MAX_RANK} axes or {MAX_NUMEL} elements")
    return types


def infer_types(op: str, inputs: Sequence[TensorType], attrs: dict) -> list[TensorType]:
    """Apply an op's type rule; raises GraphcError naming the op and the operand types."""
    opdef = get_op(op)
    if opdef.arity is not None and len(inputs) != opdef.arity:
        raise GraphcError(f"{op} takes {opdef.arity} operand(s), got {len(inputs)}")
    try:
        return _check_result(op, opdef.rule(list(inputs), attrs))
    except _RuleError as err:
        shapes = ", ".join(str(t) for t in inputs)
        raise GraphcError(f"{op}: {err} (operands: {shapes})") from None


class _RuleError(Exception):
    pass


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise _RuleError(message)


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy's broadcasting of shapes; raises GraphcError when they do not broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise GraphcError(f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _same_dtype(inputs: list[TensorType]) -> str:
    dtypes = {t.dtype for t in inputs}
    _check(len(dtypes) == 1, f"dtypes differ: {', '.join(t.dtype for t in inputs)}")
    return inputs[0].dtype


def _bcast(inputs: list[TensorType]) -> tuple[int, ...]:
    try:
        return broadcast_shapes(*(t.shape for t in inputs))
    except GraphcError as err:
        raise _RuleError(str(err)) from None


# ---------------------------------------------------------------- pointwise
def _unary_float(inputs, attrs):
    (x,) = inputs
    _check(x.dtype in FLOAT_DTYPES, f"needs a float operand, got {x.dtype}")
    return [x]


def _unary_numeric(inputs, attrs):
    (x,) = inputs
    _check(x.dtype != "bool", "needs a numeric operand, got bool")
    return [x]


def _cast(inputs, attrs):
    return [TensorType(inputs[0].shape, attrs["dtype"])]


def _unary_bitwise(inputs, attrs):
    (x,) = inputs
    _check(x.dtype in INT_DTYPES or x.dtype == "bool", f"needs an integer or bool operand, got {x.dtype}")
    return [x]


# acos/asin/atanh: NaN outside [-1, 1] (atanh: +-inf at +-1); acosh: NaN below 1.
UNARY_FLOAT = (
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "tanh",
    "erf",
    "sin",
    "cos",
    "reciprocal",
    "acos",
    "asin",
    "atan",
    "acosh",
    "asinh",
    "atanh",
)
UNARY_NUMERIC = ("neg", "abs", "sign")
# floor/ceil/round (half to even)/trunc: integral floats; on integers they return the operand.
ROUNDING = ("floor", "ceil", "round", "trunc")
for _name in UNARY_FLOAT:
    _register(_name, 1, "pointwise", _unary_float)
for _name in UNARY_NUMERIC + ROUNDING:
    _register(_name, 1, "pointwise", _unary_numeric)
_register("cast", 1, "pointwise", _cast, {"dtype": Attr(DTYPE)})
# bitwise_not: ~x on integers (two's complement), logical not on bool.
_register("bitwise_not", 1, "pointwise", _unary_bitwise)


# ---------------------------------------------------------------- broadcast
def _arith(inputs, attrs):
    dtype = _same_dtype(inputs)
    _check(dtype != "bool", "arithmetic on bool; cast first")
    return [TensorType(_bcast(inputs), dtype)]


def _float_binary(inputs, attrs):
    dtype = _same_dtype(inputs)
    _check(dtype in FLOAT_DTYPES, f"needs float operands, got {dtype}")
    return [TensorType(_bcast(inputs), dtype)]


def _bitwise(inputs, attrs):
    dtype = _same_dtype(inputs)
    _check(dtype in INT_DTYPES or dtype == "bool", f"needs integer or bool operands, got {dtype}")
    return [TensorType(_bcast(inputs), dtype)]


def _shift(inputs, attrs):
    dtype = _same_dtype(inputs)
    _check(dtype in INT_DTYPES, f"needs integer operands, got {dtype}")
    return [TensorType(_bcast(inputs), dtype)]


def _compare(inputs, attrs):
    _same_dtype(inputs)
    return [TensorType(_bcast(inputs), "bool")]


def _where(inputs, attrs):
    cond, a, b = inputs
    _check(cond.dtype == "bool", f"condition must be bool, got {cond.dtype}")
    dtype = _same_dtype([a, b])
    return [TensorType(_bcast(inputs), dtype)]


def _broadcast_to(inputs, attrs):
    (x,) = inputs
    shape = tuple(attrs["shape"])
    try:
        out = broadcast_shapes(x.shape, shape)
    except GraphcError as err:
        raise _RuleError(str(err)) from None
    _check(out == shape, f"cannot broadcast {x.shape} to {shape}")
    return [TensorType(shape, x.dtype)]


# fmod: C's remainder (the dividend's sign); remainder and floordiv: Python's and NumPy's (the
# divisor's sign, floor(a / b)); an integer divisor of 0 gives 0, as NumPy does.
ARITH_BINARY = ("add", "sub", "mul", "maximum", "minimum", "fmod", "remainder", "floordiv")
FLOAT_BINARY = ("div", "pow")
COMPARE_BINARY = ("lt", "le", "eq", "ne", "gt", "ge")
# Bitwise and/or/xor on integers and bool (where they are logical and/or/xor).
BITWISE_BINARY = ("bitwise_and", "bitwise_or", "bitwise_xor")
# Shifts of integers by a shift count of the same dtype (NumPy's and PyTorch's rule): a count
# outside [0, bits) shifts everything out (0; -1 for a negative operand shifted right);
# right shifts of signed integers are arithmetic.
SHIFT_BINARY = ("left_shift", "right_shift")
for _name in ARITH_BINARY:
    _register(_name, 2, "broadcast", _arith)
for _name in FLOAT_BINARY:
    _register(_name, 2, "broadcast", _float_binary)
for _name in COMPARE_BINARY:
    _register(_name, 2, "broadcast", _compare)
for _name in BITWISE_BINARY:
    _register(_name, 2, "broadcast", _bitwise)
for _name in SHIFT_BINARY:
    _register(_name, 2, "broadcast", _shift)
_register("where", 3, "broadcast", _where)
_register("broadcast_to", 1, "broadcast", _broadcast_to, {"shape": Attr(SHAPE)})


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


# ---------------------------------------------------------------- movement
def _reshape(inputs, attrs):
    (x,) = inputs
    out = TensorType(tuple(attrs["shape"]), x.dtype)
    _check(out.numel == x.numel, f"cannot reshape {x.shape} ({x.numel} elements) to {out.shape}")
    return [out]


def _transpose(inputs, attrs):
    (x,) = inputs
    perm = tuple(attrs["perm"])
    _check(sorted(perm) == list(range(x.rank)), f"perm {perm} is not a permutation of rank {x.rank}")
    return [TensorType(tuple(x.shape[p] for p in perm), x.dtype)]


def is_last_axes_swap(node: Node) -> bool:
    """A transpose that swaps the last two axes and keeps the leading ones in place."""
    if node.op != "transpose":
        return False
    perm = tuple(node.attrs["perm"])
    rank = len(perm)
    return rank >= 2 and perm == (*range(rank - 2), rank - 1, rank - 2)


def _slice(inputs, attrs):
    (x,) = inputs
    starts, stops, steps = attrs["starts"], attrs["stops"], attrs["steps"]
    _check(
        len(starts) == len(stops) == len(steps) == x.rank,
        f"starts/stops/steps need one entry per axis ({x.rank})",
    )
    shape = []
    for d, (start, stop, step) in enumerate(zip(starts, stops, steps)):
        _check(step > 0, f"step must be positive on axis {d}, got {step}")
        _check(0 <= start <= stop <= x.shape[d], f"bad range {start}:{stop} on axis {d}")
        shape.append(len(range(start, stop, step)))
    return [TensorType(tuple(shape), x.dtype)]


def _pad(inputs, attrs):
    (x,) = inputs
    pads = attrs["pads"]
    _check(len(pads) == x.rank, f"pads need one (low, high) pair per axis ({x.rank})")
    _check(all(lo >= 0 and hi >= 0 for lo, hi in pads), "pads must be non-negative")
    _check_fits(attrs["value"], x.dtype, "pad value")
    return [TensorType(tuple(d + lo + hi for d, (lo, hi) in zip(x.shape, pads)), x.dtype)]


def _concat(inputs, attrs):
    _check(len(inputs) >= 1, "concat needs at least one operand")
    dtype = _same_dtype(inputs)
    axis = attrs["axis"]
    first = inputs[0]
    _check(0 <= axis < first.rank, f"axis {axis} out of range for rank {first.rank}")
    for t in inputs:
        _check(t.rank == first.rank, "operands differ in rank")
        same = all(t.shape[i] == first.shape[i] for i in range(t.rank) if i != axis)
        _check(same, f"shapes differ off the concat axis {axis}")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in inputs)
    return [TensorType(tuple(shape), dtype)]


_register("reshape", 1, "injective", _reshape, {"shape": Attr(SHAPE)})
_register("transpose", 1, "injective", _transpose, {"perm": Attr(AXES)})
_SLICE = {"starts": Attr(TupleSpec(SIZE)), "stops": Attr(TupleSpec(SIZE)), "steps": Attr(TupleSpec(POSITIVE))}
_register("slice", 1, "injective", _slice, _SLICE)
_PAD = {"pads": Attr(TupleSpec(NONNEGATIVE_PAIR)), "value": Attr(RealSpec(), 0.0)}
_register("pad", 1, "injective", _pad, _PAD)
_register("concat", None, "injective", _concat, {"axis": Attr(AXIS)})


# ---------------------------------------------------------------- indexing
def _gather(inputs, attrs):
    x, idx = inputs
    axis = attrs["axis"]
    _check(0 <= axis < x.rank, f"axis {axis} out of range for rank {x.rank}")
    _check(idx.dtype in INT_DTYPES, f"indices must be integers, got {idx.dtype}")
    return [TensorType((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]), x.dtype)]


def _scatter_add(inputs, attrs):
    idx, updates = inputs
    axis, shape = attrs["axis"], tuple(attrs["shape"])
    _check(idx.dtype in INT_DTYPES, f"indices must be integers, got {idx.dtype}")
    _check(0 <= axis < len(shape), f"axis {axis} out of range for shape {shape}")
    expect = (*shape[:axis], *idx.shape, *shape[axis + 1 :])
    _check(updates.shape == expect, f"updates must have shape {expect}, got {updates.shape}")
    return [TensorType(shape, updates.dtype)]


_register("gather", 2, "opaque", _gather, {"axis": Attr(AXIS)})
_register("scatter_add", 2, "opaque", _scatter_add, {"axis": Attr(AXIS), "shape": Attr(SHAPE)})
# scatter_add with another combine: the output starts at the reduction's identity (mul 1, max the
# lowest value, min the highest) and each update is multiplied / max-ed / min-ed in.
SCATTER_REDUCTIONS = ("mul", "max", "min")


def scatter_identity(reduction: str, dtype: np.dtype) -> object:
    """scatter_reduce's starting value: 1 (mul), the lowest (max) or highest (min) value of ``dtype``."""
    dtype = np.dtype(dtype)
    if reduction == "mul":
        return dtype.type(1)
    high = reduction == "min"
    if dtype == np.bool_:
        return np.bool_(high)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return dtype.type(info.max if high else info.min)
    return dtype.type(np.inf if high else -np.inf)


_register(
    "scatter_reduce",
    2,
    "opaque",
    _scatter_add,
    {"axis": Attr(AXIS), "shape": Attr(SHAPE), "reduction": Attr(ChoiceSpec(SCATTER_REDUCTIONS))},
)


# ---------------------------------------------------------------- image
def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution/pooling window along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _window(attrs, h, w):
    (kh, kw), (sh, sw) = attrs["kernel"], attrs["stride"]
    (ph, pw), (dh, dw) = attrs["padding"], attrs["dilation"]
    oh = conv_output_size(h, kh, sh, ph, dh)
    ow = conv_output_size(w, kw, sw, pw, dw)
    _check(oh > 0 and ow > 0, f"window {kh}x{kw} does not fit input {h}x{w}")
    return kh, kw, oh, ow


def _im2col(inputs, attrs):
    (x,) = inputs
    _check(x.rank == 4, f"im2col needs NCHW input, got rank {x.rank}")
    n, c, h, w = x.shape
    kh, kw, oh, ow = _window(attrs, h, w)
    return [TensorType((n, c * kh * kw, oh * ow), x.dtype)]


def _col2im(inputs, attrs):
    (cols,) = inputs
    n, c, h, w = attrs["image_shape"]
    kh, kw, oh, ow = _window(attrs, h, w)
    expect = (n, c * kh * kw, oh * ow)
    _check(cols.shape == expect, f"columns must have shape {expect}, got {cols.shape}")
    return [TensorType((n, c, h, w), cols.dtype)]


def _max_pool2d(inputs, attrs):
    (x,) = inputs
    _check(x.rank == 4, f"max_pool2d needs NCHW input, got rank {x.rank}")
    n, c, h, w = x.shape
    _, _, oh, ow = _window({**attrs, "padding": (0, 0)}, h, w)
    return [TensorType((n, c, oh, ow), x.dtype)]


def _max_pool2d_grad(inputs, attrs):
    x, dy = inputs
    (y,) = _max_pool2d([x], attrs)
    _check(dy.shape == y.shape, f"max_pool2d_grad: dy must have the pooled shape {y.shape}, got {dy.shape}")
    _check(dy.dtype in FLOAT_DTYPES, f"max_pool2d_grad: dy must be a float tensor, got {dy.dtype}")
    return [TensorType(x.shape, dy.dtype)]


# Window sizes, strides and dilations are positive, paddings non-negative (all ints).
_WINDOW = {
    "kernel": Attr(POSITIVE_PAIR),
    "stride": Attr(POSITIVE_PAIR, (1, 1)),
    "padding": Attr(NONNEGATIVE_PAIR, (0, 0)),
    "dilation": Attr(POSITIVE_PAIR, (1, 1)),
}
_register("im2col", 1, "opaque", _im2col, dict(_WINDOW))
_register("col2im", 1, "opaque", _col2im, {**_WINDOW, "image_shape": Attr(ShapeSpec(rank=4))})


def _depthwise_conv2d(inputs, attrs):
    x, w = inputs
    _check(x.rank == 4, f"depthwise_conv2d needs NCHW input, got rank {x.rank}")
    n, c, h, wd = x.shape
    _check(
        w.rank == 4 and w.shape[0] == c and w.shape[1] == 1,
        f"depthwise_conv2d needs weight [{c}, 1, kh, kw] for {c} channels, got {w.shape}",
    )
    _check(
        x.dtype in FLOAT_DTYPES and w.dtype == x.dtype,
        f"depthwise_conv2d needs float operands of one dtype, got {x.dtype} and {w.dtype}",
    )
    _, _, oh, ow = _window({**attrs, "kernel": w.shape[2:]}, h, wd)
    return [TensorType((n, c, oh, ow), x.dtype)]


# Depthwise convolution (one [kh, kw] filter per channel, PyTorch's groups == channels, no
# bias): y[n, c, oy, ox] = sum over (i, j) of w[c, 0, i, j] * x[n, c, oy*sh - ph + i*dh, ox*sw - pw + j*dw],
# zero outside the image. The kernel size is the weight's.
_register(
    "depthwise_conv2d", 2, "opaque", _depthwise_conv2d, {k: v for k, v in _WINDOW.items() if k != "kernel"}
)


# Max pooling over an unpadded NCHW input (the front end pads with the dtype's lowest value).
# Each window's value is its first maximal element in row-major window order, NaN counting as
# the maximum (PyTorch's rule); max_pool2d_grad(x, dy) routes dy[window] to that element.
_POOL = {
    "kernel": Attr(POSITIVE_PAIR),
    "stride": Attr(POSITIVE_PAIR),
    "dilation": Attr(POSITIVE_PAIR, (1, 1)),
}
_register("max_pool2d", 1, "opaque", _max_pool2d, dict(_POOL))
_register("max_pool2d_grad", 2, "opaque", _max_pool2d_grad, dict(_POOL))


# ---------------------------------------------------------------- sources
def _check_fits(value, dtype: str, what: str) -> None:
    """A number that converts to ``dtype`` without error: ints and bools need a finite value
    within the dtype's range (floats and bool take any number)."""
    if dtype in INT_DTYPES:
        _check(not isinstance(value, float) or math.isfinite(value), f"{what} {value!r} is not a {dtype}")
        info = np.iinfo(DTYPES[dtype])
        _check(info.min <= int(value) <= info.max, f"{what} {value!r} is out of range for {dtype}")


def _const(inputs, attrs):
    _check_fits(attrs["value"], attrs["dtype"], "value")
    return [TensorType((), attrs["dtype"])]


def _rng_uniform(inputs, attrs):
    (offset,) = inputs
    _check(offset.shape == () and offset.dtype == "i64", f"offset must be i64[], got {offset}")
    return [TensorType(tuple(attrs["shape"]), attrs["dtype"])]


_register("const", 0, "source", _const, {"value": Attr(RealSpec()), "dtype": Attr(DTYPE, "f32")})
# Counter-based uniform [0, 1): element i is a hash of (seed, offset, i), so every backend draws
# the same numbers and a step counter as offset gives fresh randomness each step.
_RNG = {"shape": Attr(SHAPE), "seed": Attr(IntSpec(), 0), "dtype": Attr(ChoiceSpec(FLOAT_DTYPES), "f32")}
_register("rng_uniform", 1, "opaque", _rng_uniform, _RNG)


def _fused(inputs, attrs):
    raise _RuleError("fused nodes take their types from their body; use Graph.add_fused")


# A fused node holds a sub-graph (Node.subgraph) of the ops above; passes.fusion makes them.
# Its one attribute is its kind; Graph.add_fused and the JSON/text readers check it here too.
_register("fused", None, "opaque", _fused, {"kind": Attr(ChoiceSpec(FUSED_KINDS))})


# --- quantization
# ONNX's QuantizeLinear/DequantizeLinear as broadcast ops: ``scale`` and ``zero_point`` broadcast
# to x's shape (per tensor: shape (); per channel along axis a: the channel count at a and 1 on
# every later axis; the front end reshapes ONNX's 1-D per-axis vectors). Elementwise:
#   quantize(x, s, z)   = saturate(round_half_even(x / s) + z)  in z's dtype (i8, u8, i16 or u16);
#                         x / s is computed in x's dtype, NaN saturates to the lowest value
#   dequantize(q, s, z) = (q - z) * s                           in s's dtype (q - z exact)
#   fake_quantize(x, s, z) = dequantize(quantize(x, s, z), s, z) in x's dtype; its VJP is the
#                         straight-through estimator (the gradient passes where x / s + z lies
#                         in the dtype's range, PyTorch's fake_quantize rule).
# qmatmul(a, b): the integer GEMM a @ b.T of 2-D i8/u8 operands a [m, k] and b [n, k] (b in the
# layout of a Linear weight, [out, in]), exact, with an i32 [m, n] result.
_QUANT_NAMES = ", ".join(QUANT_DTYPES)


def _quant_operands(inputs, kind: str) -> None:
    x, scale, zero = inputs
    _check(scale.dtype in FLOAT_DTYPES, f"scale must be a float tensor, got {scale.dtype}")
    _check(
        zero.dtype in QUANT_DTYPES or zero.dtype == "i32",
        f"zero point must be one of {_QUANT_NAMES}, got {zero.dtype}",
    )
    for what, t in (("scale", scale), ("zero point", zero)):
        try:
            out = broadcast_shapes(x.shape, t.shape)
        except GraphcError as err:
            raise _RuleError(f"{what}: {err}") from None
        _check(out == x.shape, f"{what} shape {t.shape} does not broadcast to the operand's {x.shape}")


def _quantize(inputs, attrs):
    x, scale, zero = inputs
    _quant_operands(inputs, "quantize")
    _check(zero.dtype in QUANT_DTYPES, f"zero point must be one of {_QUANT_NAMES}, got {zero.dtype}")
    _check(x.dtype == scale.dtype, f"x ({x.dtype}) and scale ({scale.dtype}) dtypes differ")
    return [TensorType(x.shape, zero.dtype)]


def _dequantize(inputs, attrs):
    q, scale, zero = inputs
    _quant_operands(inputs, "dequantize")
    _check(q.dtype in (*QUANT_DTYPES, "i32"), f"operand must be one of {_QUANT_NAMES}, i32, got {q.dtype}")
    _check(q.dtype == zero.dtype, f"operand ({q.dtype}) and zero point ({zero.dtype}) dtypes differ")
    return [TensorType(q.shape, scale.dtype)]


def _fake_quantize(inputs, attrs):
    (out,) = _quantize(inputs, attrs)
    return [TensorType(out.shape, inputs[0].dtype)]


def _qmatmul(inputs, attrs):
    a, b = inputs
    _check(
        a.dtype in INT8_DTYPES and b.dtype in INT8_DTYPES,
        f"qmatmul needs i8/u8 operands, got {a.dtype}, {b.dtype}",
    )
    _check(a.rank == 2 and b.rank == 2, f"qmatmul operands must be 2-D, got ranks {a.rank} and {b.rank}")
    _check(
        a.shape[1] == b.shape[1],
        f"inner dimensions differ: {a.shape[1]} (left) vs {b.shape[1]} (right, [n, k])",
    )
    return [TensorType((a.shape[0], b.shape[0]), "i32")]


_register("quantize", 3, "broadcast", _quantize)
_register("dequantize", 3, "broadcast", _dequantize)
_register("fake_quantize", 3, "broadcast", _fake_quantize)
_register("qmatmul", 2, "opaque", _qmatmul)


# qlinear(a, b, shift, scale, bias[, out_scale, out_zero]) {relu}: qmatmul with its epilogue, per
# output element (i, j), in scale's float dtype F (what graphc.passes.quantize fuses into it):
#   y = F(qmatmul(a, b)[i, j] - shift[j]) * scale[j] + bias[j]    (i32 subtract, then F ops)
#   y = where(y <= 0, 0, y)                                         when relu (NaN stays NaN)
#   out = quantize(y, out_scale, out_zero)                          when out_scale/out_zero given
# shift (i32), scale and bias (F) are per column [n] or per tensor (); out_scale (F) and
# out_zero (i8/u8) per tensor. The result is [m, n], of F, or of out_zero's dtype.
def _qlinear(inputs, attrs):
    _check(len(inputs) in (5, 7), f"takes 5 or 7 operands after the GEMM's, got {len(inputs)}")
    a, b, shift, scale, bias = inputs[:5]
    (acc,) = _qmatmul([a, b], {})
    n = acc.shape[1]
    _check(shift.dtype == "i32", f"shift must be i32, got {shift.dtype}")
    _check(scale.dtype in FLOAT_DTYPES, f"scale must be a float tensor, got {scale.dtype}")
    _check(bias.dtype == scale.dtype, f"bias ({bias.dtype}) and scale ({scale.dtype}) dtypes differ")
    for what, t in (("shift", shift), ("scale", scale), ("bias", bias)):
        _check(t.shape in ((), (n,)), f"{what} must have shape () or ({n},), got {t.shape}")
    if len(inputs) == 5:
        return [TensorType(acc.shape, scale.dtype)]
    out_scale, out_zero = inputs[5:]
    _check(out_scale.dtype == scale.dtype, f"out_scale must be {scale.dtype}, got {out_scale.dtype}")
    _check(out_zero.dtype in INT8_DTYPES, f"out_zero must be i8 or u8, got {out_zero.dtype}")
    _check(out_scale.shape == () and out_zero.shape == (), "out_scale and out_zero must be scalars")
    return [TensorType(acc.shape, out_zero.dtype)]


_register("qlinear", None, "opaque", _qlinear, {"relu": Attr(BoolSpec(), False)})


# qconv2d(x, w, x_zero, shift, scale, bias[, out_scale, out_zero]) {stride, padding, dilation,
# relu}: the int8 convolution as the GEMM of w ([O, kh, kw, C], i8/u8) with x's windows (x NCHW
# i8/u8, padded with x_zero), with qlinear's epilogue per output channel o:
#   acc[n, o, l] = sum_(i, j, c) w[o, i, j, c] * x_padded[n, c, oy*sh + i*dh, ox*sw + j*dw]  (exact)
# (l = oy * OW + ox), then y = F(acc - shift[o]) * scale[o] + bias[o], relu, requantize as in
# qlinear. The result is [N, O, OH * OW] (the layout of the matmul of a weight by im2col columns).
def _qconv2d(inputs, attrs):
    _check(len(inputs) in (6, 8), f"qconv2d takes 6 or 8 operands, got {len(inputs)}")
    x, w, x_zero = inputs[:3]
    _check(
        x.dtype in INT8_DTYPES and w.dtype in INT8_DTYPES,
        f"qconv2d needs i8/u8 operands, got {x.dtype}, {w.dtype}",
    )
    _check(
        x.rank == 4 and w.rank == 4,
        f"qconv2d needs x [N, C, H, W] and w [O, kh, kw, C], got {x.shape}, {w.shape}",
    )
    n, c, h, wd = x.shape
    o, kh, kw, wc = w.shape
    _check(wc == c, f"weight [O, kh, kw, C] has {wc} channels, the input {c}")
    _check(x_zero.shape == () and x_zero.dtype == x.dtype, f"x_zero must be a {x.dtype} scalar, got {x_zero}")
    _, _, oh, ow = _window({**attrs, "kernel": (kh, kw)}, h, wd)
    m = TensorType((n * oh * ow, kh * kw * c), x.dtype)  # the windows as rows: qlinear's checks
    (y,) = _qlinear([m, TensorType((o, kh * kw * c), w.dtype), *inputs[3:]], {})
    return [TensorType((n, o, oh * ow), y.dtype)]


_register(
    "qconv2d",
    None,
    "opaque",
    _qconv2d,
    {**{k: v for k, v in _WINDOW.items() if k != "kernel"}, "relu": Attr(BoolSpec(), False)},
)


# --- distributed
# Data-parallel gradient averaging over MPI (graphc.distributed; docs/CONTRACTS.md, "Collectives").
# ``allreduce_start(g1, ..., gk)`` packs a bucket of gradients (one float dtype) into one flat
# buffer ``[sum of numels]`` and starts a nonblocking sum of it across ranks (MPI Iallreduce); the
# buffer is the token of the pending sum, written by MPI until its wait, so it stays live until
# then. ``allreduce_wait(buffer)`` waits for the sum (with a deadline) and returns each gradient's
# average over the ranks, in the start's operand order and with the shapes of ``shapes``.
# ``bucket`` numbers the bucket (messages name it; distinct buckets never merge in CSE).
# ``packed=False`` (a bucket of one gradient): MPI reads the gradient itself, no packing copy;
# that wait then takes the gradient as a second operand, which keeps its bytes live until the sum
# is done (any operand after the buffer is only held, never read).
MAX_BUCKET_VALUES = 1 << 16
_BUCKET = Attr(IntSpec(0, MAX_NUMEL), 0)


def _allreduce_start(inputs, attrs):
    _check(len(inputs) >= 1, "needs at least one operand")
    dtype = _same_dtype(inputs)
    _check(dtype in ("f32", "f64"), f"sums f32 or f64 gradients, got {dtype}")
    _check(len(inputs) <= MAX_BUCKET_VALUES, f"at most {MAX_BUCKET_VALUES} operands, got {len(inputs)}")
    return [TensorType((sum(t.numel for t in inputs),), dtype)]


def _allreduce_wait(inputs, attrs):
    _check(len(inputs) >= 1, "needs the bucket buffer as its first operand")
    buf = inputs[0]
    _check(buf.rank == 1 and buf.dtype in ("f32", "f64"), f"needs a flat f32/f64 buffer, got {buf}")
    shapes = attrs["shapes"]
    _check(len(shapes) >= 1, "shapes must name at least one result")
    total = sum(math.prod(s) for s in shapes)
    _check(total == buf.numel, f"shapes hold {total} elements, the buffer {buf.numel}")
    return [TensorType(tuple(s), buf.dtype) for s in shapes]


_register(
    "allreduce_start", None, "opaque", _allreduce_start, {"bucket": _BUCKET, "packed": Attr(BoolSpec(), True)}
)
_WAIT_SHAPES = TupleSpec(ShapeSpec(), max_length=MAX_BUCKET_VALUES)
_register(
    "allreduce_wait", None, "opaque", _allreduce_wait, {"shapes": Attr(_WAIT_SHAPES), "bucket": _BUCKET}
)
COLLECTIVE_OPS = ("allreduce_start", "allreduce_wait")


# --- control flow
# cond / while_loop / scan hold sub-graphs in Node.bodies (ir/control.py documents their
# signatures); like fused nodes they take their types from their bodies (Graph.add_control).
def _control(inputs, attrs):
    raise _RuleError("control-flow nodes take their types from their bodies; use Graph.add_control")


_register("cond", None, "opaque", _control)
_register("while_loop", None, "opaque", _control, {"n_carry": Attr(SIZE)})
_CONTROL_SCAN = {
    "n_carry": Attr(SIZE),
    "n_xs": Attr(SIZE),
    "length": Attr(SIZE),
    "reverse": Attr(BoolSpec(), False),
}
_register("scan", None, "opaque", _control, _CONTROL_SCAN)


# --- pytorch surface
# stop_gradient(x) is x, with no gradient flowing back through it (``Tensor.detach()`` /
# ``.data``): autodiff lists it in NON_DIFFERENTIABLE; every backend runs it as a copy.
def _stop_gradient(inputs, attrs):
    return [inputs[0]]


_register("stop_gradient", 1, "pointwise", _stop_gradient)
