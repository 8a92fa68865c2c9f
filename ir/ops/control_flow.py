"""Control flow: cond, while_loop and scan take their types from their bodies."""

from __future__ import annotations

from .registry import SIZE, Attr, BoolSpec, _register, _RuleError


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
