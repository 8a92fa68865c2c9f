"""VJPs of the control-flow ops (``passes.autodiff`` dispatches here; one cotangent per output).

- ``cond``: a ``cond`` on the same predicate whose branches are the VJPs of the branches, so
  only the taken branch's VJP runs.
- ``scan``: the forward scan also returns the carry entering each step and the step's GEMM and
  transcendental results (``SAVED_OPS``; stacked: the saved residuals); the backward pass is a
  reverse scan whose body is the VJP of the step (its cheap intermediates recomputed from the
  saved values), carrying the carry cotangents and the summed cotangents of loop-invariant
  operands. A loop-invariant's cotangent that is a skinny ``a_t @ b_t`` per step (a weight's
  ``h_t^T @ dgates_t``) is instead one GEMM over the stacked operands after the loop, and one
  that is a sum of a per-step value (a bias's, over the batch) one sum of the stacked values.
  Residuals the step's VJP does not read are not stacked.
- ``while_loop`` (reverse mode, beyond JAX): the forward loop also counts its trips; the backward
  pass is a while_loop over the trips in reverse that recomputes the carry entering each trip from
  the initial carry (an inner while_loop) and applies the body's VJP: memory O(1) in the trip
  count, body evaluations O(trips^2).

A body's VJP is a graph of its own (``vjp_body``): its inputs are the body's inputs followed by
one cotangent per float output, its outputs one gradient per requested input. Slicing a value
into pieces (an LSTM's gates) gives a sum of zero pads in the VJP: it becomes one concat.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from graphc.ir import Graph, Node, TensorType, Value
from graphc.ir.types import FLOAT_DTYPES

from .autodiff_rules import Emitter
from .cleanup import remove_dead_nodes
from .control_flow import inline_body


def _float(v: Value) -> bool:
    return v.dtype in FLOAT_DTYPES


def vjp_body(body: Graph, wrt: Sequence[int], seeded: Sequence[int], name: str) -> Graph:
    """The VJP of ``body``: inputs are its data inputs, then a cotangent for each output index in
    ``seeded``; outputs are the gradients of the data inputs indexed by ``wrt`` (zeros where none)."""
    from .autodiff import active_values, backprop

    g = body.copy()
    g.name = name
    xs = g.data_inputs
    outs = list(g.outputs)
    g.outputs, g.updates = [], {}
    cts = [g.add_input(g.fresh_name(f"ct{j}"), outs[j].type, "data") for j in seeded]
    e = Emitter(g)
    nodes = list(g.nodes)
    adjoint: dict[Value, Value] = {}
    for j, ct in zip(seeded, cts):
        v = outs[j]
        adjoint[v] = ct if v not in adjoint else e.add(adjoint[v], ct)
    targets = [xs[i] for i in wrt]
    backprop(e, nodes, adjoint, active_values(nodes, targets))
    e.source = None
    for v in targets:
        g.add_output(adjoint[v] if v in adjoint else e.zeros(v.type))
    remove_dead_nodes(g)
    while _pads_to_concat(g):
        remove_dead_nodes(g)
    return g


def _tiling_pads(g: Graph, root: Node) -> tuple[int, list[Node]] | None:
    """``(axis, pads in order)`` when ``root`` is a tree of adds (inner ones read only there) over
    zero pads of equal shape that tile ``axis`` exactly, each padding that axis alone: the sum is
    then the concat of the padded values (the VJP of slicing a value into pieces: an LSTM's gates)."""
    users, producers = g.users(), g.producers()
    leaves: list[Node] = []
    stack = list(root.inputs)
    while stack:
        v = stack.pop()
        n = producers.get(v)
        if n is None or v.shape != root.output.shape or len(users.get(v, ())) != 1 or v in g.outputs:
            return None
        if n.op == "add":
            stack.extend(n.inputs)
        elif n.op == "pad" and n.attrs["value"] == 0:
            leaves.append(n)
        else:
            return None
    axes = {a for n in leaves for a, (lo, hi) in enumerate(n.attrs["pads"]) if lo or hi}
    if len(axes) != 1 or len(leaves) < 2:
        return None
    (axis,) = axes
    leaves.sort(key=lambda n: n.attrs["pads"][axis][0])
    at = 0
    for n in leaves:
        lo, hi = n.attrs["pads"][axis]
        if lo != at:
            return None
        at += n.inputs[0].shape[axis]
        if hi != root.output.shape[axis] - at:
            return None
    return (axis, leaves) if at == root.output.shape[axis] else None


def _pads_to_concat(g: Graph) -> bool:
    """Rewrite one sum of zero pads tiling an axis (``_tiling_pads``) as a concat: one copy of each
    piece instead of a padded array per piece and the adds over them. True if it rewrote one."""
    for root in reversed(g.nodes):
        found = _tiling_pads(g, root) if root.op == "add" else None
        if found is None:
            continue
        axis, leaves = found
        made = g.add_node("concat", [n.inputs[0] for n in leaves], {"axis": axis}, root.source)
        g.replace_uses(root.output, made.output)
        nodes = [n for n in g.nodes if n is not made]
        i = nodes.index(root)
        g.set_nodes([*nodes[:i], made, *nodes[i:]])
        return True
    return False


def _place_before(graph: Graph, anchor: Node, made: list[Node], replace: bool = False) -> None:
    """Move nodes just appended to ``graph`` to sit before ``anchor`` (or instead of it)."""
    for n in made:
        graph.nodes.remove(n)
    i = graph.nodes.index(anchor)
    graph.nodes[i : i + 1] = [*made, *([] if replace else [anchor])]
    graph.invalidate_uses()


def _replace_keeping_outputs(graph: Graph, old: Node, new: Node, before: Sequence[Node] = ()) -> list[Value]:
    """Put ``new`` (just appended, with more outputs than ``old``) in ``old``'s place; its first
    outputs become ``old``'s Values, so every reader keeps working. Returns the extra outputs."""
    n = len(old.outputs)
    for v in new.outputs[:n]:
        graph._names.discard(v.name)
    extra = new.outputs[n:]
    new.outputs = list(old.outputs) + extra
    _place_before(graph, old, [*before, new], replace=True)
    return extra


def _zeros_or(e: Emitter, g: Value | None, t: TensorType) -> Value:
    return g if g is not None else e.zeros(t)


def _inline(g: Graph, body: Graph, operands: list[Value]) -> list[Value]:
    nodes, results = inline_body(g, body, operands, None)
    g.nodes.extend(nodes)
    g.invalidate_uses()
    return results


# ---------------------------------------------------------------------------- cond
def cond_vjp(e: Emitter, node: Node, gs: list[Value | None], needs: list[bool]) -> list[Value | None]:
    """A cond over the branches' VJPs: only the taken branch is differentiated."""
    ops = node.inputs[1:]
    wrt = [i for i, v in enumerate(ops) if needs[i + 1] and _float(v)]
    out: list[Value | None] = [None] * len(node.inputs)
    if not wrt:
        return out
    seeded = [j for j, v in enumerate(node.outputs) if _float(v)]
    cts = [_zeros_or(e, gs[j], node.outputs[j].type) for j in seeded]
    bodies = [vjp_body(b, wrt, seeded, f"{b.name}_vjp") for b in node.bodies]
    grads = e.graph.add_control("cond", [node.inputs[0], *ops, *cts], bodies, {}, e.source).outputs
    for i, v in zip(wrt, grads):
        out[i + 1] = v
    return out


# ---------------------------------------------------------------------------- scan
# Ops whose results the forward scan saves rather than the backward recomputing them: GEMMs and
# transcendentals (each a polynomial or a libm call per element, dearer than reading it back).
SAVED_OPS = frozenset({"matmul", "exp", "log", "tanh", "erf", "sin", "cos"})


def _residuals(body: Graph, n_per_step: int) -> list[Value]:
    """The body's results of ``SAVED_OPS`` that depend on a carry or x slice (its first
    ``n_per_step`` data inputs): the forward scan stacks them, so the backward's recomputation of
    the step skips its most expensive nodes (an LSTM's ``h @ W_hh^T`` and its gates' exp and tanh;
    torch's LSTM saves its gates the same way)."""
    varying = set(body.data_inputs[:n_per_step])
    found = []
    for n in body.nodes:
        if any(v in varying for v in n.inputs):
            varying.update(n.outputs)
            if n.op in SAVED_OPS and _float(n.output):
                found.append(n.output)
    return found


def _read_saved(vf: Graph, names: list[str]) -> list[str]:
    """Make ``vf`` read the values named ``names`` from new data inputs (after its others) instead
    of computing them; returns the names of the ones it still needed (one new input each)."""
    producers = {v.name: (n, v) for n in vf.nodes for v in n.outputs}
    taken: list[tuple[str, Value]] = []
    for name in names:
        if name not in producers:  # not needed by the VJP (dead there)
            continue
        node, old = producers[name]
        new = vf.add_input(vf.fresh_name(f"saved_{name}"), old.type, "data")
        vf.replace_uses(old, new)
        vf.set_nodes([n for n in vf.nodes if n is not node])
        taken.append((name, new))
    live = remove_dead_nodes(vf)
    for _, v in taken:  # dead once the other saved values replaced what read it (an LSTM's h @ W_hh^T)
        if v not in live:
            vf.remove_input(v)
    return [name for name, v in taken if v in live]


def _skinny_matmul(vf: Graph, out: Value) -> tuple[Value, Value, bool] | None:
    """``(a, b, transposed)`` when ``out`` is ``a @ b`` (2-D, ``transposed``: ``a`` is
    ``transpose(a_src)`` and ``a_src`` is returned) over a contraction so short that the per-step
    operands are smaller than the product (a weight's gradient ``h_t^T @ dgates_t``). Also when
    ``out`` is ``transpose(x_src^T @ y)``, which is ``y^T @ x_src`` (the gradient of a weight the
    body reads transposed, ``h_t @ W^T``): ``(y, x_src, True)``."""
    producers = vf.producers()
    node = producers.get(out)
    if node is None or vf.outputs.count(out) != 1:
        return None
    if node.op == "transpose" and tuple(node.attrs["perm"]) == (1, 0):
        inner = producers.get(node.inputs[0])
        x_src = producers.get(inner.inputs[0]) if inner is not None and inner.op == "matmul" else None
        if x_src is None or x_src.op != "transpose" or tuple(x_src.attrs["perm"]) != (1, 0):
            return None
        if node.inputs[0] in vf.outputs:
            return None
        y, b = inner.inputs[1], x_src.inputs[0]
        if y.type.rank != 2 or b.type.rank != 2 or y.shape[0] != b.shape[0]:
            return None
        (r, n), m = y.shape, b.shape[1]
        return (y, b, True) if r * (m + n) < m * n else None
    if node.op != "matmul":
        return None
    a, b = node.inputs
    if a.type.rank != 2 or b.type.rank != 2 or out.shape != (a.shape[0], b.shape[1]):
        return None
    (m, r), n = a.shape, b.shape[1]
    if r * (m + n) >= m * n:
        return None
    src = producers.get(a)
    if src is not None and src.op == "transpose" and tuple(src.attrs["perm"]) == (1, 0):
        return src.inputs[0], b, True
    return a, b, False


def _hoist_invariant_matmuls(
    vf: Graph, first_k: int, per_step_inputs: dict[int, Value]
) -> dict[int, tuple[Value, Value, bool]]:
    """Which loop-invariant gradients of the step VJP ``vf`` (its outputs from ``first_k`` on) are a
    skinny ``a_t @ b_t`` each step: their sum over the steps is one GEMM after the loop over the
    stacked operands, instead of a GEMM per step accumulated in a carry (memory bound, with a
    carry the size of the weight). An operand may not be a loop-carried or invariant input
    (only those in ``per_step_inputs``, by data-input index, are stacked outside)."""
    index = {v: i for i, v in enumerate(vf.data_inputs)}
    hoist = {}
    for q, v in enumerate(vf.outputs[first_k:]):
        found = _skinny_matmul(vf, v)
        if found is not None and all(u not in index or index[u] in per_step_inputs for u in found[:2]):
            hoist[q] = found
    return hoist


def _hoist_invariant_sums(
    vf: Graph, first_k: int, per_step_inputs: dict[int, Value], taken: dict[int, object]
) -> dict[int, tuple[Value, tuple[int, ...]]]:
    """Which loop-invariant gradients of ``vf`` (outputs from ``first_k`` on, not in ``taken``) are a
    sum over axes of a per-step value ``u_t``, perhaps reshaped (a bias's gradient, summed over the
    batch): ``{output: (u, axes)}``. Their sum over the steps is one reduction of the stacked ``u``
    after the loop instead of a reduction and an add per step."""
    index = {v: i for i, v in enumerate(vf.data_inputs)}
    producers = vf.producers()
    found = {}
    for q, v in enumerate(vf.outputs[first_k:]):
        node = producers.get(v)
        if q in taken or node is None or vf.outputs.count(v) != 1:
            continue
        if node.op == "reshape":
            node = producers.get(node.inputs[0])
        if node is None or node.op != "sum":
            continue
        u = node.inputs[0]
        if u not in index or index[u] in per_step_inputs:
            found[q] = (u, tuple(sorted(a % u.type.rank for a in node.attrs["axes"])))
    return found


def scan_vjp(e: Emitter, node: Node, gs: list[Value | None], needs: list[bool]) -> list[Value | None]:
    """A reverse scan over the carries the forward scan saves (see the module docstring)."""
    graph = e.graph
    k, n_xs, length = node.attrs["n_carry"], node.attrs["n_xs"], node.attrs["length"]
    ins, body = node.inputs, node.bodies[0]
    n_in = len(ins)
    c_wrt = [i for i in range(k) if _float(ins[i])]
    x_wrt = [i for i in range(k, k + n_xs) if needs[i] and _float(ins[i])]
    k_wrt = [i for i in range(k + n_xs, n_in) if needs[i] and _float(ins[i])]
    out: list[Value | None] = [None] * n_in
    if not (any(needs[i] for i in c_wrt) or x_wrt or k_wrt):
        return out
    y_seeded = [j for j in range(k, len(body.outputs)) if _float(body.outputs[j])]
    vf = vjp_body(body, c_wrt + x_wrt + k_wrt, c_wrt + y_seeded, "scan_step_vjp")
    n_c, n_x = len(c_wrt), len(x_wrt)
    products = _read_saved(vf, [v.name for v in _residuals(body, k + n_xs)])

    # Residuals: the forward scan also stacks the carry entering each step and those values.
    aug = body.copy()
    for v in aug.data_inputs[:k]:
        aug.add_output(v)
    made = {v.name: v for n in aug.nodes for v in n.outputs}
    for name in products:
        aug.add_output(made[name])
    fwd = graph.add_control("scan", ins, [aug], dict(node.attrs), node.source)
    residuals = _replace_keeping_outputs(graph, node, fwd)
    saved, saved_products = residuals[:k], residuals[k:]
    gys = [_zeros_or(e, gs[j], node.outputs[j].type) for j in y_seeded]

    # vf's per-step inputs already stacked outside: saved carries, xs, output cotangents, products.
    per_step: dict[int, Value] = {i: saved[i] for i in range(k)}
    per_step.update({k + i: ins[k + i] for i in range(n_xs)})
    per_step.update({n_in + n_c + j: gy for j, gy in enumerate(gys)})
    first_product = n_in + n_c + len(gys)
    per_step.update({first_product + p: v for p, v in enumerate(saved_products)})
    hoist = _hoist_invariant_matmuls(vf, n_c + n_x, per_step) if length > 0 else {}
    sums = _hoist_invariant_sums(vf, n_c + n_x, per_step, hoist) if length > 0 else {}
    k_acc = [i for q, i in enumerate(k_wrt) if q not in hoist and q not in sums]
    x_grads = vf.outputs[n_c : n_c + n_x]  # stacked already (the xs' gradients)
    extra: list[Value] = []  # other per-step operands of hoisted GEMMs and sums, stacked as more ys
    for u in [*(w for a, b, _ in hoist.values() for w in (a, b)), *(u for u, _ in sums.values())]:
        if u not in vf.data_inputs and u not in x_grads and u not in extra:
            extra.append(u)
    if hoist or sums:
        kept = [v for q, v in enumerate(vf.outputs[n_c + n_x :]) if q not in hoist and q not in sums]
        vf.outputs = [*vf.outputs[: n_c + n_x], *kept, *extra]
        remove_dead_nodes(vf)

    bg = Graph("scan_vjp")
    dc_in = [bg.add_input(f"dc{i}", ins[i].type) for i in c_wrt]
    dk_in = [bg.add_input(f"dk{i}", ins[i].type) for i in k_acc]
    c_in = [bg.add_input(f"c{i}", ins[i].type) for i in range(k)]
    x_in = [bg.add_input(f"x{i}", TensorType(ins[i].shape[1:], ins[i].dtype)) for i in range(k, k + n_xs)]
    gy_in = [bg.add_input(f"gy{j}", body.outputs[j].type) for j in y_seeded]
    p_in = [bg.add_input(f"p{j}", TensorType(v.shape[1:], v.dtype)) for j, v in enumerate(saved_products)]
    k_in = [bg.add_input(f"k{i}", ins[i].type) for i in range(k + n_xs, n_in)]
    res = _inline(bg, vf, [*c_in, *x_in, *k_in, *dc_in, *gy_in, *p_in])
    n_k = len(k_acc)
    dk_new = [bg.op("add", acc, d) for acc, d in zip(dk_in, res[n_c + n_x : n_c + n_x + n_k])]
    for v in [*res[:n_c], *dk_new, *res[n_c : n_c + n_x], *res[n_c + n_x + n_k :]]:
        bg.add_output(v)

    seeds = [_zeros_or(e, gs[i], ins[i].type) for i in c_wrt]
    zeros = [e.zeros(ins[i].type) for i in k_acc]
    operands = [*seeds, *zeros, *saved, *ins[k : k + n_xs], *gys, *saved_products, *ins[k + n_xs :]]
    attrs = {
        "n_carry": n_c + n_k,
        "n_xs": k + n_xs + len(gys) + len(saved_products),
        "length": length,
        "reverse": not node.attrs["reverse"],
    }
    results = graph.add_control("scan", operands, [bg], attrs, e.source).outputs
    for i, v in zip(c_wrt, results[:n_c]):
        out[i] = v if needs[i] else None
    for i, v in zip(k_acc, results[n_c : n_c + n_k]):
        out[i] = v
    for i, v in zip(x_wrt, results[n_c + n_k : n_c + n_k + n_x]):
        out[i] = v
    stacked = dict(zip([*x_grads, *extra], results[n_c + n_k :]))
    index = {v: i for i, v in enumerate(vf.data_inputs)}
    for q, (a, b, transposed) in hoist.items():
        a_all, b_all = (per_step[index[u]] if u in index else stacked[u] for u in (a, b))
        r, n = b.shape
        if transposed:  # a_t = a_src_t^T, a_src_t [r, m]: sum_t a_t @ b_t = A^T @ B, A = [T*r, m]
            lhs = e.op("transpose", e.reshape(a_all, (length * r, a.shape[1])), perm=(1, 0))
        else:  # a_t [m, r]: [m, T, r] -> [m, T*r]
            lhs = e.reshape(e.op("transpose", a_all, perm=(1, 0, 2)), (a.shape[0], length * r))
        out[k_wrt[q]] = e.op("matmul", lhs, e.reshape(b_all, (length * r, n)))
    for q, (u, axes) in sums.items():
        u_all = per_step[index[u]] if u in index else stacked[u]
        axes = (0, *(a + 1 for a in axes))
        if axes == tuple(range(len(axes))):  # leading axes: one 2-D column sum, as a Linear's bias has
            u_all = e.reshape(u_all, (math.prod(u_all.shape[: len(axes)]), *u_all.shape[len(axes) :]))
            axes = (0,)
        total = e.op("sum", u_all, axes=axes, keepdims=True)
        out[k_wrt[q]] = e.reshape(total, ins[k_wrt[q]].shape)
    return out


# ---------------------------------------------------------------------------- while_loop
def _counting(cond: Graph, body: Graph, k: int) -> tuple[Graph, Graph]:
    """The loop's bodies with an i64 trip counter added after the carries."""
    counter = TensorType((), "i64")
    new = []
    for old, counts in ((cond, False), (body, True)):
        g = Graph(old.name)
        ins = [g.add_input(f"c{i}", v.type) for i, v in enumerate(old.data_inputs[:k])]
        n = g.add_input("trips", counter)
        consts = [g.add_input(f"k{i}", v.type) for i, v in enumerate(old.data_inputs[k:])]
        res = _inline(g, old, [*ins, *consts])
        if counts:
            res = [*res, g.op("add", n, g.op("const", value=1, dtype="i64"))]
        for v in res:
            g.add_output(v)
        new.append(g)
    return new[0], new[1]


def while_vjp(e: Emitter, node: Node, gs: list[Value | None], needs: list[bool]) -> list[Value | None]:
    """Record the trip count; run the body's VJP over the trips in reverse, recomputing carries."""
    graph = e.graph
    k = node.attrs["n_carry"]
    ins = node.inputs
    cond, body = node.bodies
    c_wrt = [i for i in range(k) if _float(ins[i])]
    k_wrt = [i for i in range(k, len(ins)) if needs[i] and _float(ins[i])]
    out: list[Value | None] = [None] * len(ins)
    if not (any(needs[i] for i in c_wrt) or k_wrt):
        return out
    vf = vjp_body(body, c_wrt + k_wrt, c_wrt, "while_body_vjp")

    # Forward: the same loop, also counting its trips.
    counting_cond, counting_body = _counting(cond, body, k)
    zero = graph.add_node("const", [], {"value": 0, "dtype": "i64"}, node.source)
    fwd = graph.add_control(
        "while_loop",
        [*ins[:k], zero.output, *ins[k:]],
        [counting_cond, counting_body],
        {"n_carry": k + 1},
        node.source,
    )
    (trips,) = _replace_keeping_outputs(graph, node, fwd, before=[zero])

    i64 = TensorType((), "i64")
    # Recompute the carry entering trip j: run the body j times from the initial carry.
    rc = Graph("recompute_cond")
    rc_c = [rc.add_input(f"c{i}", ins[i].type) for i in range(k)]
    rc_i, rc_j = rc.add_input("i", i64), rc.add_input("j", i64)
    for i in range(k, len(ins)):
        rc.add_input(f"k{i}", ins[i].type)
    del rc_c
    rc.add_output(rc.op("lt", rc_i, rc_j))
    rb = Graph("recompute_body")
    rb_c = [rb.add_input(f"c{i}", ins[i].type) for i in range(k)]
    rb_i = rb.add_input("i", i64)
    rb.add_input("j", i64)
    rb_k = [rb.add_input(f"k{i}", ins[i].type) for i in range(k, len(ins))]
    for v in _inline(rb, body, [*rb_c, *rb_k]):
        rb.add_output(v)
    rb.add_output(rb.op("add", rb_i, rb.op("const", value=1, dtype="i64")))

    # Backward loop: carries (j, dc, dk_acc), invariants (c0, consts).
    bc = Graph("while_vjp_cond")
    j = bc.add_input("j", i64)
    for i in c_wrt:
        bc.add_input(f"dc{i}", ins[i].type)
    for i in k_wrt:
        bc.add_input(f"dk{i}", ins[i].type)
    for i in range(len(ins)):
        bc.add_input(f"in{i}", ins[i].type)
    bc.add_output(bc.op("ge", j, bc.op("const", value=0, dtype="i64")))
    bb = Graph("while_vjp_body")
    j = bb.add_input("j", i64)
    dc = [bb.add_input(f"dc{i}", ins[i].type) for i in c_wrt]
    dk = [bb.add_input(f"dk{i}", ins[i].type) for i in k_wrt]
    c0 = [bb.add_input(f"c{i}", ins[i].type) for i in range(k)]
    consts = [bb.add_input(f"k{i}", ins[i].type) for i in range(k, len(ins))]
    zero_i = bb.op("const", value=0, dtype="i64")
    cj = bb.add_control("while_loop", [*c0, zero_i, j, *consts], [rc, rb], {"n_carry": k + 1}).outputs[:k]
    res = _inline(bb, vf, [*cj, *consts, *dc])
    n_c = len(c_wrt)
    bb.add_output(bb.op("sub", j, bb.op("const", value=1, dtype="i64")))
    for v in res[:n_c]:
        bb.add_output(v)
    for acc, d in zip(dk, res[n_c:]):
        bb.add_output(bb.op("add", acc, d))

    start = e.op("sub", trips, e.const(1, "i64"))
    seeds = [_zeros_or(e, gs[i], ins[i].type) for i in c_wrt]
    zeros = [e.zeros(ins[i].type) for i in k_wrt]
    attrs = {"n_carry": 1 + n_c + len(k_wrt)}
    results = graph.add_control(
        "while_loop", [start, *seeds, *zeros, *ins], [bc, bb], attrs, e.source
    ).outputs
    for i, v in zip(c_wrt, results[1 : 1 + n_c]):
        out[i] = v if needs[i] else None
    for i, v in zip(k_wrt, results[1 + n_c :]):
        out[i] = v
    return out


CONTROL_VJPS: dict[str, Callable[[Emitter, Node, list[Value | None], list[bool]], list[Value | None]]] = {
    "cond": cond_vjp,
    "scan": scan_vjp,
    "while_loop": while_vjp,
}
