"""Compile-time evaluation: constant folding, freezing parameters, folding affine ops into matmuls."""

from __future__ import annotations

import math

import numpy as np

from graphc.ir import Graph, Node, TensorType, Value
from graphc.ir.ops import normalize_attrs
from graphc.kernels.reference import run_node

from .cleanup import remove_dead_nodes
from .control_flow import in_bodies, inline_body
from .util import const_array, graph_pass, new_node, producers

# A folded result larger than this many elements is kept as a node unless it is no larger than
# its constant operands: folding broadcast_to(0.0, [8192, 1024]) would only bloat the plan file.
FOLD_MAX_ELEMENTS = 1 << 16


def _materialize(graph: Graph, value: Value, arr: np.ndarray, source: str | None) -> Node | None:
    """Make ``value`` a const node (finite scalars) or a const input; returns the node if any."""
    if value.shape == () and (value.dtype not in ("f32", "f64") or math.isfinite(float(arr))):
        attrs = normalize_attrs("const", {"value": arr.item(), "dtype": value.dtype})
        return Node("const", [], attrs, [value], source)
    graph.inputs.append(value)
    graph.kinds[value.name] = "const"
    graph.initializers[value.name] = np.array(arr, order="C")
    return None


@graph_pass("constant_fold")
def constant_fold(graph: Graph, max_elements: int = FOLD_MAX_ELEMENTS) -> Graph:
    """Evaluate every node whose operands are all known at compile time with the reference kernels.

    Known values are ``const`` inputs with initializers and outputs of ``const`` nodes (and of
    nodes folded before). A folded value that something still reads becomes a ``const`` input
    of the same name holding the array, or a ``const`` node when it is a finite scalar.
    A ``cond`` whose predicate is known becomes its taken branch, inlined and folded further;
    control-flow bodies are folded too.
    """
    in_bodies(graph, lambda body: constant_fold(body, max_elements))
    known: dict[Value, np.ndarray] = {}
    for v in graph.inputs:
        if graph.kinds[v.name] == "const" and v.name in graph.initializers:
            known[v] = np.asarray(graph.initializers[v.name])
    folded: dict[Value, Node] = {}
    keep: list[Node] = []
    pending, subst, taken = list(reversed(graph.nodes)), {}, False
    while pending:
        node = pending.pop()
        node.inputs = [subst.get(v, v) for v in node.inputs]
        if node.op == "cond" and node.inputs[0] in known:  # a known predicate: inline the branch
            branch = node.bodies[0] if bool(known[node.inputs[0]]) else node.bodies[1]
            nodes, results = inline_body(graph, branch, node.inputs[1:], node.source)
            subst.update(zip(node.outputs, results))
            pending.extend(reversed(nodes))
            taken = True
            continue
        if node.op == "const":
            known[node.output] = run_node(node, [])[0]
            keep.append(node)
            continue
        if node.inputs and all(v in known for v in node.inputs):
            size_out = sum(v.type.numel for v in node.outputs)
            size_in = sum(v.type.numel for v in node.inputs)
            if size_out <= max_elements or size_out <= size_in:
                for v, arr in zip(node.outputs, run_node(node, [known[v] for v in node.inputs])):
                    known[v] = arr
                    folded[v] = node
                continue
        keep.append(node)
    if taken:
        graph.outputs = [subst.get(v, v) for v in graph.outputs]
        graph.set_nodes(keep)
    if not folded:
        return graph
    needed = {v for n in keep for v in n.inputs} | set(graph.outputs)
    const_nodes = []
    for v, node in folded.items():
        if v in needed:
            made = _materialize(graph, v, known[v], node.source)
            if made is not None:
                const_nodes.append(made)
    graph.set_nodes(const_nodes + keep)
    return graph


@graph_pass("freeze")
def freeze(graph: Graph) -> Graph:
    """Turn parameters with known values into constants (inference only), so folding sees them.

    A parameter that ``graph.updates`` writes back stays a parameter.
    """
    for v in graph.inputs:
        if graph.kinds[v.name] == "param" and v.name not in graph.updates and v.name in graph.initializers:
            graph.kinds[v.name] = "const"
    return graph


def _users(graph: Graph) -> dict[Value, list[Node]]:
    out: dict[Value, list[Node]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            out.setdefault(v, []).append(n)
    return out


def _only_axis(shape: tuple[int, ...], rank: int, axis: int) -> bool:
    padded = (1,) * (rank - len(shape)) + tuple(shape)
    return len(padded) == rank and all(d == 1 for i, d in enumerate(padded) if i != axis)


def _affine_chain(graph, mm: Node, prod, users, target_axis: int):
    """Follow single-use add/sub/mul/div/neg-by-constant ops after ``mm``; returns (end, scale, shift, n)."""
    out = mm.output
    rank = len(out.shape)
    scale = np.ones((), dtype=np.float64)
    shift = np.zeros((), dtype=np.float64)
    cur, steps, best = out, 0, None
    outputs = set(graph.outputs)
    while cur not in outputs and len(users.get(cur, ())) == 1:
        node = users[cur][0]
        if node.output.type != out.type or node.op not in ("add", "sub", "mul", "div", "neg"):
            break
        if node.op == "neg":
            s, t = -scale, -shift
        else:
            a, b = node.inputs
            other = b if a is cur else a
            if other is cur:
                break
            c = const_array(graph, other, prod)
            if c is None:
                break
            c = c.astype(np.float64)
            if node.op == "add":
                s, t = scale, shift + c
            elif node.op == "mul":
                s, t = scale * c, shift * c
            elif node.op == "sub":
                s, t = (scale, shift - c) if a is cur else (-scale, c - shift)
            elif a is cur:  # div by a constant; c / x is not affine
                s, t = scale / c, shift / c
            else:
                break
        if not _only_axis(s.shape, rank, target_axis):
            break
        scale, shift, cur, steps = s, t, node.output, steps + 1
        best = (cur, scale, shift, steps)
    return best


@graph_pass("fold_matmul_affine")
def fold_matmul_affine(graph: Graph) -> Graph:
    """Fold per-channel scale/shift chains after a matmul with a constant operand into the matmul.

    ``((W @ x + b - mean) * g / sd + beta)`` with constants of shape [C, 1] becomes
    ``(W * s) @ x + t``: one matmul and one bias add, which is how Conv2d (im2col + matmul)
    followed by an eval-mode BatchNorm2d becomes one convolution after ``freeze``. The scale may
    vary only along the matmul's output rows (constant left operand) or columns (constant right
    operand); the shift may be any constant that does not broadcast the result. The folded
    weights are computed in float64 and rounded once, so the result matches up to rounding.
    """
    remove_dead_nodes(graph)  # a dead reader would hide a single-use chain
    prod = producers(graph)
    users = _users(graph)
    inserts: dict[Node, list[Node]] = {}
    replace: dict[Value, Value] = {}
    for mm in list(graph.nodes):
        if mm.op != "matmul" or mm.output.dtype not in ("f32", "f64"):
            continue
        a, b = mm.inputs
        wa, wb = const_array(graph, a, prod), const_array(graph, b, prod)
        if (wa is None) == (wb is None):
            continue
        rank = len(mm.output.shape)
        chain = _affine_chain(graph, mm, prod, users, rank - 2 if wa is not None else rank - 1)
        if chain is None:
            continue
        end, scale, shift, steps = chain
        has_scale = bool(np.any(scale != 1.0))
        if steps < 2 and not has_scale:
            continue
        dtype = mm.output.type.np_dtype
        new_nodes = []
        operands = [a, b]
        if has_scale:
            vec = scale.reshape(-1)
            if wa is not None:
                w = (wa.astype(np.float64) * vec[:, None]).astype(dtype)
                index = 0
            else:
                w = (wb.astype(np.float64) * vec[None, :]).astype(dtype)
                index = 1
            wv = graph.add_input(
                graph.fresh_name(f"{operands[index].name}_folded"), TensorType.of(w), "const", w
            )
            operands[index] = wv
        mm2 = new_node(graph, "matmul", operands, {}, mm.source)
        new_nodes.append(mm2)
        result = mm2.output
        while shift.ndim and shift.shape[0] == 1:
            shift = shift[0]
        if np.any(shift != 0.0):
            t = np.array(shift, dtype=dtype, order="C")
            tv = graph.add_input(graph.fresh_name(f"{mm.output.name}_shift"), TensorType.of(t), "const", t)
            add = new_node(graph, "add", [result, tv], {}, mm.source)
            new_nodes.append(add)
            result = add.output
        end_node = prod[end]
        inserts[end_node] = new_nodes
        replace[end] = result
    if not replace:
        return graph
    nodes: list[Node] = []
    for node in graph.nodes:
        node.inputs = [replace.get(v, v) for v in node.inputs]
        nodes.append(node)
        nodes.extend(inserts.get(node, ()))
    graph.outputs = [replace.get(v, v) for v in graph.outputs]
    graph.set_nodes(nodes)
    return graph
