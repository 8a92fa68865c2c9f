"""The op registry's machinery: attribute specs, ``OpDef``, ``REGISTRY`` and ``_register``, and
the checks every type rule shares (``_check``, broadcasting)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import GraphcError
from ..types import TensorType, dtype_names

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
