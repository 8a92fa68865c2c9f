"""Control flow: ONNX If, Loop and Scan as graphc's cond, while_loop and scan (graphc.control_flow).

A body is an ONNX GraphProto converted with the same converter table, inside the body trace of
the graphc primitive; names it reads from enclosing scopes resolve through the enclosing
``env`` and become captures of the graphc node. Values known while converting fold: an If
with a constant condition converts only the branch taken.

- If: ``cond(pred, then, else)``; both branches must give the same types.
- Loop: with a constant trip count ``M`` and a condition that stays true (absent, or passed
  through unchanged by the body), ``scan`` of length ``M`` (scan outputs stacked, as ONNX
  does), or the body unrolled ``M`` times when it needs the iteration number as a constant
  (a Slice at ``i``) and ``M`` is at most ``UNROLL_LIMIT``; otherwise ``while_loop`` over
  ``(iteration, cond, *carried)`` (no scan outputs then:
  their length would be known only at run time).
- Scan (opset 9+): ``scan`` over the scan inputs' ``scan_input_axes`` (moved to the front),
  a reverse direction reversing that input (or output) along its scan axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.control_flow import cond, scan, while_loop
from graphc.ir import GraphcError
from graphc.tensor import Tensor, current_context

from ..context import NodeContext, value_tensor
from ..proto import to_array
from ..registry import converter
from ..walk import convert_nodes

# A Loop of a constant trip count whose body needs the iteration number while converting (a
# Slice at ``i``, say) is unrolled up to this many trips; longer ones keep the error.
UNROLL_LIMIT = 64


def _declared_shape(vi) -> tuple[int, ...] | None:
    """The static shape an ONNX ValueInfo declares, or None (absent or symbolic dims)."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _run_body(nc: NodeContext, graph, bound: dict[str, Any], keep_constants: bool = False) -> list:
    """Convert body ``graph`` in the current trace with ``bound`` inputs; its outputs as Tensors
    (``keep_constants``: an output known while converting stays a NumPy constant)."""
    where = f"{nc.where} body {graph.name[:40]!r}"
    env = dict(nc.env)
    for init in graph.initializer:
        env[init.name] = to_array(init, f"{where}: initializer")
    env.update(bound)
    ctx = current_context()
    convert_nodes(graph.node, env, ctx, nc.opset, where)
    outs = []
    for o in graph.output:
        if o.name not in env:
            raise nc.fail(f"body output {o.name[:60]!r} is never computed")
        value = env[o.name]
        outs.append(
            value
            if keep_constants and isinstance(value, np.ndarray)
            else value_tensor(value, ctx, o.name, where)
        )
    return outs


def _bind(nc: NodeContext, graph, values: list[Any]) -> dict[str, Any]:
    """The body's inputs bound to ``values`` (reshaped to the shapes the body declares)."""
    if len(graph.input) != len(values):
        raise nc.fail(f"the body takes {len(graph.input)} input(s), the node gives {len(values)}")
    bound = {}
    for vi, v in zip(graph.input, values):
        shape = _declared_shape(vi)
        if isinstance(v, np.ndarray) and shape is not None and v.size == int(np.prod(shape)):
            v = v.reshape(shape)
        elif isinstance(v, Tensor) and shape is not None and tuple(v.shape) != shape:
            if int(np.prod(shape)) != int(np.prod(v.shape)):
                raise nc.fail(f"body input {vi.name[:60]!r} is declared {list(shape)}, given {list(v.shape)}")
            v = v.reshape(shape)
        bound[vi.name] = v
    return bound


def _scalar(nc: NodeContext, t: Tensor, what: str) -> Tensor:
    if int(np.prod(t.shape)) != 1:
        raise nc.fail(f"{what} must hold one value, got shape {list(t.shape)}")
    return t.reshape(()) if tuple(t.shape) != () else t


@converter("If")
def _if(nc: NodeContext) -> list:
    then_g, else_g = nc.attrs.graph("then_branch"), nc.attrs.graph("else_branch")
    if nc.is_static(0):
        value = nc.static(0, "cond")
        if value.size != 1:
            raise nc.fail(f"cond must hold one value, got shape {list(value.shape)}")
        # The branch taken is inlined: what it computes from constants stays constant (a shape).
        return _run_body(nc, then_g if bool(value.reshape(-1)[0]) else else_g, {}, keep_constants=True)
    pred = _scalar(nc, nc.t(0), "cond")
    outs = cond(pred, lambda: _run_body(nc, then_g, {}), lambda: _run_body(nc, else_g, {}))
    return list(outs)


def _unrolled(nc: NodeContext, body, trips: int, carried: list, n_carry: int) -> list:
    """The loop unrolled: the body converted ``trips`` times with a constant iteration number."""
    from graphc.functional import stack

    vs, ys = list(carried), []
    for i in range(trips):
        outs = _run_body(nc, body, _bind(nc, body, [np.array(i, np.int64), np.array(True), *vs]))
        vs = outs[1 : 1 + n_carry]
        ys.append(outs[1 + n_carry :])
    return [*vs, *(stack([y[k] for y in ys]) for k in range(len(ys[0])))]


def _passes_cond_through(body) -> bool:
    """Whether the body's condition output is its condition input (through Identity nodes) or true."""
    producer = {o: n for n in body.node for o in n.output}
    name, seen = body.output[0].name, set()
    while name not in seen:
        seen.add(name)
        if name == body.input[1].name:
            return True
        node = producer.get(name)
        if node is None:
            return False
        if node.op_type == "Identity":
            name = node.input[0]
        elif node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            value = to_array(node.attribute[0].t, "Loop body constant")
            return value.size == 1 and bool(value.reshape(-1)[0])
        else:
            return False
    return False


@converter("Loop")
def _loop(nc: NodeContext) -> list:
    body = nc.attrs.graph("body")
    carried = [nc.t(i) for i in range(2, len(nc))]
    n_carry = len(carried)
    n_scan = len(body.output) - 1 - n_carry
    if len(body.input) != 2 + n_carry or n_scan < 0:
        raise nc.fail(
            f"the body takes {len(body.input)} inputs and gives {len(body.output)} outputs for "
            f"{n_carry} loop-carried value(s)"
        )
    trips = int(nc.static_ints(0, "M (trip count)", 0)[0]) if nc.is_static(0) else None
    start_true = not nc.has(1) or (nc.is_static(1) and bool(nc.static(1, "cond").reshape(-1)[0]))
    ctx = nc.ctx
    i0 = ctx.const(0, "i64")
    true = ctx.const(True, "bool")

    def run(i: Tensor, c: Tensor, vs: list[Tensor]) -> list[Tensor]:
        return _run_body(nc, body, _bind(nc, body, [i, c, *vs]))

    if trips is not None and start_true and _passes_cond_through(body):
        if trips == 0:
            if n_scan:
                raise nc.fail("a Loop of 0 trips with scan outputs (their shape is unknown)")
            return carried

        def step(carry: list, _x: Any) -> tuple:
            i, vs = carry[0], carry[1:]
            outs = run(i, current_context().const(True, "bool"), vs)
            return [i + 1, *outs[1 : 1 + n_carry]], outs[1 + n_carry :]

        try:
            final, ys = scan(step, [i0, *carried], None, length=trips)
        except GraphcError:
            if trips > UNROLL_LIMIT:
                raise
            return _unrolled(nc, body, trips, carried, n_carry)  # the body needs i as a constant
        return [*final[1:], *ys]
    if n_scan:
        raise nc.fail(
            "scan outputs of a Loop whose trip count or condition is known only at run time (their "
            "length would be too); graphc needs a constant M and a condition the body passes through"
        )
    limit = nc.t(0) if nc.has(0) else None
    c0 = _scalar(nc, nc.t(1), "cond") if nc.has(1) else true
    if c0.value.dtype != "bool":
        c0 = c0 != 0

    def keep_going(carry: list) -> Tensor:
        i, c = carry[0], carry[1]
        if limit is None:
            return c
        m = _scalar(nc, limit, "M")
        return c & (i < (m if m.value.dtype == "i64" else nc.op("cast", m, dtype="i64")))

    def advance(carry: list) -> list:
        i, c, vs = carry[0], carry[1], carry[2:]
        outs = run(i, c, vs)
        c_next = _scalar(nc, outs[0], "the body's condition output")
        if c_next.value.dtype != "bool":
            c_next = c_next != 0
        return [i + 1, c_next, *outs[1 : 1 + n_carry]]

    final = while_loop(keep_going, advance, [i0, c0, *carried])
    return list(final[2:])


def _reverse(nc: NodeContext, t: Tensor, axis: int = 0) -> Tensor:
    n = t.shape[axis]
    return nc.op("gather", t, nc.tensor(np.arange(n - 1, -1, -1, dtype=np.int64), "reverse"), axis=axis)


@converter("Scan", since=9)
def _scan(nc: NodeContext) -> list:
    body = nc.attrs.graph("body")
    n_in = nc.attrs.int("num_scan_inputs", lo=1, hi=max(1, len(nc)))
    n_state = len(nc) - n_in
    if n_state < 0:
        raise nc.fail(f"num_scan_inputs={n_in} but only {len(nc)} inputs")
    n_out = len(body.output) - n_state
    if len(body.input) != n_state + n_in or n_out < 0:
        raise nc.fail(
            f"the body takes {len(body.input)} inputs and gives {len(body.output)} outputs for "
            f"{n_state} state(s) and {n_in} scan input(s)"
        )
    in_axes = nc.attrs.ints("scan_input_axes", [0] * n_in, length=n_in)
    in_dirs = nc.attrs.ints("scan_input_directions", [0] * n_in, length=n_in, lo=0, hi=1)
    out_axes = nc.attrs.ints("scan_output_axes", [0] * n_out, length=n_out)
    out_dirs = nc.attrs.ints("scan_output_directions", [0] * n_out, length=n_out, lo=0, hi=1)
    states = [nc.t(i) for i in range(n_state)]
    xs = []
    for k in range(n_in):
        x = nc.t(n_state + k)
        axis = nc.axis(in_axes[k], x.ndim, "scan_input_axes entry")
        if axis:
            x = x.permute(axis, *[d for d in range(x.ndim) if d != axis])
        xs.append(_reverse(nc, x) if in_dirs[k] else x)
    lengths = {int(x.shape[0]) for x in xs}
    if len(lengths) != 1:
        raise nc.fail(f"the scan inputs have different lengths {sorted(lengths)} along their scan axes")

    def step(carry: list, slices: list) -> tuple:
        outs = _run_body(nc, body, _bind(nc, body, [*carry, *slices]))
        return outs[:n_state], outs[n_state:]

    final, ys = scan(step, states, xs)
    results = list(final)
    for k, y in enumerate(ys):
        if out_dirs[k]:
            y = _reverse(nc, y)
        axis = nc.axis(out_axes[k], y.ndim, "scan_output_axes entry")
        if axis:
            order = list(range(1, y.ndim))
            order.insert(axis, 0)
            y = y.permute(*order)
        results.append(y)
    return results
