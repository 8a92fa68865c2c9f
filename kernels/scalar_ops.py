"""What every backend's generated code computes per element, defined once.

- ``SCALAR_FORMS``: each elementwise op's scalar expression (op name -> form), written against a
  ``Dialect`` (how a backend spells a dtype's constructor and a constant). A backend passes an
  override table (op name -> form) where it differs: the CPU's vectorizable exp/erf helpers, the
  CUDA cast from bool. A form may return None to fall back to the shared one.
- ``REDUCTIONS``: each reduction's start value and combine step (NumPy's NaN propagation).
- ``HASH32_STEPS``: the counter-based RNG's mixing function (lowbias32) and how a key and an
  element index make a uniform number; the NumPy reference and both code generators render it.
- ``is_elementwise``: which ops an elementwise loop computes per element.

Like tinygrad's ``code_for_op`` table overridden per renderer: a new elementwise op needs one
entry here and no backend code. Only ``graphc.ir`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from graphc.ir import GraphcError, Node, to_numpy_dtype
from graphc.ir.ops import REGISTRY
from graphc.ir.types import UNSIGNED_DTYPES

FLOATS = ("f32", "f64")
INTS = ("i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64")
UNSIGNED = UNSIGNED_DTYPES


class Unsupported(Exception):
    """A generator cannot handle this node or body; the caller falls back (or reports it)."""


@dataclass(frozen=True)
class Dialect:
    """How one backend spells scalar code.

    ``type_name(dtype)`` is the constructor of a dtype's scalars (``np.float32`` or ``float32``);
    ``literal(value, dtype)`` a constant; ``wrap(dtype, expr)`` casts a computed result back to
    its dtype (numba widens int32 arithmetic and some float32 math; NumPy keeps the dtype).
    """

    name: str
    type_name: Callable[[str], str]
    literal: Callable[[object, str], str]
    wrap: Callable[[str, str], str]
    fmod: str = "math.fmod"  # C's fmod of two floats (numba's CPU target has no math.fmod)


# A form: (dialect, node, operand expressions) -> expression of the node's dtype, or None (an
# override that leaves this case to the shared form).
ScalarForm = Callable[[Dialect, Node, list[str]], "str | None"]


def _math(fn: str) -> ScalarForm:
    return lambda d, node, a: d.wrap(node.outputs[0].dtype, f"math.{fn}({a[0]})")


def _binary(symbol: str) -> ScalarForm:
    return lambda d, node, a: d.wrap(node.outputs[0].dtype, f"{a[0]} {symbol} {a[1]}")


def _compare(symbol: str) -> ScalarForm:
    return lambda d, node, a: f"({a[0]} {symbol} {a[1]})"


def _extremum(symbol: str) -> ScalarForm:
    # NumPy propagates NaN from either side (a != a only for NaN); Python's max() would not.
    return lambda d, node, a: f"({a[0]} if ({a[0]} {symbol} {a[1]} or {a[0]} != {a[0]}) else {a[1]})"


def _one_over(expr: str) -> ScalarForm:
    def form(d: Dialect, node: Node, a: list[str]) -> str:
        out = node.outputs[0].dtype
        return d.wrap(out, f"{d.literal(1, out)} / {expr.format(a[0])}")

    return form


def _sign(d: Dialect, node: Node, a: list[str]) -> str:
    out = node.outputs[0].dtype
    T = d.type_name(out)
    zero = a[0] if out in FLOATS else f"{T}(0)"  # NaN and -0.0 pass through for floats
    return f"({T}(1) if {a[0]} > 0 else ({T}(-1) if {a[0]} < 0 else {zero}))"


# ---------------------------------------------------------------- rounding and remainders
# Floats of magnitude >= 2**52 (and inf, NaN) are integral already; below that an int64 round
# trip truncates exactly. The result takes the operand's sign (floor, ceil, round and trunc all
# keep it: ceil(-0.5) is -0.0), which also keeps -0.0.
_INTEGRAL = 4503599627370496.0  # 2**52


def _rounding(kind: str) -> ScalarForm:
    def form(d: Dialect, node: Node, a: list[str]) -> str:
        out = node.outputs[0].dtype
        if out not in FLOATS:
            return a[0]
        T, F, I = d.type_name(out), d.type_name("f64"), d.type_name("i64")
        x = a[0]
        t = f"{F}({I}({x}))"  # trunc(x) as a float64, for |x| < 2**52
        body = {
            "trunc": t,
            "floor": f"({t} - ({t} > {x}))",
            "ceil": f"({t} + ({t} < {x}))",
            "round": f"(({F}({x}) + {ROUND_MAGIC!r}) - {ROUND_MAGIC!r})",
        }[kind]
        return f"({x} if not abs({x}) < {_INTEGRAL!r} else {T}(math.copysign({body}, {x})))"

    return form


def _fmod(d: Dialect, node: Node, a: list[str]) -> str:
    out = node.outputs[0].dtype
    x, y = a
    if out in FLOATS:
        return d.wrap(out, f"{d.fmod}({x}, {y})")
    T = d.type_name(out)
    if out in UNSIGNED:
        return f"({T}(0) if {y} == 0 else {T}({x} % {y}))"
    # The floored remainder moved by one divisor where its sign differs from the dividend's (no
    # abs(): abs of the lowest value wraps); y == -1 gives 0 (and keeps INT_MIN % -1 away).
    r = f"({x} % {y})"
    moved = f"(({r} - {y}) if ({r} != 0 and ({r} < 0) != ({x} < 0)) else {r})"
    return f"({T}(0) if ({y} == 0 or {y} == -1) else {T}({moved}))"


def _remainder(d: Dialect, node: Node, a: list[str]) -> str:
    out = node.outputs[0].dtype
    x, y = a
    T = d.type_name(out)
    if out not in FLOATS:
        return f"({T}(0) if {y} == 0 else {T}({x} % {y}))"
    m = f"{d.fmod}({x}, {y})"
    # NumPy's npy_divmod: move a remainder whose sign differs from the divisor's by one divisor;
    # a zero remainder takes the divisor's sign.
    return d.wrap(
        out,
        f"(({m} + {y}) if ({m} != 0 and (({y} < 0) != ({m} < 0))) else "
        f"({m} if {m} != 0 else math.copysign(0.0, {y})))",
    )


def _floordiv(d: Dialect, node: Node, a: list[str]) -> str:
    out = node.outputs[0].dtype
    x, y = a
    T = d.type_name(out)
    if out in UNSIGNED:
        return f"({T}(0) if {y} == 0 else {T}({x} // {y}))"
    if out not in FLOATS:  # x // -1 is -x, wrapping at the lowest value as NumPy does
        return f"({T}(0) if {y} == 0 else ({d.wrap(out, f'-{x}')} if {y} == -1 else {T}({x} // {y})))"
    # NumPy's npy_divmod: (x - fmod(x, y)) / y is integral up to rounding; one less where the
    # remainder's sign differs from y's; rounded to the nearest integer (ties down); x / y for y == 0.
    m = f"{d.fmod}({x}, {y})"
    F, I = d.type_name("f64"), d.type_name("i64")
    div = f"({F}(({x} - {m}) / {y}) - (1 if ({m} != 0 and (({y} < 0) != ({m} < 0))) else 0))"
    t = f"{F}({I}({div}))"
    fl = f"({div} if not abs({div}) < {_INTEGRAL!r} else ({t} - ({t} > {div})))"
    rounded = f"({fl} + (1 if ({div} - {fl}) > 0.5 else 0))"
    return d.wrap(
        out,
        f"({x} / {y} if {y} == 0 else ({rounded} if {div} != 0 else math.copysign(0.0, {x} / {y})))",
    )


# ---------------------------------------------------------------- bitwise ops and shifts
def _bitwise(symbol: str) -> ScalarForm:
    # On bool operands &, | and ^ are the logical operations (and give bool).
    return lambda d, node, a: d.wrap(node.outputs[0].dtype, f"({a[0]} {symbol} {a[1]})")


def _bitwise_not(d: Dialect, node: Node, a: list[str]) -> str:
    out = node.outputs[0].dtype
    return f"(not {a[0]})" if out == "bool" else d.wrap(out, f"(~{a[0]})")


def _shift(direction: str) -> ScalarForm:
    # A count outside [0, bits) shifts every bit out (NumPy's and PyTorch's rule); the shift
    # itself never sees such a count (LLVM leaves it undefined). Operands narrower than 64 bits
    # may be widened by the backend: a left shift's extra bits are cut off by the wrap, and a
    # widened operand keeps its sign (or zeros) for the right shift.
    def form(d: Dialect, node: Node, a: list[str]) -> str:
        out = node.outputs[0].dtype
        x, y = a
        T = d.type_name(out)
        bits = d.literal(8 * np.dtype(to_numpy_dtype(out)).itemsize, out)
        fits = f"{y} < {bits}" if out in UNSIGNED else f"({y} >= {T}(0) and {y} < {bits})"
        shifted = d.wrap(out, f"({x} {'<<' if direction == 'left' else '>>'} {y})")
        if direction == "left" or out in UNSIGNED:
            rest = f"{T}(0)"
        else:
            rest = f"({T}(-1) if {x} < {T}(0) else {T}(0))"
        return f"({shifted} if ({fits}) else {rest})"

    return form


def _cast(d: Dialect, node: Node, a: list[str]) -> str:
    out = node.outputs[0].dtype
    return f"({a[0]} != 0)" if out == "bool" else f"{d.type_name(out)}({a[0]})"


# ---------------------------------------------------------------- quantization (ONNX QuantizeLinear)
# 1.5 * 2**52: adding and subtracting it rounds a float64 of magnitude < 2**51 to an integer,
# ties to even (IEEE's default rounding; no backend compiles these kernels with fast-math).
ROUND_MAGIC = 6755399441055744.0


def quant_range(dtype: str) -> tuple[int, int]:
    """The lowest and highest value of a quantized dtype (i8, u8)."""
    info = np.iinfo(to_numpy_dtype(dtype))
    return int(info.min), int(info.max)


def _rounded(d: Dialect, node: Node, a: list[str]) -> str:
    """round_half_even(clamp(x / s, lo - z, hi - z)) as an exact float64 (NaN -> lo - z)."""
    x, out = node.inputs[0].dtype, node.inputs[2].dtype
    lo, hi = quant_range(out)
    T, F, I = d.type_name(x), d.type_name("f64"), d.type_name("i64")
    q = d.wrap(x, f"{a[0]} / {a[1]}")
    lo_t, hi_t = f"{T}({lo} - {I}({a[2]}))", f"{T}({hi} - {I}({a[2]}))"
    low = f"({q} if {q} > {lo_t} else {lo_t})"
    clamped = f"({low} if {low} < {hi_t} else {hi_t})"
    return f"(({F}({clamped}) + {ROUND_MAGIC!r}) - {ROUND_MAGIC!r})"


def _quantize(d: Dialect, node: Node, a: list[str]) -> str:
    I = d.type_name("i64")
    return f"{d.type_name(node.outputs[0].dtype)}({I}({_rounded(d, node, a)}) + {I}({a[2]}))"


def _dequantize(d: Dialect, node: Node, a: list[str]) -> str:
    out, I = node.outputs[0].dtype, d.type_name("i64")
    return d.wrap(out, f"{d.type_name(out)}({I}({a[0]}) - {I}({a[2]})) * {a[1]}")


def _fake_quantize(d: Dialect, node: Node, a: list[str]) -> str:
    out = node.outputs[0].dtype
    return d.wrap(out, f"{d.type_name(out)}({_rounded(d, node, a)}) * {a[1]}")


SCALAR_FORMS: dict[str, ScalarForm] = {
    **{fn: _math(fn) for fn in ("exp", "log", "sqrt", "tanh", "erf", "sin", "cos")},
    **{fn: _math(fn) for fn in ("acos", "asin", "atan", "acosh", "asinh", "atanh")},
    "rsqrt": _one_over("math.sqrt({})"),
    "reciprocal": _one_over("{}"),
    "neg": lambda d, node, a: d.wrap(node.outputs[0].dtype, f"-{a[0]}"),
    "abs": lambda d, node, a: d.wrap(node.outputs[0].dtype, f"abs({a[0]})"),
    "sign": _sign,
    **{op: _rounding(op) for op in ("floor", "ceil", "round", "trunc")},
    "fmod": _fmod,
    "remainder": _remainder,
    "floordiv": _floordiv,
    "cast": _cast,
    **{op: _binary(s) for op, s in (("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "/"), ("pow", "**"))},
    "maximum": _extremum(">"),
    "minimum": _extremum("<"),
    **{op: _compare(s) for op, s in (("lt", "<"), ("le", "<="), ("eq", "=="), ("ne", "!="), ("gt", ">"))},
    "ge": _compare(">="),
    "bitwise_and": _bitwise("&"),
    "bitwise_or": _bitwise("|"),
    "bitwise_xor": _bitwise("^"),
    "bitwise_not": _bitwise_not,
    "left_shift": _shift("left"),
    "right_shift": _shift("right"),
    "where": lambda d, node, a: f"({a[1]} if {a[0]} else {a[2]})",
    "broadcast_to": lambda d, node, a: a[0],
    "stop_gradient": lambda d, node, a: a[0],
    "quantize": _quantize,
    "dequantize": _dequantize,
    "fake_quantize": _fake_quantize,
}

# Nullary (source) ops an elementwise loop computes inline: a constant, and rng_uniform from the
# element's index (each backend renders these two itself).
INLINE_SOURCES = ("const", "rng_uniform")


def scalar_expr(
    dialect: Dialect,
    node: Node,
    args: list[str],
    overrides: Mapping[str, Callable[..., str | None]],
    **context,
) -> str:
    """Source of one elementwise op on scalar operands ``args``, the backend's override first.

    An override is called with the backend's ``context`` keywords too (the CPU's helper
    collector); the shared forms get none.
    """
    form = overrides.get(node.op)
    if form is not None:
        text = form(dialect, node, args, **context)
        if text is not None:
            return text
    form = SCALAR_FORMS.get(node.op)
    if form is None:
        raise Unsupported(f"no scalar form for op {node.op!r}")
    text = form(dialect, node, args)
    if text is None:
        raise Unsupported(f"no scalar form for op {node.op!r} on {node.outputs[0].dtype}")
    return text


def has_scalar_form(op: str, overrides: Mapping[str, Callable[..., str | None]]) -> bool:
    """Whether a backend with these overrides has a scalar form for ``op``."""
    return op in SCALAR_FORMS or op in overrides


def is_elementwise(node: Node) -> bool:
    """Ops an elementwise loop evaluates per element: pointwise/broadcast ops, const, rng_uniform."""
    if node.op in INLINE_SOURCES:
        return True
    op = REGISTRY.get(node.op)
    return op is not None and node.op != "fused" and op.fusion in ("pointwise", "broadcast", "source")


def elementwise_ops(overrides: Mapping[str, Callable[..., str | None]]) -> list[str]:
    """Every registered op a backend with these overrides generates as an elementwise loop."""
    return sorted(op for op in REGISTRY if op in INLINE_SOURCES or has_scalar_form(op, overrides))


def scalar_value(value: object, dtype: str, what: str = "a constant") -> bool | int | float:
    """The Python scalar of a graph constant of ``dtype`` (``what`` names it in the error)."""
    try:
        if dtype == "bool":
            return bool(value)
        if dtype in INTS:
            return int(value)  # type: ignore[call-overload]
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise GraphcError(f"{what} of dtype {dtype} must be a number, got {type(value).__name__}") from None


# ---------------------------------------------------------------- reductions
def family(dtype: str) -> str:
    """``float``, ``int`` or ``bool``: the dtype's family, which decides start values and steps."""
    return "float" if dtype in FLOATS else "bool" if dtype == "bool" else "int"


def _lowest(dtype: str) -> object:
    fam = family(dtype)
    return -np.inf if fam == "float" else False if fam == "bool" else int(np.iinfo(to_numpy_dtype(dtype)).min)


def _highest(dtype: str) -> object:
    fam = family(dtype)
    return np.inf if fam == "float" else True if fam == "bool" else int(np.iinfo(to_numpy_dtype(dtype)).max)


@dataclass(frozen=True)
class Reduction:
    """A reduction's start value (for an accumulator dtype) and its combine step."""

    start: Callable[[str], object]
    combine: Callable[[str, str, str], str]  # (accumulator dtype, acc, value) -> the new acc


def _sum_step(dtype: str, acc: str, v: str) -> str:
    return f"({acc} or {v})" if dtype == "bool" else f"({acc} + {v})"


def _extremum_step(symbol: str, bool_op: str) -> Callable[[str, str, str], str]:
    def step(dtype: str, acc: str, v: str) -> str:
        fam = family(dtype)
        if fam == "bool":
            return f"({acc} {bool_op} {v})"
        if fam == "float":
            # Once acc is NaN no comparison is true, so it stays NaN; a NaN v is taken.
            return f"({v} if ({v} {symbol} {acc} or {v} != {v}) else {acc})"
        return f"({v} if {v} {symbol} {acc} else {acc})"

    return step


def _prod_step(dtype: str, acc: str, v: str) -> str:
    return f"({acc} * {v})"  # NaN propagates by itself; integers wrap when cast back


REDUCTIONS: dict[str, Reduction] = {
    "sum": Reduction(lambda dtype: 0, _sum_step),
    "prod": Reduction(lambda dtype: 1, _prod_step),
    "max": Reduction(_lowest, _extremum_step(">", "or")),
    "min": Reduction(_highest, _extremum_step("<", "and")),
}


def sum_dtype(dtype: str) -> str:
    """The accumulator dtype of a sum over ``dtype`` (integers add up in int64, as NumPy's sum)."""
    return "i64" if dtype in INTS else dtype


# ---------------------------------------------------------------- the counter-based RNG
# lowbias32 (Chris Wellons): x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B;
# x ^= x >> 16, all in uint32. Element i of rng_uniform(seed) at step offset is the top 24 bits
# of hash32(i ^ key) times 2**-24 (exact in float32), key = hash32(seed ^ hash32(lo ^ hash32(hi)))
# over the offset's two 32-bit halves.
HASH32_STEPS: tuple[tuple[str, int], ...] = (
    ("xorshift", 16),
    ("multiply", 0x7FEB352D),
    ("xorshift", 15),
    ("multiply", 0x846CA68B),
    ("xorshift", 16),
)
UNIFORM_BITS = 24
UNIFORM_SCALE = 1.0 / (1 << UNIFORM_BITS)
MASK32 = 0xFFFFFFFF


def hash32_lines(dst: str, src: str, u64: str) -> list[str]:
    """Statements leaving lowbias32 of ``src`` in ``dst``, in uint64 (``u64`` its constructor).

    numba widens uint32 arithmetic to 64 bits, so every product is masked back to 32 bits; the
    result is exactly the uint32 arithmetic of the reference.
    """
    lines = []
    x = src
    for kind, k in HASH32_STEPS:
        if kind == "xorshift":
            lines.append(f"{dst} = {x} ^ ({x} >> {u64}({k}))")
        else:
            lines.append(f"{dst} = ({x} * {u64}(0x{k:X})) & {u64}(0x{MASK32:X})")
        x = dst
    return lines


def hash32_numpy(x: np.ndarray) -> np.ndarray:
    """lowbias32 over a uint32 array (the reference's arithmetic: uint32 wraps)."""
    x = np.asarray(x, dtype=np.uint32)
    for kind, k in HASH32_STEPS:
        x = x ^ (x >> np.uint32(k)) if kind == "xorshift" else x * np.uint32(k)
    return x
