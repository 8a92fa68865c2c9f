"""Control flow in static graphs: ``cond``, ``while_loop`` and ``scan`` hold traced sub-graphs.

In the spirit of JAX's ``lax.cond`` / ``lax.while_loop`` / ``lax.scan``: each function is traced
once into a body graph (``ir/control.py`` documents the node forms), whatever the trip count.
Tensors of an enclosing trace that a body reads (closures, module parameters, buffers) become
extra operands of the node ("captures"), so bodies are closed graphs.

Operands and results are pytrees: a Tensor, a tuple/list/dict of pytrees, or None.
Outside any trace (plain NumPy arrays) the functions run as the Python loops they stand for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.ir import Graph, GraphcError, TensorType, Value
from graphc.tensor import Tensor, TraceContext, _at, as_tensor, current_context, user_source

__all__ = ["BodyContext", "cond", "cond_partial", "scan", "while_loop"]


# ---------------------------------------------------------------------------- pytrees
def _flatten(tree: Any) -> tuple[list[Any], Any]:
    """Leaves (anything that is not a tuple/list/dict/None) and a structure to rebuild from."""
    if tree is None:
        return [], None
    if isinstance(tree, (tuple, list)):
        leaves, subs = [], []
        for item in tree:
            sub_leaves, sub = _flatten(item)
            leaves += sub_leaves
            subs.append((len(sub_leaves), sub))
        return leaves, (type(tree), subs)
    if isinstance(tree, dict):
        keys = list(tree)
        leaves, sub = _flatten([tree[k] for k in keys])
        return leaves, (dict, keys, sub)
    return [tree], "leaf"


def _unflatten(structure: Any, leaves: list[Any]) -> Any:
    if structure is None:
        return None
    if structure == "leaf":
        return leaves[0]
    if structure[0] is dict:
        _, keys, sub = structure
        return dict(zip(keys, _unflatten(sub, leaves)))
    kind, subs = structure
    out, pos = [], 0
    for count, sub in subs:
        out.append(_unflatten(sub, leaves[pos : pos + count]))
        pos += count
    return kind(out) if kind in (tuple, list) else tuple(out)


# ---------------------------------------------------------------------------- body tracing
class BodyContext(TraceContext):
    """Records one control-flow body; Tensors of enclosing traces are lifted into body inputs."""

    def __init__(self, parent: TraceContext, graph: Graph) -> None:
        super().__init__(graph)
        self.parent = parent
        self.readonly = set()
        self.array_names = parent.array_names  # parameters keep their qualified names
        self.captured: list[Tensor] = []  # the parent's Tensors, in the order of the extra inputs
        self._lifted: dict[Value, Value] = {}  # parent value -> body input

    def lifts_from(self, ctx: TraceContext) -> bool:
        """This body, or any trace enclosing it."""
        return ctx is self or self.parent.lifts_from(ctx)

    def lift(self, t: Tensor) -> Tensor:
        """``t`` as a Tensor of this body (an extra body input when it comes from outside)."""
        if t.ctx is self:
            return t
        if not self.lifts_from(t.ctx):
            raise GraphcError(f"{_at(user_source())}a control-flow body uses a Tensor of another trace")
        if t.ctx is not self.parent:
            t = self.parent.lift(t)  # type: ignore[attr-defined]
        inner = self._lifted.get(t.value)
        if inner is None:
            inner = self.graph.add_input(self.graph.fresh_name(t.value.name), t.value.type, "data")
            self._lifted[t.value] = inner
            self.captured.append(t)
        return Tensor(inner, self)

    def multi_op(self, op: str, *inputs: Tensor, source: str | None = None, **attrs: object) -> list[Tensor]:
        """Append a node to the body, lifting operands that come from enclosing traces."""
        lifted = [self.lift(t) if isinstance(t, Tensor) and t.ctx is not self else t for t in inputs]
        return super().multi_op(op, *lifted, source=source, **attrs)

    def array(self, array: np.ndarray, name: str | None = None, kind: str = "const") -> Tensor:
        """Parameters, buffers and constants become inputs of the outermost trace, then lifted."""
        return self.lift(self.parent.array(array, name, kind))

    def rng_offset(self) -> Tensor:
        """The enclosing trace's ``rng.offset`` (every iteration of a body draws the same numbers)."""
        return self.lift(self.parent.rng_offset())

    def assign(self, target: Tensor, new: Tensor) -> None:
        """Not supported: a body may not write parameters or buffers."""
        raise GraphcError(
            f"{_at(user_source())}assigning to a parameter or buffer inside a cond/while_loop/scan body is "
            "not supported; return the new value from the body instead"
        )


def _trace_body(
    parent: TraceContext, name: str, fn: Callable, args_tree: Any, types: list[TensorType]
) -> tuple[BodyContext, list[Tensor], Any]:
    """Trace ``fn`` on fresh inputs of ``types`` (rebuilt into ``args_tree``'s structure)."""
    g = Graph(name)
    ctx = BodyContext(parent, g)
    with ctx:
        leaves = [Tensor(g.add_input(f"{name}_in{i}", t, "data"), ctx) for i, t in enumerate(types)]
        result = fn(*_unflatten(args_tree, leaves))
        flat, structure = _flatten(result)
        outs = []
        for item in flat:
            t = as_tensor(item, ctx=ctx) if not isinstance(item, Tensor) else item
            outs.append(ctx.lift(t))
    for t in outs:
        g.add_output(t.value)
    return ctx, outs, structure


def _align(ctxs: list[BodyContext], n_explicit: int) -> list[Tensor]:
    """Give every body the union of all bodies' captures as inputs (in one order); return them."""
    union: list[Tensor] = []
    seen: set[Value] = set()
    for ctx in ctxs:
        for t in ctx.captured:
            if t.value not in seen:
                seen.add(t.value)
                union.append(t)
    for ctx in ctxs:
        g = ctx.graph
        explicit = g.inputs[:n_explicit]
        mapping = dict(ctx._lifted)
        for t in union:
            if t.value not in mapping:
                mapping[t.value] = g.add_input(g.fresh_name(t.value.name), t.value.type, "data")
        g.inputs = explicit + [mapping[t.value] for t in union]
        g.invalidate_uses()
    return union


def _tensors(leaves: list[Any], ctx: TraceContext) -> list[Tensor]:
    out = []
    for x in leaves:
        if isinstance(x, Tensor):
            out.append(x)
        else:
            out.append(as_tensor(np.asarray(x) if isinstance(x, (list, tuple)) else x, ctx=ctx))
    return out


def _active(*trees: Any) -> TraceContext | None:
    ctx = current_context()
    if ctx is not None:
        return ctx
    for tree in trees:
        for leaf in _flatten(tree)[0]:
            if isinstance(leaf, Tensor):
                return leaf.ctx
    return None


def _check_same(what: str, expected: list[TensorType], got: list[TensorType], source: str | None) -> None:
    if len(expected) != len(got):
        raise GraphcError(f"{_at(source)}{what}: {len(got)} values where {len(expected)} are expected")
    for i, (e, g) in enumerate(zip(expected, got)):
        if e != g:
            raise GraphcError(
                f"{_at(source)}{what}: value {i} is {g}, expected {e} (shapes and dtypes must match)"
            )


def _emit(
    ctx: TraceContext, op: str, operands: list[Tensor], bodies: list[Graph], attrs: dict, source: str | None
) -> list[Tensor]:
    if isinstance(ctx, BodyContext):
        operands = [ctx.lift(t) for t in operands]
    try:
        node = ctx.graph.add_control(op, [t.value for t in operands], bodies, attrs, source)
    except GraphcError as err:
        raise GraphcError(f"{_at(source)}{err}") from None
    return [Tensor(v, ctx) for v in node.outputs]


# ---------------------------------------------------------------------------- cond
def _predicate(pred: Tensor, ctx: TraceContext, source: str | None) -> Tensor:
    if int(np.prod(pred.shape)) != 1:
        raise GraphcError(f"{_at(source)}cond: the predicate must be a scalar, got shape {tuple(pred.shape)}")
    if pred.value.dtype != "bool":
        pred = pred != 0
    if tuple(pred.shape) != ():
        pred = ctx.op("reshape", pred, shape=())
    return pred


def cond(pred: Any, true_fn: Callable, false_fn: Callable, *operands: Any) -> Any:
    """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)``, as one ``cond`` node.

    ``pred`` is a scalar Tensor (nonzero = true) or a Python bool (then only that branch is
    traced). Both branches must return the same structure of the same types.
    """
    source = user_source()
    if not isinstance(pred, Tensor):
        if isinstance(pred, np.ndarray) and pred.size != 1:
            raise GraphcError(f"{_at(source)}cond: the predicate must be a scalar, got shape {pred.shape}")
        return true_fn(*operands) if bool(np.asarray(pred)) else false_fn(*operands)
    ctx = _active(pred, operands)
    if getattr(ctx, "eager", False):  # eager mode: values are known, so the branch itself
        return true_fn(*operands) if bool(pred) else false_fn(*operands)
    pred = _predicate(pred, ctx, source)
    leaves, tree = _flatten(list(operands))
    ops = _tensors(leaves, ctx)
    types = [t.value.type for t in ops]
    ctx_t, outs_t, struct_t = _trace_body(ctx, "true_branch", true_fn, tree, types)
    ctx_f, outs_f, struct_f = _trace_body(ctx, "false_branch", false_fn, tree, types)
    if struct_t != struct_f:
        raise GraphcError(f"{_at(source)}cond: the branches return different structures")
    _check_same(
        "cond: false_fn's results differ from true_fn's",
        [t.value.type for t in outs_t],
        [t.value.type for t in outs_f],
        source,
    )
    captured = _align([ctx_t, ctx_f], len(ops))
    outs = _emit(ctx, "cond", [pred, *ops, *captured], [ctx_t.graph, ctx_f.graph], {}, source)
    return _unflatten(struct_t, outs)


def cond_partial(
    pred: Tensor, true_fn: Callable, false_fn: Callable, operands: list[Any], names: tuple[str, ...]
) -> list[Tensor | None]:
    """A cond whose branches return one entry per name, None where a branch leaves it undefined;
    the result holds each name both branches define (None for the others). For graphc.autograph."""
    source = user_source()
    ctx = _active(pred, operands)
    pred = _predicate(pred, ctx, source)
    ops = _tensors(list(operands), ctx)
    tree = _flatten(list(ops))[1]
    types = [t.value.type for t in ops]
    traced = [
        _trace_body(ctx, name, fn, tree, types)
        for name, fn in (("true_branch", true_fn), ("false_branch", false_fn))
    ]
    masks = [[count == 1 for count, _ in struct[1]] for _, _, struct in traced]
    keep = [a and b for a, b in zip(*masks)]
    picked = []
    for (body_ctx, outs, _), mask in zip(traced, masks):
        flags = [k for m, k in zip(mask, keep) if m]
        chosen = [t for t, k in zip(outs, flags) if k]
        body_ctx.graph.outputs = [t.value for t in chosen]
        picked.append(chosen)
    kept_names = [n for n, k in zip(names, keep) if k]
    for name, a, b in zip(kept_names, *picked):
        if a.value.type != b.value.type:
            raise GraphcError(
                f"{_at(source)}variable {name!r} is {a.value.type} in one branch, {b.value.type} in the other"
            )
    captured = _align([traced[0][0], traced[1][0]], len(ops))
    outs = iter(
        _emit(ctx, "cond", [pred, *ops, *captured], [traced[0][0].graph, traced[1][0].graph], {}, source)
    )
    return [next(outs) if k else None for k in keep]


# ---------------------------------------------------------------------------- while_loop
def while_loop(cond_fn: Callable, body_fn: Callable, init: Any) -> Any:
    """Run ``carry = body_fn(carry)`` while ``cond_fn(carry)``; return the last carry.

    ``cond_fn`` returns a scalar (bool or number); ``body_fn`` returns a carry of the same
    structure and types as ``init``. Reverse-mode gradients are supported (``passes.autodiff``).
    """
    source = user_source()
    ctx = _active(init)
    if ctx is None or getattr(ctx, "eager", False):  # plain Python values or eager mode: the loop itself
        carry = init
        while bool(np.asarray(cond_fn(carry))):
            carry = body_fn(carry)
        return carry
    leaves, tree = _flatten(init)
    carry = _tensors(leaves, ctx)
    types = [t.value.type for t in carry]

    def predicate(*args: Any) -> Tensor:
        p = cond_fn(*args)
        if not isinstance(p, Tensor):
            p = as_tensor(bool(p), ctx=current_context())
        if int(np.prod(p.shape)) != 1:
            raise GraphcError(
                f"{_at(source)}while_loop: cond_fn must return a scalar, got shape {tuple(p.shape)}"
            )
        p = p.ctx.op("reshape", p, shape=()) if tuple(p.shape) != () else p
        return p if p.value.dtype == "bool" else p != 0

    ctx_c, _, _ = _trace_body(ctx, "cond", lambda c: predicate(c), (tuple, [(len(leaves), tree)]), types)
    ctx_b, outs, struct = _trace_body(ctx, "body", body_fn, (tuple, [(len(leaves), tree)]), types)
    if struct != tree:
        raise GraphcError(f"{_at(source)}while_loop: body_fn returns a different structure than init")
    _check_same("while_loop: body_fn's carry differs from init", types, [t.value.type for t in outs], source)
    captured = _align([ctx_c, ctx_b], len(carry))
    attrs = {"n_carry": len(carry)}
    results = _emit(ctx, "while_loop", [*carry, *captured], [ctx_c.graph, ctx_b.graph], attrs, source)
    return _unflatten(tree, results)


# ---------------------------------------------------------------------------- scan
def scan(fn: Callable, init: Any, xs: Any = None, length: int | None = None, reverse: bool = False) -> Any:
    """``fn(carry, x) -> (carry, y)`` over the leading axis of ``xs``; returns ``(carry, ys)``.

    ``ys`` stacks each step's ``y`` along a new leading axis (in step order, also when
    ``reverse`` runs the steps from the last slice to the first). ``length`` is needed only when
    ``xs`` is None. The body is traced and compiled once, whatever the length.
    """
    source = user_source()
    ctx = _active(init, xs)
    x_leaves, x_tree = _flatten(xs)
    if length is None:
        if not x_leaves:
            raise GraphcError(f"{_at(source)}scan: give xs or length")
        length = int(np.shape(x_leaves[0])[0]) if np.ndim(x_leaves[0]) else -1
    lengths = {int(x.shape[0]) if len(x.shape) else -1 for x in x_leaves}
    if lengths - {length}:
        raise GraphcError(f"{_at(source)}scan: every xs needs leading axis {length}, got {sorted(lengths)}")
    if ctx is None or getattr(ctx, "eager", False):
        return _scan_python(fn, init, x_leaves, x_tree, length, reverse)
    c_leaves, c_tree = _flatten(init)
    carry = _tensors(c_leaves, ctx)
    xs_t = _tensors(x_leaves, ctx)
    c_types = [t.value.type for t in carry]
    x_types = [TensorType(tuple(t.shape[1:]), t.value.dtype) for t in xs_t]
    args_tree = (tuple, [(len(c_leaves), c_tree), (len(x_leaves), x_tree)])
    body_ctx, outs, struct = _trace_body(ctx, "body", fn, args_tree, c_types + x_types)
    if not (isinstance(struct, tuple) and struct[0] in (tuple, list) and len(struct[1]) == 2):
        raise GraphcError(f"{_at(source)}scan: fn must return a pair (carry, y)")
    (n_c, s_c), (_, s_y) = struct[1]
    if s_c != c_tree:
        raise GraphcError(f"{_at(source)}scan: fn returns a carry of another structure than init")
    _check_same("scan: fn's carry differs from init", c_types, [t.value.type for t in outs[:n_c]], source)
    captured = _align([body_ctx], len(carry) + len(xs_t))
    attrs = {"n_carry": len(carry), "n_xs": len(xs_t), "length": length, "reverse": bool(reverse)}
    results = _emit(ctx, "scan", [*carry, *xs_t, *captured], [body_ctx.graph], attrs, source)
    return _unflatten(c_tree, results[:n_c]), _unflatten(s_y, results[n_c:])


def _stack(items: list) -> Any:
    if any(isinstance(x, Tensor) for x in items):
        from graphc.functional import stack

        return stack(items)
    return np.stack(items)


def _scan_python(fn: Callable, init: Any, x_leaves: list, x_tree: Any, length: int, reverse: bool) -> Any:
    carry, ys = init, []
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for i in steps:
        carry, y = fn(carry, _unflatten(x_tree, [x[i] for x in x_leaves]))
        ys.append(y)
    if reverse:
        ys.reverse()
    y_leaves = [_flatten(y)[0] for y in ys]
    structure = _flatten(ys[0])[1] if ys else None
    stacked = [_stack([leaves[j] for leaves in y_leaves]) for j in range(len(y_leaves[0]))] if ys else []
    return carry, _unflatten(structure, stacked)
