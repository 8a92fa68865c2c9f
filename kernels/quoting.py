"""The one way text and values from a graph reach generated kernel source.

A graph may come from a plan file, a checkpoint or an ONNX model: every attribute in it is data.
Generated source includes such data only through these functions, which either render it as an
inert Python token (a comment with no line break, a numeric literal) or refuse it.
"""

from __future__ import annotations

import math

from graphc.ir import GraphcError

_MAX_COMMENT = 200


def comment(text: object) -> str:
    """``text`` made safe for the inside of one ``#`` comment line (or a one-line docstring).

    Every character outside printable ASCII, and the quote and backslash characters that could
    close a docstring, becomes a ``?``; the result is cut to a bounded length.
    """
    out = "".join(c if (" " <= c <= "~" and c not in "\"'\\") else "?" for c in str(text))
    return out if len(out) <= _MAX_COMMENT else out[: _MAX_COMMENT - 3] + "..."


def literal(value: object) -> str:
    """A Python literal for a bool, int or finite/infinite/NaN float; anything else is refused."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "math.nan"
        if math.isinf(value):
            return "math.inf" if value > 0 else "-math.inf"
        return repr(float(value))
    raise GraphcError(f"a {type(value).__name__} value cannot appear in a kernel: {comment(value)!r}")
