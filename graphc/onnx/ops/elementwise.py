"""Elementwise ONNX ops: arithmetic, comparisons, logic, activations (folded when constant)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from graphc.ir.ops import UNARY_FLOAT
from graphc.ir.types import FLOAT_DTYPES, INT_DTYPES
from graphc.tensor import Tensor

from ..context import NodeContext
from ..registry import converter

_FLOATS = FLOAT_DTYPES


def const_like(nc: NodeContext, value: float, like: Tensor) -> Tensor:
    """A scalar const of ``like``'s dtype."""
    return nc.ctx.const(value, like.value.dtype)


def operands(nc: NodeContext) -> list[Tensor]:
    """The given inputs as Tensors of one dtype: constants take the dtype of the first Tensor."""
    first = next(
        (nc.inputs[i] for i in range(len(nc)) if nc.has(i) and isinstance(nc.inputs[i], Tensor)), None
    )
    out = []
    for i in range(len(nc)):
        if not nc.has(i):
            continue
        t = nc.t(i)
        if first is not None and t.value.dtype != first.value.dtype and not isinstance(nc.inputs[i], Tensor):
            t = nc.op("cast", t, dtype=first.value.dtype)
        out.append(t)
    return out


def _fold(nc: NodeContext, np_fn: Callable) -> list | None:
    if not nc.all_static():
        return None
    with np.errstate(all="ignore"):
        args = [nc.static(i) for i in range(len(nc)) if nc.has(i)]
        out = np.asarray(np_fn(*args))
    dtype = args[0].dtype if out.dtype.kind == args[0].dtype.kind else out.dtype
    return [np.array(out.astype(dtype, copy=False))]


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return np.trunc(a / np.where(b == 0, 1, b)).astype(a.dtype)
    return a / b


_BINARY = {
    "Add": ("add", np.add),
    "Sub": ("sub", np.subtract),
    "Mul": ("mul", np.multiply),
    "Equal": ("eq", np.equal),
    "Less": ("lt", np.less),
    "LessOrEqual": ("le", np.less_equal),
    "Greater": ("gt", np.greater),
    "GreaterOrEqual": ("ge", np.greater_equal),
}


@converter(*_BINARY)
def binary(nc: NodeContext) -> list:
    """Broadcasting arithmetic and comparisons."""
    op, np_fn = _BINARY[nc.op_type]
    folded = _fold(nc, np_fn)
    if folded is not None:
        return folded
    a, b = operands(nc)
    if op in ("add", "sub", "mul") and a.value.dtype == "bool":
        raise nc.fail("arithmetic on bool tensors")
    return [nc.op(op, a, b)]


@converter("Div")
def div(nc: NodeContext) -> list:
    """Division (integer division truncates, as in ONNX)."""
    folded = _fold(nc, _int_div)
    if folded is not None:
        return folded
    a, b = operands(nc)
    dtype = a.value.dtype
    if dtype in _FLOATS:
        return [nc.op("div", a, b)]
    # integer quotient toward zero, exactly: the dividend less its C remainder, floor-divided
    return [nc.op("floordiv", nc.op("sub", a, nc.op("fmod", a, b)), b)]


_ROUNDING = {"Floor": ("floor", np.floor), "Ceil": ("ceil", np.ceil), "Round": ("round", np.round)}


@converter(*_ROUNDING, since=6)
def rounding(nc: NodeContext) -> list:
    """Floor, Ceil and Round (half to even)."""
    op, np_fn = _ROUNDING[nc.op_type]
    folded = _fold(nc, np_fn)
    if folded is not None:
        return folded
    return [nc.op(op, nc.t(0))]


@converter("Mod", since=10)
def mod(nc: NodeContext) -> list:
    """Remainder: the divisor's sign (fmod=0, Python's %), or the dividend's (fmod=1, C's fmod)."""
    fmod = nc.attrs.int("fmod", 0, lo=0, hi=1)
    folded = _fold(nc, np.fmod if fmod else np.remainder)
    if folded is not None:
        return folded
    a, b = operands(nc)
    if a.value.dtype == "bool":
        raise nc.fail("Mod of bool tensors")
    return [nc.op("fmod" if fmod else "remainder", a, b)]


@converter("Pow")
def pow_(nc: NodeContext) -> list:
    """x ** y (the exponent is cast to the base's dtype)."""
    folded = _fold(nc, lambda a, b: np.power(a, b.astype(a.dtype)))
    if folded is not None:
        return folded
    x, y = nc.t(0), nc.t(1)
    dtype = x.value.dtype
    wanted = dtype if dtype in _FLOATS else "f64"
    if y.value.dtype != wanted:
        y = nc.op("cast", y, dtype=wanted)
    if dtype not in _FLOATS:
        return [nc.op("cast", nc.op("pow", nc.op("cast", x, dtype="f64"), y), dtype=dtype)]
    if nc.is_static(1) and nc.static(1).size == 1 and float(nc.static(1).reshape(-1)[0]) == 2.0:
        return [nc.op("mul", x, x)]
    return [nc.op("pow", x, y)]


def _variadic(nc: NodeContext, op: str, np_fn: Callable) -> list:
    if nc.all_static():
        args = [nc.static(i) for i in range(len(nc)) if nc.has(i)]
        out = args[0]
        for a in args[1:]:
            out = np_fn(out, a)
        return [np.array(out)]
    ts = operands(nc)
    out = ts[0]
    for t in ts[1:]:
        out = nc.op(op, out, t)
    return [out]


@converter("Sum")
def sum_(nc: NodeContext) -> list:
    """Elementwise sum of all inputs."""
    return _variadic(nc, "add", np.add)


@converter("Max")
def max_(nc: NodeContext) -> list:
    """Elementwise maximum of all inputs."""
    return _variadic(nc, "maximum", np.maximum)


@converter("Min")
def min_(nc: NodeContext) -> list:
    """Elementwise minimum of all inputs."""
    return _variadic(nc, "minimum", np.minimum)


@converter("Mean")
def mean(nc: NodeContext) -> list:
    """Elementwise mean of all inputs."""
    (total,) = _variadic(nc, "add", np.add)
    n = sum(1 for i in range(len(nc)) if nc.has(i))
    if isinstance(total, np.ndarray):
        return [(total / n).astype(total.dtype)]
    return [nc.op("mul", total, const_like(nc, 1.0 / n, total))]


@converter("And", "Or", "Xor")
def logical(nc: NodeContext) -> list:
    """Boolean and/or/xor."""
    np_fn = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}[nc.op_type]
    folded = _fold(nc, np_fn)
    if folded is not None:
        return folded
    a, b = nc.t(0), nc.t(1)
    if a.value.dtype != "bool" or b.value.dtype != "bool":
        raise nc.fail("needs bool inputs")
    if nc.op_type == "Xor":
        return [nc.op("ne", a, b)]
    return [a & b if nc.op_type == "And" else a | b]


@converter("Not")
def not_(nc: NodeContext) -> list:
    """Boolean not."""
    folded = _fold(nc, np.logical_not)
    if folded is not None:
        return folded
    x = nc.t(0)
    return [nc.op("eq", x, nc.ctx.const(False, "bool"))]


@converter("Where")
def where(nc: NodeContext) -> list:
    """cond ? x : y."""
    folded = _fold(nc, np.where)
    if folded is not None:
        folded[0] = folded[0].astype(nc.static(1).dtype)
        return folded
    cond = nc.t(0)
    _, a, b = [cond, *operands_from(nc, 1)]
    return [nc.op("where", cond, a, b)]


def operands_from(nc: NodeContext, start: int) -> list[Tensor]:
    """Inputs ``start``.. as Tensors of one dtype."""
    vals = [nc.inputs[i] for i in range(start, len(nc))]
    first = next((v for v in vals if isinstance(v, Tensor)), None)
    out = []
    for i in range(start, len(nc)):
        t = nc.t(i)
        if first is not None and t.value.dtype != first.value.dtype:
            t = nc.op("cast", t, dtype=first.value.dtype)
        out.append(t)
    return out


_UNARY = {
    "Neg": ("neg", np.negative),
    "Abs": ("abs", np.abs),
    "Sign": ("sign", np.sign),
    "Exp": ("exp", np.exp),
    "Log": ("log", np.log),
    "Sqrt": ("sqrt", np.sqrt),
    "Reciprocal": ("reciprocal", np.reciprocal),
    "Tanh": ("tanh", np.tanh),
    "Sin": ("sin", np.sin),
    "Cos": ("cos", np.cos),
    "Erf": ("erf", None),
    "Acos": ("acos", np.arccos),
    "Asin": ("asin", np.arcsin),
    "Atan": ("atan", np.arctan),
    "Acosh": ("acosh", np.arccosh),
    "Asinh": ("asinh", np.arcsinh),
    "Atanh": ("atanh", np.arctanh),
}


@converter(*_UNARY)
def unary(nc: NodeContext) -> list:
    """One-input math functions."""
    op, np_fn = _UNARY[nc.op_type]
    if np_fn is not None:
        folded = _fold(nc, np_fn)
        if folded is not None:
            return folded
    x = nc.t(0)
    if (op in UNARY_FLOAT or op == "reciprocal") and x.value.dtype not in _FLOATS:
        raise nc.fail(f"needs a float input, got {x.value.dtype}")
    return [nc.op(op, x)]


_BITWISE = {
    "BitwiseAnd": ("bitwise_and", np.bitwise_and),
    "BitwiseOr": ("bitwise_or", np.bitwise_or),
    "BitwiseXor": ("bitwise_xor", np.bitwise_xor),
}


def _integer_operands(nc: NodeContext) -> list[Tensor]:
    ts = operands(nc)
    if ts[0].value.dtype not in INT_DTYPES:
        raise nc.fail(f"needs integer inputs, got {ts[0].value.dtype}")
    return ts


@converter(*_BITWISE, since=18)
def bitwise(nc: NodeContext) -> list:
    """Bitwise and/or/xor of integers (broadcasting)."""
    op, np_fn = _BITWISE[nc.op_type]
    folded = _fold(nc, np_fn)
    if folded is not None:
        return folded
    return [nc.op(op, *_integer_operands(nc))]


@converter("BitwiseNot", since=18)
def bitwise_not(nc: NodeContext) -> list:
    """Bitwise not of integers."""
    folded = _fold(nc, np.invert)
    if folded is not None:
        return folded
    return [nc.op("bitwise_not", *_integer_operands(nc))]


@converter("BitShift", since=11)
def bit_shift(nc: NodeContext) -> list:
    """x shifted left or right (``direction``) by y bits; a count of the bit width or more gives 0."""
    direction = nc.attrs.string("direction", "", ("LEFT", "RIGHT"))
    if not direction:
        raise nc.fail("needs the direction attribute (LEFT or RIGHT)")
    op, np_fn = ("left_shift", np.left_shift) if direction == "LEFT" else ("right_shift", np.right_shift)
    folded = _fold(nc, np_fn)
    if folded is not None:
        return folded
    return [nc.op(op, *_integer_operands(nc))]


@converter("Identity")
def identity(nc: NodeContext) -> list:
    """The input itself."""
    return [nc.inputs[0]]


def _float_input(nc: NodeContext) -> Tensor:
    x = nc.t(0)
    if x.value.dtype not in _FLOATS:
        raise nc.fail(f"needs a float input, got {x.value.dtype}")
    return x


@converter("Relu")
def relu(nc: NodeContext) -> list:
    """max(x, 0) (NaN stays NaN); folded on a constant (a Range's length is Relu(Ceil(...)))."""
    folded = _fold(nc, lambda a: np.maximum(a, np.zeros((), a.dtype)))
    if folded is not None:
        return folded
    x = nc.t(0)
    return [nc.op("maximum", x, const_like(nc, 0, x))]


@converter("Sigmoid")
def sigmoid(nc: NodeContext) -> list:
    """1 / (1 + exp(-x))."""
    return [_float_input(nc).sigmoid()]


@converter("LeakyRelu")
def leaky_relu(nc: NodeContext) -> list:
    """x if x >= 0 else alpha * x."""
    x = _float_input(nc)
    alpha = nc.attrs.float("alpha", 0.01)
    return [
        nc.op("where", nc.op("ge", x, const_like(nc, 0, x)), x, nc.op("mul", x, const_like(nc, alpha, x)))
    ]


@converter("PRelu")
def prelu(nc: NodeContext) -> list:
    """x if x >= 0 else slope * x (slope broadcasts)."""
    x = _float_input(nc)
    slope = nc.t(1)
    return [nc.op("where", nc.op("ge", x, const_like(nc, 0, x)), x, nc.op("mul", x, slope))]


@converter("Elu", "Selu", "Celu")
def elu(nc: NodeContext) -> list:
    """ELU-style activations."""
    x = _float_input(nc)
    pos = nc.op("gt", x, const_like(nc, 0, x))
    if nc.op_type == "Selu":
        alpha = nc.attrs.float("alpha", 1.67326319217681884765625)
        gamma = nc.attrs.float("gamma", 1.05070102214813232421875)
    else:
        alpha, gamma = nc.attrs.float("alpha", 1.0), 1.0
    if nc.op_type == "Celu":
        em1 = nc.op(
            "sub", nc.op("exp", nc.op("mul", x, const_like(nc, 1.0 / alpha, x))), const_like(nc, 1, x)
        )
    else:
        em1 = nc.op("sub", nc.op("exp", x), const_like(nc, 1, x))
    neg = nc.op("mul", em1, const_like(nc, alpha, x))
    out = nc.op("where", pos, x, neg)
    return [out if gamma == 1.0 else nc.op("mul", out, const_like(nc, gamma, x))]


@converter("Softplus")
def softplus(nc: NodeContext) -> list:
    """log(1 + exp(x)), computed stably."""
    x = _float_input(nc)
    zero = const_like(nc, 0, x)
    pos = nc.op("maximum", x, zero)
    tail = nc.op("log", nc.op("add", const_like(nc, 1, x), nc.op("exp", nc.op("neg", nc.op("abs", x)))))
    return [nc.op("add", pos, tail)]


@converter("Softsign")
def softsign(nc: NodeContext) -> list:
    """x / (1 + |x|)."""
    x = _float_input(nc)
    return [nc.op("div", x, nc.op("add", const_like(nc, 1, x), nc.op("abs", x)))]


def hard_sigmoid(nc: NodeContext, x: Tensor, alpha: float, beta: float) -> Tensor:
    """max(0, min(1, alpha * x + beta))."""
    y = nc.op("add", nc.op("mul", x, const_like(nc, alpha, x)), const_like(nc, beta, x))
    return nc.op("maximum", nc.op("minimum", y, const_like(nc, 1, x)), const_like(nc, 0, x))


@converter("HardSigmoid")
def hardsigmoid(nc: NodeContext) -> list:
    """max(0, min(1, alpha * x + beta))."""
    x = _float_input(nc)
    return [hard_sigmoid(nc, x, nc.attrs.float("alpha", 0.2), nc.attrs.float("beta", 0.5))]


@converter("HardSwish")
def hardswish(nc: NodeContext) -> list:
    """x * hardsigmoid(x; 1/6, 1/2)."""
    x = _float_input(nc)
    return [nc.op("mul", x, hard_sigmoid(nc, x, 1.0 / 6.0, 0.5))]


@converter("Gelu", since=20)
def gelu(nc: NodeContext) -> list:
    """GELU, exact (erf) or the tanh approximation."""
    x = _float_input(nc)
    approx = nc.attrs.string("approximate", "none", ("none", "tanh"))
    half, one = const_like(nc, 0.5, x), const_like(nc, 1, x)
    if approx == "none":
        inner = nc.op("erf", nc.op("mul", x, const_like(nc, 1 / math.sqrt(2.0), x)))
    else:
        cube = nc.op("mul", nc.op("mul", x, x), x)
        arg = nc.op("add", x, nc.op("mul", cube, const_like(nc, 0.044715, x)))
        inner = nc.op("tanh", nc.op("mul", arg, const_like(nc, math.sqrt(2 / math.pi), x)))
    return [nc.op("mul", nc.op("mul", x, half), nc.op("add", one, inner))]


@converter("Clip")
def clip(nc: NodeContext) -> list:
    """min(max(x, lo), hi); bounds from attributes (opset < 11) or optional inputs."""
    if nc.opset < 11:
        lo = nc.attrs.float("min", -math.inf, finite=False)
        hi = nc.attrs.float("max", math.inf, finite=False)
        bounds = [None if math.isinf(lo) else lo, None if math.isinf(hi) else hi]
    else:
        bounds = [nc.inputs[i] if nc.has(i) else None for i in (1, 2)]
    x = nc.t(0)
    out = x
    for b, op in zip(bounds, ("maximum", "minimum")):
        if b is None:
            continue
        bt = const_like(nc, b, x) if isinstance(b, float) else nc.tensor(b)
        if bt.value.dtype != x.value.dtype:
            bt = nc.op("cast", bt, dtype=x.value.dtype)
        out = nc.op(op, out, bt)
    return [out]
