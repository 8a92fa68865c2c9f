"""A small pattern-rewrite engine: rules are data, applied over a graph to a fixed point.

In the spirit of tinygrad's ``UPat``/``PatternMatcher``/``graph_rewrite``: a rule is a pattern
(an op, its operand patterns, names that bind the matched values, compile-time constants,
predicates) and a function of the bound values that returns the replacement value or None.

    x, y = Pat.var("x"), Pat.var("y")
    RULES = PatternMatcher([
        (Pat.op("add", x, Pat.cst(0), commutative=True), lambda rw, node, x: rw.same(node, x)),
        (Pat.op("neg", Pat.op("neg", x)), lambda rw, node, x: x),
    ])
    graph_rewrite(graph, RULES)

``graph_rewrite`` sweeps the nodes in order; for each node it tries the rules whose root op is
the node's (and the op-agnostic ones), in the order given, and the first that returns a value
replaces the node's output everywhere. Sweeps repeat until one changes nothing. New nodes are
made with ``Rewriter.emit``, and every node is hashed structurally as it is placed: a node equal to
one already placed (same op, operands and attributes) is not made twice, and one the graph already
had twice merges into the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from graphc.ir import Graph, Node, TensorType, Value

from .cleanup import attr_key, remove_dead_nodes
from .util import const_array, new_node

MAX_ROUNDS = 20

Bindings = dict[str, Value]
RuleFn = Callable[..., "Value | None"]
Predicate = Callable[["Rewriter", Value], bool]


@dataclass(frozen=True)
class Pat:
    """A pattern over one value: what produces it, what its operands match, what it binds."""

    ops: frozenset[str] | None = None  # the producer's op; None: any value, graph inputs too
    src: tuple[Pat, ...] | None = None  # operand patterns (None: operands not looked at)
    name: str | None = None  # bind the matched value under this name
    const: float | None = None  # the value is a compile-time constant, every element equal to this
    commutative: bool = False  # two operands, tried in both orders
    where: Predicate | None = None  # an extra test of the matched value

    @staticmethod
    def var(name: str, where: Predicate | None = None) -> Pat:
        """Any value, bound to ``name``."""
        return Pat(name=name, where=where)

    @staticmethod
    def cst(value: float, name: str | None = None) -> Pat:
        """A compile-time constant whose every element equals ``value``."""
        return Pat(name=name, const=value)

    @staticmethod
    def op(
        ops: str | Sequence[str],
        *src: Pat,
        name: str | None = None,
        commutative: bool = False,
        where: Predicate | None = None,
    ) -> Pat:
        """A value made by one of ``ops`` whose operands match ``src`` (no ``src``: any operands)."""
        names = frozenset([ops] if isinstance(ops, str) else ops)
        return Pat(names, tuple(src) if src else None, name, None, commutative, where)


def _match(rw: Rewriter, pat: Pat, value: Value, bound: Bindings) -> Iterator[Bindings]:
    """Every way ``value`` matches ``pat`` given ``bound`` (each a new bindings dict)."""
    if pat.name is not None and pat.name in bound and bound[pat.name] is not value:
        return
    node = None
    if pat.ops is not None:  # the cheap structural tests first
        node = rw.prod.get(value)
        if node is None or node.op not in pat.ops or len(node.outputs) != 1:
            return
        if pat.src is not None and len(node.inputs) != len(pat.src):
            return
    if pat.const is not None and not rw.is_all(value, pat.const):
        return
    if pat.where is not None and not pat.where(rw, value):
        return
    here = dict(bound)
    if pat.name is not None:
        here[pat.name] = value
    if pat.src is None:
        yield here
        return
    assert node is not None, "operand patterns need an op"
    orders = [node.inputs]
    if pat.commutative:
        orders.append(node.inputs[::-1])
    for operands in orders:
        if _may_match(rw, pat.src, operands):
            yield from _match_all(rw, pat.src, operands, here)


def _may_match(rw: Rewriter, pats: Sequence[Pat], values: Sequence[Value]) -> bool:
    """A quick test of the operands' producer ops (most candidate rules fail here)."""
    for p, v in zip(pats, values):
        if p.ops is not None:
            node = rw.prod.get(v)
            if node is None or node.op not in p.ops:
                return False
    return True


def _match_all(
    rw: Rewriter, pats: Sequence[Pat], values: Sequence[Value], bound: Bindings
) -> Iterator[Bindings]:
    # Leading operands that a plain variable or a constant test matches in one way only are
    # bound in a loop; the generators recurse only for nested patterns.
    k = 0
    while k < len(pats):
        p, v = pats[k], values[k]
        if p.ops is not None or p.where is not None:
            break
        if p.const is not None and not rw.is_all(v, p.const):
            return
        if p.name is not None:
            seen = bound.get(p.name)
            if seen is None:
                bound = {**bound, p.name: v}
            elif seen is not v:
                return
        k += 1
    if k == len(pats):
        yield bound
        return
    for first in _match(rw, pats[k], values[k], bound):
        yield from _match_all(rw, pats[k + 1 :], values[k + 1 :], first)


class PatternMatcher:
    """An ordered list of (pattern, function) rules, indexed by the pattern's root op."""

    def __init__(self, rules: Sequence[tuple[Pat, RuleFn]]) -> None:
        self.rules = list(rules)
        self._by_op: dict[str, list[tuple[Pat, RuleFn]]] = {}

    def for_op(self, op: str) -> list[tuple[Pat, RuleFn]]:
        """The rules that may apply to a node of ``op``, in the order given."""
        found = self._by_op.get(op)
        if found is None:
            found = [(p, f) for p, f in self.rules if p.ops is None or op in p.ops]
            self._by_op[op] = found
        return found

    def rewrite(self, rw: Rewriter, node: Node) -> Value | None:
        """The first replacement a rule gives for ``node``'s output, or None."""
        if len(node.outputs) != 1:
            return None
        for pat, fn in self.for_op(node.op):
            if pat.src is not None and not (
                _may_match(rw, pat.src, node.inputs)
                or (pat.commutative and _may_match(rw, pat.src, node.inputs[::-1]))
            ):
                continue
            for bound in _match(rw, pat, node.output, {}):
                out = fn(rw, node, **{k: v for k, v in bound.items() if k != pat.name})
                if out is not None:
                    return out
        return None


def structural_key(node: Node) -> tuple | None:
    """A node's (op, operands, attributes) identity, or None for nodes never merged (fused bodies)."""
    if node.subgraph is not None or len(node.outputs) != 1:
        return None
    return (node.op, tuple(node.inputs), attr_key(node.attrs))


class Rewriter:
    """One sweep's state: producers and readers, a substitution map and the rebuilt node list.

    Rule functions read the graph through it (``const``, ``producer``, ``op_of``, ``readers``,
    ``uses``) and build through it (``emit``, ``scalar``, ``const_input``); ``options`` holds the
    pass's keyword options (e.g. ``unsafe_math``).
    """

    def __init__(self, graph: Graph, **options: object) -> None:
        self.graph = graph
        self.options = options
        self.prod: dict[Value, Node] = {v: n for n in graph.nodes for v in n.outputs}
        self.readers: dict[Value, list[Node]] = {}
        for n in graph.nodes:
            for v in n.inputs:
                self.readers.setdefault(v, []).append(n)
        self.outputs = set(graph.outputs)
        self.subst: dict[Value, Value] = {}
        self.out: list[Node] = []
        self.placed: dict[tuple, Value] = {}
        self._const: dict[Value, np.ndarray | None] = {}
        self._all: dict[tuple[Value, float], bool] = {}
        self.source: str | None = None

    def uses(self, v: Value) -> int:
        """How many operand slots and graph outputs read ``v`` (as the sweep started)."""
        return len(self.readers.get(v, ())) + (1 if v in self.outputs else 0)

    def resolve(self, v: Value) -> Value:
        """``v`` after the substitutions made so far."""
        while v in self.subst:
            v = self.subst[v]
        return v

    def const(self, v: Value) -> np.ndarray | None:
        """The compile-time array of ``v``, or None."""
        if v not in self._const:
            self._const[v] = const_array(self.graph, v, self.prod)
        return self._const[v]

    def is_all(self, v: Value, value: float) -> bool:
        """Whether ``v`` is a compile-time constant whose every element equals ``value``."""
        key = (v, value)
        hit = self._all.get(key)
        if hit is None:
            arr = self.const(v)
            hit = self._all[key] = arr is not None and arr.size > 0 and bool(np.all(arr == value))
        return hit

    def producer(self, v: Value) -> Node | None:
        """The node that makes ``v`` (None for graph inputs)."""
        return self.prod.get(v)

    def op_of(self, v: Value) -> str | None:
        """The op of ``v``'s producer, or None."""
        node = self.prod.get(v)
        return node.op if node is not None else None

    @staticmethod
    def same(node: Node, x: Value) -> Value | None:
        """``x`` when it can stand for the node's output (same type), else None."""
        return x if x.type == node.output.type else None

    def place(self, node: Node) -> Value | None:
        """Append ``node`` to the rebuilt list, or return the equal node's output placed before it."""
        key = structural_key(node)
        if key is not None:
            first = self.placed.get(key)
            if first is not None and first.type == node.output.type:
                return first
            self.placed[key] = node.output
        self.out.append(node)
        return None

    def emit(self, op: str, inputs: list[Value], **attrs: object) -> Value:
        """The output of ``op(inputs, attrs)``: a node already placed, or a new one placed now."""
        node = new_node(self.graph, op, inputs, attrs, self.source)
        first = self.place(node)
        if first is not None:
            return first
        self.prod[node.output] = node
        return node.output

    def scalar(self, value: object, dtype: str) -> Value:
        """A scalar ``const`` node."""
        return self.emit("const", [], value=value, dtype=dtype)

    def const_input(self, arr: np.ndarray, hint: str) -> Value:
        """A compile-time array as a value: a scalar ``const`` node, or a new ``const`` graph input."""
        arr = np.array(arr, order="C")
        if arr.shape == () and (arr.dtype.kind != "f" or np.isfinite(arr)):
            return self.scalar(arr.item(), TensorType.of(arr).dtype)
        return self.graph.add_input(self.graph.fresh_name(hint), TensorType.of(arr), "const", arr)


Canonicalize = Callable[[Rewriter, Node], bool]


def graph_rewrite(
    graph: Graph,
    matcher: PatternMatcher,
    canonicalize: Canonicalize | None = None,
    max_rounds: int = MAX_ROUNDS,
    **options: object,
) -> bool:
    """Apply ``matcher``'s rules to ``graph`` until a sweep changes nothing (in place).

    ``canonicalize(rw, node)`` may first rewrite a node's operands in place (returning whether it
    did). Nodes nothing reads are dropped before each sweep, since dead readers would block rules
    that ask for a single use. Returns whether anything changed.
    """
    changed_any = False
    for _ in range(max_rounds):
        remove_dead_nodes(graph)
        rw = Rewriter(graph, **options)
        changed = False
        for node in graph.nodes:
            node.inputs = [rw.resolve(v) for v in node.inputs]
            rw.source = node.source
            if canonicalize is not None:
                changed |= canonicalize(rw, node)
            replacement = matcher.rewrite(rw, node)
            if replacement is None or replacement is node.output:
                replacement = rw.place(node)  # an equal node placed before it, if any
            if replacement is not None:
                rw.subst[node.output] = replacement
                changed = True
        graph.outputs = [rw.resolve(v) for v in graph.outputs]
        graph.set_nodes(rw.out)
        changed_any |= changed
        if not changed:
            break
    remove_dead_nodes(graph)
    return changed_any
