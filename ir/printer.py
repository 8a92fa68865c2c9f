"""The text form of a graph, in the spirit of jaxpr / MLIR; ``ir.parser`` reads it back."""

from __future__ import annotations

import numpy as np

from .graph import Graph, Node

KIND_SUFFIX = {"data": "", "param": " param", "const": " const", "state": " state"}
# const inputs with at most this many elements print their values, so text round-trips them.
INLINE_CONST_LIMIT = 16


def format_attr(value: object) -> str:
    """A Python literal that ``ast.literal_eval`` reads back to the same attribute."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        inner = ", ".join(format_attr(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def format_attrs(attrs: dict) -> str:
    """Attributes as ``{key=value, ...}``, or nothing when there are none."""
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in attrs.items()) + "}"


def _format_input(g: Graph, v) -> str:
    text = f"%{v.name}: {v.type}{KIND_SUFFIX[g.kinds[v.name]]}"
    arr = g.initializers.get(v.name)
    if g.kinds[v.name] == "const" and arr is not None and arr.size <= INLINE_CONST_LIMIT:
        text += " = " + repr(np.asarray(arr).tolist())
    return text


def _format_node(node: Node, indent: str, with_source: bool) -> list[str]:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    ins = ", ".join(f"%{v.name}" for v in node.inputs)
    types = ", ".join(str(v.type) for v in node.outputs)
    line = f"{indent}{outs} = {node.op}({ins}){format_attrs(node.attrs)} : {types}"
    if node.subgraph is not None:
        body = print_graph(node.subgraph, indent + "  ", with_source=with_source)
        line += " " + body.lstrip()
        lines = line.split("\n")
    elif node.bodies:  # a control-flow node: its bodies follow, one graph each
        lines = [line + f" bodies {len(node.bodies)}"]
        for body in node.bodies:
            lines.extend(print_graph(body, indent + "  ", with_source=with_source).split("\n"))
    else:
        lines = [line]
    if with_source and node.source:
        lines[0] += f"  # {node.source}"
    return lines


def print_graph(g: Graph, indent: str = "", with_source: bool = True) -> str:
    """The text form of ``g`` (sources as trailing comments unless ``with_source`` is false)."""
    ins = ", ".join(_format_input(g, v) for v in g.inputs)
    lines = [f"{indent}graph {g.name}({ins}) {{"]
    for node in g.nodes:
        lines.extend(_format_node(node, indent + "  ", with_source))
    by_index = {i: name for name, i in g.updates.items()}
    rets = []
    for i, v in enumerate(g.outputs):
        rets.append(f"%{v.name}" + (f" -> %{by_index[i]}" if i in by_index else ""))
    lines.append(f"{indent}  return {', '.join(rets)}")
    lines.append(f"{indent}}}")
    return "\n".join(lines)
