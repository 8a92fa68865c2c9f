"""Symbolic reverse-mode autodiff: a graph-to-graph pass that appends the backward graph.

API (the train-step builder calls this)::

    joint, grad_index = grad(graph, loss_index=0, wrt=None)

- ``graph`` is not modified; ``joint`` is a copy with the backward nodes appended (a joint
  forward + backward graph).
- ``graph.outputs[loss_index]`` is the loss: a scalar (shape ``()``) float value. The seed
  dL/dL is 1.
- ``wrt`` is a sequence of input names (or input Values of ``graph``); by default every ``param``
  input, in input order. Any float input kind may be named (data inputs too).
- ``joint.outputs`` = the forward outputs unchanged (same order, so ``graph.updates`` indices stay
  valid and are copied), followed by one gradient per ``wrt`` input in ``wrt`` order, each with
  exactly that input's type. ``grad_index`` maps each wrt input name to its gradient's output
  index (an insertion-ordered dict, ``wrt`` order): ``len(graph.outputs) + i`` for the i-th.
- An input that does not reach the loss gets zeros (``broadcast_to`` of a scalar ``const`` 0).
  A value used several times gets the sum of the contributions of all its uses.
- Backward nodes carry the ``source`` of the forward node they differentiate, so errors and dumps
  point to the user's code. Two gradients may be the same Value (e.g. ``sum(a + b)``), and a
  gradient output is never a graph input.
- ``cond`` differentiates the taken branch, ``scan`` runs a reverse scan over the carries it
  saves, ``while_loop`` records its trip count and recomputes the carries (passes/autodiff_control.py).
- Ops in ``NON_DIFFERENTIABLE`` (comparisons, argmax, sign, rng_uniform, const) contribute zero;
  every other registry op has a rule in ``VJP_RULES`` except ``fused``: autodiff runs before
  fusion, so a fused node on the path from a wrt input to the loss raises GraphcError.

``value_and_grad(graph, loss_index, wrt)`` is the same with outputs ``[loss, *gradients]`` only.

Rules only differentiate towards inputs that depend on a wrt input, so no work is spent on
gradients of data or constants (e.g. the exponent of ``x ** 2``).
"""

from __future__ import annotations

from collections.abc import Sequence

from graphc.ir import Graph, GraphcError, Node, Value
from graphc.ir.types import FLOAT_DTYPES

from .autodiff_control import CONTROL_VJPS
from .autodiff_rules import NON_DIFFERENTIABLE, VJP_RULES, Emitter, rule_for
from .manager import gc_paused

__all__ = ["NON_DIFFERENTIABLE", "VJP_RULES", "active_values", "backprop", "grad", "value_and_grad"]

# Control-flow ops (cond, while_loop, scan) are differentiated by passes/autodiff_control.py.
VJP_RULES.update(CONTROL_VJPS)


def _resolve_wrt(graph: Graph, joint: Graph, wrt: Sequence[str | Value] | None) -> list[Value]:
    if wrt is None:
        return joint.inputs_of_kind("param")
    by_name = {v.name: v for v in joint.inputs}
    out: list[Value] = []
    for item in wrt:
        name = item.name if isinstance(item, Value) else item
        if name not in by_name:
            raise GraphcError(f"autodiff: wrt names %{name}, which is not an input of graph {graph.name}")
        v = by_name[name]
        if v in out:
            raise GraphcError(f"autodiff: wrt names %{name} twice")
        out.append(v)
    for v in out:
        if v.dtype not in FLOAT_DTYPES:
            raise GraphcError(f"autodiff: cannot differentiate with respect to %{v.name}: it is {v.type}")
    return out


def grad(
    graph: Graph, loss_index: int = 0, wrt: Sequence[str | Value] | None = None
) -> tuple[Graph, dict[str, int]]:
    """Append the backward graph to a copy of ``graph``; return it and {wrt name: output index}."""
    with gc_paused():
        return _grad(graph, loss_index, wrt)


def _grad(graph: Graph, loss_index: int, wrt: Sequence[str | Value] | None) -> tuple[Graph, dict[str, int]]:
    if not 0 <= loss_index < len(graph.outputs):
        raise GraphcError(
            f"autodiff: loss_index {loss_index} out of range; graph {graph.name} has "
            f"{len(graph.outputs)} output(s)"
        )
    joint = graph.copy()
    loss = joint.outputs[loss_index]
    if loss.shape != () or loss.dtype not in FLOAT_DTYPES:
        raise GraphcError(
            f"autodiff: the loss (output {loss_index}, %{loss.name}) must be a scalar float, "
            f"got {loss.type}; reduce it with sum or mean first"
        )
    targets = _resolve_wrt(graph, joint, wrt)
    forward_nodes = list(joint.nodes)
    producer = {v: n for n in forward_nodes for v in n.outputs}
    e = Emitter(joint)
    adjoint: dict[Value, Value] = {}
    active = active_values(forward_nodes, targets)
    if loss in active:
        e.source = producer[loss].source if loss in producer else None
        adjoint[loss] = e.const(1.0, loss.dtype)
    backprop(e, forward_nodes, adjoint, active)

    e.source = None
    grad_index: dict[str, int] = {}
    for v in targets:
        g = adjoint.get(v)
        if g is None:
            g = e.zeros(v.type)
        grad_index[v.name] = joint.add_output(g)
    return joint, grad_index


def active_values(nodes: Sequence[Node], targets: Sequence[Value]) -> set[Value]:
    """Values that depend on a target through float values: only these need adjoints."""
    active: set[Value] = set(targets)
    for node in nodes:
        if any(v in active for v in node.inputs):
            active.update(v for v in node.outputs if v.dtype in FLOAT_DTYPES)
    return active


def backprop(e: Emitter, nodes: Sequence[Node], adjoint: dict[Value, Value], active: set[Value]) -> None:
    """Run the VJP rules of ``nodes`` in reverse, from the seeds in ``adjoint`` (value -> its
    cotangent), adding each operand's contributions into ``adjoint``. Control-flow nodes take
    one cotangent per output (``passes.autodiff_control``)."""
    for node in reversed(nodes):
        if node.op in CONTROL_VJPS:
            gs = [adjoint.get(v) for v in node.outputs]
            if all(g is None for g in gs):
                continue
        else:
            g = adjoint.get(node.outputs[0]) if len(node.outputs) == 1 else None
            if g is None:
                if len(node.outputs) > 1 and any(v in adjoint for v in node.outputs):
                    raise GraphcError(f"autodiff: multi-output op {node.op!r} has no VJP convention")
                continue
        needs = [v in active for v in node.inputs]
        if not any(needs):
            continue
        e.source = node.source
        if node.op in CONTROL_VJPS:
            contributions = CONTROL_VJPS[node.op](e, node, gs, needs)
        else:
            rule = rule_for(node)
            if rule is None:
                continue
            contributions = rule(e, node, g, needs)
        for v, need, c in zip(node.inputs, needs, contributions):
            if not need or c is None:
                continue
            if c.type != v.type:  # a rule bug, not a user error: fail loudly at the source
                raise AssertionError(f"VJP of {node.op} gave {c.type} for operand %{v.name}: {v.type}")
            adjoint[v] = c if v not in adjoint else e.add(adjoint[v], c)


def value_and_grad(graph: Graph, loss_index: int = 0, wrt: Sequence[str | Value] | None = None) -> Graph:
    """Like :func:`grad`, but the outputs are only ``[loss, *gradients]`` (no state updates)."""
    if graph.updates:
        raise GraphcError(
            "autodiff: value_and_grad drops forward outputs, so it cannot keep graph.updates; use grad()"
        )
    joint, grad_index = grad(graph, loss_index, wrt)
    joint.outputs = [joint.outputs[loss_index]] + [joint.outputs[i] for i in grad_index.values()]
    return joint
