"""Graphviz DOT text for a graph (written directly: networkx's writer needs pydot)."""

from __future__ import annotations

from .graph import Graph


def _quote(text: str) -> str:
    # Backslash escapes such as \\n are DOT's own line breaks, so only quotes are escaped.
    return '"' + text.replace('"', '\\"') + '"'


def _summary(node) -> str:
    inner = " ".join(_summary(m) for b in node.bodies for m in b.nodes)
    return f"{node.op}[{inner}]" if node.bodies else node.op


def graph_to_dot(g: Graph) -> str:
    """DOT text: inputs as ellipses, nodes as boxes (fused nodes list their body's ops)."""
    lines = [f"digraph {_quote(g.name)} {{", "  rankdir=TB;", '  node [fontname="monospace"];']
    ids: dict[str, str] = {}
    for i, v in enumerate(g.inputs):
        ids[v.name] = f"in{i}"
        label = f"%{v.name}\\n{v.type} {g.kinds[v.name]}"
        lines.append(f"  in{i} [shape=ellipse, label={_quote(label)}];")
    for i, n in enumerate(g.nodes):
        nid = f"n{i}"
        label = f"{n.op}\\n" + ", ".join(str(v.type) for v in n.outputs)
        if n.subgraph is not None:
            label += "\\n[" + " ".join(_summary(m) for m in n.subgraph.nodes) + "]"
        else:  # a control-flow node: each body's ops, nested bodies in brackets
            for body in n.bodies:
                label += f"\\n{body.name}: [" + " ".join(_summary(m) for m in body.nodes) + "]"
        style = ", style=filled, fillcolor=lightblue" if n.op == "fused" else ""
        lines.append(f"  {nid} [shape=box, label={_quote(label)}{style}];")
        for v in n.inputs:
            lines.append(f"  {ids[v.name]} -> {nid} [label={_quote('%' + v.name)}];")
        for v in n.outputs:
            ids[v.name] = nid
    for i, v in enumerate(g.outputs):
        lines.append(f"  out{i} [shape=plaintext, label={_quote('return %' + v.name)}];")
        lines.append(f"  {ids[v.name]} -> out{i};")
    lines.append("}")
    return "\n".join(lines)
