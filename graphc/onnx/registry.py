"""The converter table: (ONNX op type, opset range) -> a function that builds graphc ops.

A converter takes a ``NodeContext`` (graphc.onnx.context) and returns one value per ONNX
output: a graphc Tensor, or a NumPy array when the value is known while converting (shapes and
shape arithmetic are folded this way for static shapes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from graphc.ir import GraphcError

# The newest default-domain opset whose semantics the converters follow.
MAX_OPSET = 28
Converter = Callable[..., list]
CONVERTERS: dict[str, list[tuple[int, int, Converter]]] = {}


def converter(*op_types: str, since: int = 1, until: int = MAX_OPSET) -> Callable[[Converter], Converter]:
    """Register the decorated function for ``op_types`` at opsets ``since``..``until``."""

    def register(fn: Converter) -> Converter:
        for op in op_types:
            CONVERTERS.setdefault(op, []).append((since, until, fn))
        return fn

    return register


def lookup(domain: str, op_type: str, opset: int) -> Converter | None:
    """The converter of ``op_type`` at ``opset`` (default domain only), or None."""
    if domain not in ("", "ai.onnx"):
        return None
    for lo, hi, fn in CONVERTERS.get(op_type, ()):
        if lo <= opset <= hi:
            return fn
    return None


def supported_ops() -> list[str]:
    """Every op type the table converts at some opset, sorted."""
    return sorted(CONVERTERS)


MAX_DEPTH = 16  # nesting of If/Loop/Scan bodies a model may have


def walk_nodes(graph, depth: int = 0):
    """Every node of ``graph`` and, depth first, of the bodies (GRAPH attributes) its nodes hold."""
    if depth > MAX_DEPTH:
        raise GraphcError(f"ONNX model: bodies nested more than {MAX_DEPTH} deep")
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == 5:  # AttributeProto.GRAPH
                yield from walk_nodes(a.g, depth + 1)
            elif a.type == 10:  # GRAPHS
                for g in a.graphs:
                    yield from walk_nodes(g, depth + 1)


def prescan(graph, opset: int, where: str) -> None:
    """Raise ONE GraphcError listing every unsupported op (count and node names), if any.

    Nodes inside If/Loop/Scan bodies count too.
    """
    counts: Counter = Counter()
    names: dict[tuple[str, str], list[str]] = {}
    for i, node in enumerate(walk_nodes(graph)):
        if lookup(node.domain, node.op_type, opset) is None:
            key = (node.domain, node.op_type)
            counts[key] += 1
            names.setdefault(key, []).append(node.name or f"#{i}")
    if not counts:
        return
    parts = []
    for (domain, op), n in sorted(counts.items()):
        shown = [s[:60] for s in names[(domain, op)][:5]]
        more = f" and {n - len(shown)} more" if n > len(shown) else ""
        label = (f"{domain}::{op}" if domain not in ("", "ai.onnx") else op)[:80]
        parts.append(f"{label} x{n} (node{'s' if n > 1 else ''} {', '.join(map(repr, shown))}{more})")
    raise GraphcError(
        f"{where}: {sum(counts.values())} node(s) use ops graphc cannot import at opset {opset}: "
        + "; ".join(parts)
    )


# Inputs graphc must know while compiling (shapes, axes, sizes, K, bounds): a backend that is
# given them as graph inputs compiles its plan for their values (graphc.onnx.backend).
STATIC_SLOTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "Unsqueeze": (1,),
    "Squeeze": (1,),
    "Split": (1,),
    "Pad": (1, 2, 3),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "TopK": (1,),
    "Range": (0, 1, 2),
    "ConstantOfShape": (0,),
    "Trilu": (1,),
    "Dropout": (1, 2),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceSumSquare": (1,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,),
    "OneHot": (1,),
    "CumSum": (1,),
    "CumProd": (1,),
    "Loop": (0, 1),  # a constant trip count and start condition make the loop a scan
}
