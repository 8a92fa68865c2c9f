"""Nullary and structural ops: ``const``, ``rng_uniform`` and the ``fused`` node."""

from __future__ import annotations

import math

import numpy as np

from ..types import DTYPES, FLOAT_DTYPES, INT_DTYPES, TensorType
from .registry import (
    DTYPE,
    FUSED_KINDS,
    SHAPE,
    Attr,
    ChoiceSpec,
    IntSpec,
    RealSpec,
    _check,
    _register,
    _RuleError,
)


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
