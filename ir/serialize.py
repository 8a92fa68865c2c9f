"""Graph <-> JSON-compatible dicts (plain data); initializer arrays travel separately (.npz)."""

from __future__ import annotations

from .errors import GraphcError
from .graph import Graph, Value
from .ops import normalize_attrs
from .types import TensorType

FORMAT_VERSION = 1


def _type_to_json(t: TensorType) -> dict:
    return {"shape": list(t.shape), "dtype": t.dtype}


def graph_to_json(g: Graph) -> dict:
    """A JSON-compatible description of ``g`` without initializer arrays."""
    nodes = []
    for n in g.nodes:
        entry = {
            "op": n.op,
            "inputs": [v.name for v in n.inputs],
            "outputs": [{"name": v.name, **_type_to_json(v.type)} for v in n.outputs],
            "attrs": n.attrs,
        }
        if n.source:
            entry["source"] = n.source
        if n.subgraph is not None:
            entry["body"] = graph_to_json(n.subgraph)
        nodes.append(entry)
    return {
        "version": FORMAT_VERSION,
        "name": g.name,
        "inputs": [{"name": v.name, "kind": g.kinds[v.name], **_type_to_json(v.type)} for v in g.inputs],
        "nodes": nodes,
        "outputs": [v.name for v in g.outputs],
        "updates": dict(g.updates),
    }


def graph_from_json(data: dict) -> Graph:
    """Rebuild a Graph from ``graph_to_json`` output; types are re-inferred and checked."""
    try:
        if data.get("version") != FORMAT_VERSION:
            raise GraphcError(f"graph format version {data.get('version')!r} is not supported")
        g = Graph(data["name"])
        env: dict[str, Value] = {}
        for item in data["inputs"]:
            ttype = TensorType(tuple(item["shape"]), item["dtype"])
            env[item["name"]] = g.add_input(item["name"], ttype, item["kind"])
        for item in data["nodes"]:
            ins = [env[name] for name in item["inputs"]]
            names = [o["name"] for o in item["outputs"]]
            if ("body" in item) != (item["op"] == "fused"):
                raise GraphcError(f"node {item['op']!r}: only fused nodes have a body, and they must")
            if "body" in item:
                node = g.add_fused(ins, graph_from_json(item["body"]), item["attrs"], item.get("source"))
                for v in node.outputs:  # all temporary names first: one may be another's real name
                    g._names.discard(v.name)
                for v, name in zip(node.outputs, names):
                    v.name = g._claim(name)
            else:
                attrs = normalize_attrs(item["op"], item["attrs"])
                node = g.add_node(item["op"], ins, attrs, item.get("source"), names=names)
            for v, o in zip(node.outputs, item["outputs"]):
                if v.type != TensorType(tuple(o["shape"]), o["dtype"]):
                    raise GraphcError(f"%{v.name}: stored type differs from the inferred {v.type}")
                env[v.name] = v
        for name in data["outputs"]:
            g.add_output(env[name])
        g.updates = {k: int(v) for k, v in data.get("updates", {}).items()}
        return g
    except (KeyError, TypeError, ValueError) as err:
        raise GraphcError(f"malformed graph JSON: {type(err).__name__}: {err}") from None
