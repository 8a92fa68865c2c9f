"""graphc.ir: the typed graph every stage works on, the primitive op registry, text forms."""

from .dot import graph_to_dot
from .errors import GraphcError
from .graph import INPUT_KINDS, Graph, Node, Value
from .memory import Buffer, MemoryPlan
from .ops import REGISTRY, OpDef, broadcast_shapes, get_op, infer_types
from .parser import parse_graph, parse_type
from .printer import print_graph
from .serialize import graph_from_json, graph_to_json
from .types import DTYPES, TensorType, from_numpy_dtype, to_numpy_dtype
from .verifier import verify

__all__ = [
    "DTYPES",
    "INPUT_KINDS",
    "REGISTRY",
    "Buffer",
    "Graph",
    "MemoryPlan",
    "GraphcError",
    "Node",
    "OpDef",
    "TensorType",
    "Value",
    "broadcast_shapes",
    "from_numpy_dtype",
    "get_op",
    "graph_from_json",
    "graph_to_dot",
    "graph_to_json",
    "infer_types",
    "parse_graph",
    "parse_type",
    "print_graph",
    "to_numpy_dtype",
    "verify",
]
