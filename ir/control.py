"""Control-flow nodes (cond, while_loop, scan): their body signatures and result types.

A control-flow node holds sub-graphs in ``Node.bodies`` (in the spirit of jaxprs); each body's
data inputs bind to operands as below, and the node's output types come from the bodies:

- ``cond(pred, *ops)``: bodies ``(true_branch, false_branch)``, each taking ``ops`` and
  returning the same types; ``pred`` is a scalar (``bool[]`` or a number, nonzero = true).
- ``while_loop(*carry, *consts) {n_carry}``: bodies ``(cond, body)``, both taking
  ``carry + consts``; ``cond`` returns one ``bool[]``, ``body`` the next carry.
- ``scan(*carry, *xs, *consts) {n_carry, n_xs, length, reverse}``: one body taking
  ``carry + [x[i] for x in xs] + consts`` and returning ``carry + ys``; the node returns the
  final carry, then each y stacked over a new leading axis of ``length``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import GraphcError
from .types import TensorType

if TYPE_CHECKING:
    from .graph import Graph

CONTROL_OPS = ("cond", "while_loop", "scan")
BODY_NAMES = {"cond": ("true_branch", "false_branch"), "while_loop": ("cond", "body"), "scan": ("body",)}


def _show(types: list[TensorType]) -> str:
    return "(" + ", ".join(map(str, types)) + ")"


def _signature(op: str, what: str, body: Graph, ins: list[TensorType], outs: list[TensorType] | None) -> None:
    got_in = [v.type for v in body.data_inputs]
    if got_in != ins:
        raise GraphcError(f"{op}: {what} takes {_show(got_in)}, the operands give {_show(ins)}")
    for v in body.inputs:
        if body.kinds[v.name] != "data" and v.name not in body.initializers:
            raise GraphcError(f"{op}: {what} input %{v.name} ({body.kinds[v.name]}) has no value")
    got_out = [v.type for v in body.outputs]
    if outs is not None and got_out != outs:
        raise GraphcError(f"{op}: {what} returns {_show(got_out)}, expected {_show(outs)}")
    if body.updates:
        raise GraphcError(f"{op}: {what} may not update params or state")


def control_types(op: str, inputs: list[TensorType], bodies: list[Graph], attrs: dict) -> list[TensorType]:
    """The output types of a control-flow node; GraphcError if a body's signature does not fit."""
    names = BODY_NAMES.get(op)
    if names is None:
        raise GraphcError(f"{op} is not a control-flow op")
    if len(bodies) != len(names):
        raise GraphcError(f"{op} holds {len(names)} bodies ({', '.join(names)}), got {len(bodies)}")
    if op == "cond":
        if not inputs or inputs[0].shape != ():
            raise GraphcError(
                f"cond: the predicate must be a scalar, got {inputs[0] if inputs else 'nothing'}"
            )
        ops = list(inputs[1:])
        _signature(op, "true_branch", bodies[0], ops, None)
        outs = [v.type for v in bodies[0].outputs]
        _signature(op, "false_branch", bodies[1], ops, outs)
        return outs
    n_carry = attrs["n_carry"]
    if op == "while_loop":
        if n_carry > len(inputs):
            raise GraphcError(f"while_loop: n_carry={n_carry} but only {len(inputs)} operands")
        carry = list(inputs[:n_carry])
        _signature(op, "cond", bodies[0], list(inputs), [TensorType((), "bool")])
        _signature(op, "body", bodies[1], list(inputs), carry)
        return carry
    n_xs, length = attrs["n_xs"], attrs["length"]
    if n_carry + n_xs > len(inputs):
        raise GraphcError(f"scan: n_carry={n_carry} and n_xs={n_xs} but only {len(inputs)} operands")
    carry = list(inputs[:n_carry])
    xs = list(inputs[n_carry : n_carry + n_xs])
    for x in xs:
        if x.rank == 0 or x.shape[0] != length:
            raise GraphcError(f"scan: each xs operand needs a leading axis of length {length}, got {x}")
    slices = [TensorType(x.shape[1:], x.dtype) for x in xs]
    body_ins = carry + slices + list(inputs[n_carry + n_xs :])
    _signature(op, "body", bodies[0], body_ins, None)
    outs = [v.type for v in bodies[0].outputs]
    if outs[:n_carry] != carry:
        raise GraphcError(f"scan: body returns carry {_show(outs[:n_carry])}, expected {_show(carry)}")
    return carry + [TensorType((length, *t.shape), t.dtype) for t in outs[n_carry:]]
