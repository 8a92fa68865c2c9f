"""The structure of a traced function's result, so a plan returns what forward returned.

``describe(result)`` records tuples, lists, dicts, named tuples and ``None`` around the tensors
(the leaves, in the order ``TraceContext.finish`` makes them graph outputs); ``rebuild(spec,
arrays)`` puts a plan's output arrays back into that shape. ``StructuredPlan`` wraps a plan whose
result is more than one array or a flat tuple of arrays (a bare ``(logits, None)`` would
otherwise come back as one array, and ``logits, loss = plan(x)`` would unpack its rows).
"""

from __future__ import annotations

from typing import Any

LEAF = "leaf"


def describe(result: Any) -> Any:
    """A picklable description of ``result``'s nesting (None, tuples, lists, dicts around leaves)."""
    if result is None:
        return None
    if isinstance(result, tuple) and hasattr(result, "_fields"):
        return ("namedtuple", type(result), [describe(r) for r in result])
    if isinstance(result, (tuple, list)):
        return (type(result).__name__, [describe(r) for r in result])
    if isinstance(result, dict):
        return ("dict", list(result), [describe(v) for v in result.values()])
    return LEAF


def is_plain(spec: Any) -> bool:
    """Whether a plan's own return convention already gives this structure (one array, or a
    tuple of two or more arrays)."""
    if spec == LEAF:
        return True
    return spec is not None and spec[0] == "tuple" and len(spec[1]) > 1 and all(s == LEAF for s in spec[1])


def rebuild(spec: Any, outputs: Any) -> Any:
    """Arrange a plan's result (one array or a tuple) in the structure ``spec`` describes."""
    leaves = list(outputs) if isinstance(outputs, tuple) else [outputs]
    it = iter(leaves)

    def build(s: Any) -> Any:
        if s is None:
            return None
        if s == LEAF:
            return next(it)
        if s[0] == "namedtuple":
            return s[1](*[build(c) for c in s[2]])
        if s[0] == "dict":
            return {k: build(c) for k, c in zip(s[1], s[2])}
        items = [build(c) for c in s[1]]
        return items if s[0] == "list" else tuple(items)

    return build(spec)


class StructuredPlan:
    """A compiled plan that returns its outputs in the structure the traced function returned.

    Everything else (``save``, ``parameters``, ``memory_report``, ...) is the wrapped plan's.
    """

    def __init__(self, plan: Any, spec: Any) -> None:
        self.plan = plan
        self.output_structure = spec

    def __call__(self, *arrays: Any) -> Any:
        """Run the plan and arrange its outputs like forward's result."""
        return rebuild(self.output_structure, self.plan(*arrays))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["plan"], name)

    def __repr__(self) -> str:
        return f"StructuredPlan({self.plan!r})"


def wrap(plan: Any, spec: Any) -> Any:
    """``plan`` itself when its return convention fits ``spec``, else a StructuredPlan."""
    return plan if is_plain(spec) else StructuredPlan(plan, spec)
