"""Algebraic and movement simplifications, applied to a fixed point.

Every rule keeps the value exactly (bit for bit) except where noted:

- ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``, ``1 * x``, ``x / 1``, ``x ** 1`` -> ``x`` when the
  result has x's type (``x + 0.0`` turns -0.0 into +0.0; nothing else differs).
- ``x * 0`` -> zeros only for integer dtypes, or floats with ``unsafe_math=True`` (it is wrong
  for inf and nan).
- ``x * -1`` -> ``neg x``; ``neg(neg x)`` -> ``x``; ``x + neg y`` -> ``x - y``; ``x - neg y`` -> ``x + y``.
- ``x ** 2`` -> ``x * x``; ``x ** -1`` -> ``reciprocal x``; ``1 / x`` -> ``reciprocal x``;
  ``reciprocal(sqrt x)`` and ``1 / sqrt x`` -> ``rsqrt x``.
- ``x / c`` -> ``x * (1/c)`` for a scalar constant c that is a power of two (exact).
- ``abs(abs x)``, ``abs(neg x)`` -> ``abs x``; ``maximum(x, x)``, ``minimum(x, x)``,
  ``where(c, x, x)`` -> ``x``; ``cast`` to the same dtype -> ``x``.
- movement: reshape to the same shape, ``reshape(reshape x)``, identity or composed transposes,
  ``transpose(a @ b)`` -> ``b^T @ a^T`` (last two axes; the matmul read only there),
  ``broadcast_to`` to the same shape or of a ``broadcast_to``, full slices, zero pads,
  one-operand concats.
- a ``broadcast_to`` operand of a broadcasting op is dropped when the op broadcasts it anyway
  (so ``x + broadcast_to(0.5, shape)`` reads the scalar).
- slices of a transpose whose every reader is a slice reaching a matmul through reshapes:
  ``slice(transpose y)`` -> ``transpose(slice y)``, so each piece is a strided view of y that
  fusion hands the matmul (no transpose copy).
- reshape sinking: ``f(reshape z)`` -> ``reshape(f z)`` for a pointwise f, and
  ``g(reshape z, c)`` -> ``reshape(g(z, c'))`` for a broadcasting g where c regroups to z's
  layout (c' is folded for a constant, ``reshape c`` for a small operand such as a per-channel
  parameter, whose reshapes then merge), or where ``c = reshape w`` and w has z's shape. Elementwise
  ops then sit next to their producer, so fusion can put them in a matmul epilogue, and
  per-channel constants after a conv reach its matmul.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, Node, TensorType, Value
from graphc.ir.ops import infer_types, normalize_attrs
from graphc.ir.types import INT_DTYPES

from .cleanup import remove_dead_nodes
from .util import const_array, fusion_class, graph_pass, new_node

MAX_ROUNDS = 20
# A non-constant operand this small may be reshaped to follow an op sunk below a reshape.
SMALL_OPERAND = 1 << 12


class _Rewriter:
    """One sweep over the nodes: a substitution map and the rebuilt node list."""

    def __init__(self, graph: Graph, unsafe_math: bool) -> None:
        self.graph = graph
        self.unsafe_math = unsafe_math
        self.prod: dict[Value, Node] = {v: n for n in graph.nodes for v in n.outputs}
        self.uses: dict[Value, int] = {}
        for n in graph.nodes:
            for v in n.inputs:
                self.uses[v] = self.uses.get(v, 0) + 1
        for v in graph.outputs:
            self.uses[v] = self.uses.get(v, 0) + 1
        self.readers: dict[Value, list[Node]] = {}
        for n in graph.nodes:
            for v in n.inputs:
                self.readers.setdefault(v, []).append(n)
        self.outputs = set(graph.outputs)
        self.subst: dict[Value, Value] = {}
        self.out: list[Node] = []
        self.source: str | None = None

    def resolve(self, v: Value) -> Value:
        while v in self.subst:
            v = self.subst[v]
        return v

    def const(self, v: Value) -> np.ndarray | None:
        return const_array(self.graph, v, self.prod)

    def producer(self, v: Value) -> Node | None:
        return self.prod.get(v)

    def op_of(self, v: Value) -> str | None:
        node = self.prod.get(v)
        return node.op if node is not None else None

    def emit(self, op: str, inputs: list[Value], **attrs) -> Value:
        node = new_node(self.graph, op, inputs, attrs, self.source)
        self.out.append(node)
        self.prod[node.output] = node
        return node.output

    def scalar(self, value, dtype: str) -> Value:
        return self.emit("const", [], value=value, dtype=dtype)

    def const_input(self, arr: np.ndarray, hint: str) -> Value:
        arr = np.array(arr, order="C")
        if arr.shape == () and (arr.dtype.kind != "f" or np.isfinite(arr)):
            return self.scalar(arr.item(), TensorType.of(arr).dtype)
        return self.graph.add_input(self.graph.fresh_name(hint), TensorType.of(arr), "const", arr)


def _is_all(arr: np.ndarray | None, value: float) -> bool:
    return arr is not None and arr.size > 0 and bool(np.all(arr == value))


def _same(node: Node, x: Value) -> Value | None:
    """``x`` when it can stand for the node's output (same type), else None."""
    return x if x.type == node.output.type else None


# ------------------------------------------------------------------ arithmetic
def _add(rw: _Rewriter, node: Node) -> Value | None:
    a, b = node.inputs
    for x, y in ((a, b), (b, a)):
        if _is_all(rw.const(y), 0) and _same(node, x):
            return x
    for x, y in ((a, b), (b, a)):
        if rw.op_of(y) == "neg":
            return rw.emit("sub", [x, rw.producer(y).inputs[0]])
    return None


def _sub(rw: _Rewriter, node: Node) -> Value | None:
    a, b = node.inputs
    if _is_all(rw.const(b), 0) and _same(node, a):
        return a
    if rw.op_of(b) == "neg":
        return rw.emit("add", [a, rw.producer(b).inputs[0]])
    return None


def _zeros(rw: _Rewriter, node: Node) -> Value:
    out = node.output
    zero = rw.scalar(0 if out.dtype in INT_DTYPES else 0.0, out.dtype)
    return zero if out.shape == () else rw.emit("broadcast_to", [zero], shape=out.shape)


def _mul(rw: _Rewriter, node: Node) -> Value | None:
    a, b = node.inputs
    for x, y in ((a, b), (b, a)):
        c = rw.const(y)
        if _is_all(c, 1) and _same(node, x):
            return x
        if _is_all(c, -1) and _same(node, x):
            return rw.emit("neg", [x])
        if _is_all(c, 0) and (node.output.dtype in INT_DTYPES or rw.unsafe_math):
            return _zeros(rw, node)
    return None


def _power_of_two_reciprocal(c: np.ndarray | None) -> float | None:
    if c is None or c.size != 1 or c.dtype.kind != "f":
        return None
    value = float(c.reshape(()))
    if value == 0 or not np.isfinite(value) or abs(np.frexp(value)[0]) != 0.5:
        return None
    return 1.0 / value


def _div(rw: _Rewriter, node: Node) -> Value | None:
    a, b = node.inputs
    cb, ca = rw.const(b), rw.const(a)
    if _is_all(cb, 1) and _same(node, a):
        return a
    if _is_all(ca, 1) and _same(node, b):
        if rw.op_of(b) == "sqrt":
            return rw.emit("rsqrt", [rw.producer(b).inputs[0]])
        return rw.emit("reciprocal", [b])
    inv = _power_of_two_reciprocal(cb)
    if inv is not None and infer_types("mul", [a.type, TensorType((), b.dtype)], {}) == [node.output.type]:
        return rw.emit("mul", [a, rw.scalar(inv, b.dtype)])
    return None


def _pow(rw: _Rewriter, node: Node) -> Value | None:
    x, e = node.inputs
    c = rw.const(e)
    if _same(node, x) is None:
        return None
    if _is_all(c, 1):
        return x
    if _is_all(c, 2):
        return rw.emit("mul", [x, x])
    if _is_all(c, -1):
        return rw.emit("reciprocal", [x])
    return None


def _neg(rw: _Rewriter, node: Node) -> Value | None:
    (x,) = node.inputs
    if rw.op_of(x) == "neg":
        return rw.producer(x).inputs[0]
    return None


def _abs(rw: _Rewriter, node: Node) -> Value | None:
    (x,) = node.inputs
    if rw.op_of(x) == "abs":
        return x
    if rw.op_of(x) == "neg":
        return rw.emit("abs", [rw.producer(x).inputs[0]])
    return None


def _reciprocal(rw: _Rewriter, node: Node) -> Value | None:
    (x,) = node.inputs
    if rw.op_of(x) == "sqrt":
        return rw.emit("rsqrt", [rw.producer(x).inputs[0]])
    return None


def _idempotent(rw: _Rewriter, node: Node) -> Value | None:
    a, b = node.inputs
    return _same(node, a) if a is b else None


def _where(rw: _Rewriter, node: Node) -> Value | None:
    _, a, b = node.inputs
    return _same(node, a) if a is b else None


def _cast(rw: _Rewriter, node: Node) -> Value | None:
    (x,) = node.inputs
    return x if node.attrs["dtype"] == x.dtype else None


# ------------------------------------------------------------------ movement
def _reshape(rw: _Rewriter, node: Node) -> Value | None:
    (x,) = node.inputs
    if x.shape == node.output.shape:
        return x
    if rw.op_of(x) == "reshape":
        inner = rw.producer(x).inputs[0]
        if inner.shape == node.output.shape:
            return inner
        return rw.emit("reshape", [inner], shape=node.output.shape)
    return None


def _transpose(rw: _Rewriter, node: Node) -> Value | None:
    (x,) = node.inputs
    perm = tuple(node.attrs["perm"])
    if perm == tuple(range(len(perm))):
        return x
    if rw.op_of(x) == "transpose":
        inner_node = rw.producer(x)
        first = inner_node.attrs["perm"]
        composed = tuple(first[p] for p in perm)
        inner = inner_node.inputs[0]
        if composed == tuple(range(len(composed))):
            return inner
        return rw.emit("transpose", [inner], perm=composed)
    rank = len(perm)
    swap = (*range(rank - 2), rank - 1, rank - 2)
    if perm == swap and rw.op_of(x) == "matmul" and rw.uses.get(x) == 1:
        # (a @ b)^T = b^T @ a^T: the transposes become BLAS operand flags (matmul prologues), and
        # autodiff's transpose(x^T @ g) for a weight gradient turns into g^T @ x with no copy.
        a, b = rw.producer(x).inputs
        a_t = rw.emit("transpose", [a], perm=(*range(a.type.rank - 2), a.type.rank - 1, a.type.rank - 2))
        b_t = rw.emit("transpose", [b], perm=(*range(b.type.rank - 2), b.type.rank - 1, b.type.rank - 2))
        return rw.emit("matmul", [b_t, a_t])
    return None


def _broadcast_to(rw: _Rewriter, node: Node) -> Value | None:
    (x,) = node.inputs
    if x.shape == node.output.shape:
        return x
    if rw.op_of(x) == "broadcast_to":
        return rw.emit("broadcast_to", [rw.producer(x).inputs[0]], shape=node.output.shape)
    return None


def _slice(rw: _Rewriter, node: Node) -> Value | None:
    (x,) = node.inputs
    a = node.attrs
    full = all(
        s == 0 and e == d and t == 1 for s, e, t, d in zip(a["starts"], a["stops"], a["steps"], x.shape)
    )
    if full:
        return x
    t = rw.producer(x)
    if t is not None and t.op == "transpose" and _split_for_matmuls(rw, x):
        # slice(transpose y) -> transpose(slice y): each piece then reaches its matmul as one
        # strided view of y (fusion's operand views), and the transpose's copy disappears.
        perm = tuple(t.attrs["perm"])
        y = t.inputs[0]
        starts, stops, steps = [0] * len(perm), list(y.shape), [1] * len(perm)
        for i, p in enumerate(perm):
            starts[p], stops[p], steps[p] = a["starts"][i], a["stops"][i], a["steps"][i]
        piece = rw.emit("slice", [y], starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
        return rw.emit("transpose", [piece], perm=perm)
    return None


def _split_for_matmuls(rw: _Rewriter, x: Value) -> bool:
    """Whether every reader of ``x`` is a slice whose result reaches a matmul through reshapes
    and transposes only."""
    readers = rw.readers.get(x, [])
    if x in rw.outputs or not readers:
        return False
    for s in readers:
        if s.op != "slice":
            return False
        v = s.output
        while True:
            users = rw.readers.get(v, [])
            if v in rw.outputs or len(users) != 1:
                return False
            if users[0].op == "matmul":
                break
            if users[0].op not in ("reshape", "transpose"):
                return False
            v = users[0].output
    return True


def _pad(rw: _Rewriter, node: Node) -> Value | None:
    (x,) = node.inputs
    return x if all(lo == 0 and hi == 0 for lo, hi in node.attrs["pads"]) else None


def _concat(rw: _Rewriter, node: Node) -> Value | None:
    return node.inputs[0] if len(node.inputs) == 1 else None


def reshape_groups(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair up runs of axes of ``src`` and ``dst`` with equal products (a reshape's structure)."""
    if 0 in src or 0 in dst or int(np.prod(src)) != int(np.prod(dst)):
        return None
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        gi, gj, pi, pj = [i], [j], src[i], dst[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                if i == len(src):
                    return None
                gi.append(i)
                pi *= src[i]
                i += 1
            else:
                if j == len(dst):
                    return None
                gj.append(j)
                pj *= dst[j]
                j += 1
        groups.append((gi, gj))
    if not groups:
        return None
    groups[-1][0].extend(range(i, len(src)))
    groups[-1][1].extend(range(j, len(dst)))
    return groups


def regroup_operand(
    shape: tuple[int, ...], src: tuple[int, ...], dst: tuple[int, ...]
) -> tuple[int, ...] | None:
    """The shape an operand broadcasting against ``dst`` takes against ``src`` (reshape src->dst), or None.

    Works when, for each run of axes the reshape merges or splits, the operand is either all
    ones or all full there.
    """
    if len(shape) > len(dst):
        return None
    padded = (1,) * (len(dst) - len(shape)) + tuple(shape)
    groups = reshape_groups(src, dst)
    if groups is None:
        return None
    out: list[int] = [1] * len(src)
    for gi, gj in groups:
        dims = [padded[k] for k in gj]
        if all(d == 1 for d in dims):
            continue
        if all(padded[k] == dst[k] for k in gj):
            for k in gi:
                out[k] = src[k]
        else:
            return None
    return tuple(out)


def _sink_reshape(rw: _Rewriter, node: Node) -> Value | None:
    """``f(reshape z, ...)`` -> ``reshape(f(z, ...))`` (see the module docstring)."""
    if (
        node.op == "broadcast_to"
        or fusion_class(node) not in ("pointwise", "broadcast")
        or len(node.outputs) != 1
    ):
        return None
    out = node.output
    # Any reshape, however many readers it has: a reshape is a free view, so the original one
    # stays for the others (a conv's ReLU reads its reshaped output twice: gt and where).
    shaped = [v for v in node.inputs if rw.op_of(v) == "reshape"]
    if not shaped:
        return None
    y = shaped[0]
    if y.shape != out.shape:
        return None
    z = rw.producer(y).inputs[0]
    new_inputs = []
    for v in node.inputs:
        if v is y:
            new_inputs.append(z)
            continue
        if v.type.numel == 1 and len(v.shape) <= len(z.shape):
            new_inputs.append(v)
            continue
        twin = rw.producer(v)
        if twin is not None and twin.op == "reshape" and twin.inputs[0].shape == z.shape:
            new_inputs.append(twin.inputs[0])  # reshaped the same way: combine before reshaping
            continue
        c = rw.const(v)
        if c is not None and c.size == 1:
            new_inputs.append(rw.const_input(c.reshape(()), f"{v.name}_r"))
            continue
        shape = regroup_operand(v.shape, z.shape, y.shape)
        if shape is None:
            return None
        if c is not None:
            padded = c.reshape((1,) * (len(y.shape) - c.ndim) + c.shape)
            new_inputs.append(rw.const_input(padded.reshape(shape), f"{v.name}_r"))
        elif v.type.numel <= SMALL_OPERAND and v.type.numel < y.type.numel:
            # e.g. a per-channel parameter: its own reshape merges with the one that made it
            new_inputs.append(rw.emit("reshape", [v], shape=shape))
        else:
            return None
    try:
        types = infer_types(node.op, [v.type for v in new_inputs], normalize_attrs(node.op, node.attrs))
    except Exception:
        return None
    if types != [TensorType(z.shape, out.dtype)]:
        return None
    inner = rw.emit(node.op, new_inputs, **node.attrs)
    return rw.emit("reshape", [inner], shape=out.shape)


RULES = {
    "add": [_add],
    "sub": [_sub],
    "mul": [_mul],
    "div": [_div],
    "pow": [_pow],
    "neg": [_neg],
    "abs": [_abs],
    "reciprocal": [_reciprocal],
    "maximum": [_idempotent],
    "minimum": [_idempotent],
    "where": [_where],
    "cast": [_cast],
    "reshape": [_reshape],
    "transpose": [_transpose],
    "broadcast_to": [_broadcast_to],
    "slice": [_slice],
    "pad": [_pad],
    "concat": [_concat],
}


def _drop_broadcast_operands(rw: _Rewriter, node: Node) -> bool:
    """Read ``x`` instead of ``broadcast_to(x)`` where the op's own broadcasting gives the same type."""
    if fusion_class(node) != "broadcast" or node.op == "broadcast_to":
        return False
    changed = False
    for i, v in enumerate(node.inputs):
        if rw.op_of(v) != "broadcast_to":
            continue
        trial = list(node.inputs)
        trial[i] = rw.producer(v).inputs[0]
        try:
            types = infer_types(node.op, [t.type for t in trial], node.attrs)
        except Exception:
            continue
        if types == [o.type for o in node.outputs]:
            node.inputs = trial
            changed = True
    return changed


@graph_pass("simplify")
def simplify(graph: Graph, unsafe_math: bool = False) -> Graph:
    """Apply the rules in this module's docstring until nothing changes (rewrites ``graph`` in place).

    Nodes nothing reads are dropped too (graph inputs are left to ``dce``).
    """
    for _ in range(MAX_ROUNDS):
        remove_dead_nodes(graph)  # dead readers would block the single-use rules
        rw = _Rewriter(graph, unsafe_math)
        changed = False
        for node in graph.nodes:
            node.inputs = [rw.resolve(v) for v in node.inputs]
            rw.source = node.source
            changed |= _drop_broadcast_operands(rw, node)
            replacement = None
            if len(node.outputs) == 1:
                for rule in RULES.get(node.op, ()):
                    replacement = rule(rw, node)
                    if replacement is not None:
                        break
                if replacement is None:
                    replacement = _sink_reshape(rw, node)
            if replacement is not None and replacement is not node.output:
                rw.subst[node.output] = replacement
                changed = True
            else:
                rw.out.append(node)
        graph.outputs = [rw.resolve(v) for v in graph.outputs]
        graph.set_nodes(rw.out)
        if not changed:
            break
    remove_dead_nodes(graph)
    return graph
