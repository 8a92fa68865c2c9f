"""Graph <-> JSON-compatible dicts (plain data); initializer arrays travel separately (.npz)."""

from __future__ import annotations

from .control import CONTROL_OPS
from .errors import GraphcError
from .graph import INPUT_KINDS, Graph, Value
from .ops import SHAPE, AttrError, get_op, infer_types, normalize_attrs
from .types import TensorType, dtype_names

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
        elif n.bodies:
            entry["bodies"] = [graph_to_json(b) for b in n.bodies]
        nodes.append(entry)
    return {
        "version": FORMAT_VERSION,
        "name": g.name,
        "inputs": [{"name": v.name, "kind": g.kinds[v.name], **_type_to_json(v.type)} for v in g.inputs],
        "nodes": nodes,
        "outputs": [v.name for v in g.outputs],
        "updates": dict(g.updates),
    }


# Limits on what a graph read from JSON may hold (names are data: they never reach kernel source).
MAX_NAME = 1000  # characters of a value, graph or source name
MAX_BODY_DEPTH = 8  # fused or control-flow bodies inside bodies


def _where(path: str) -> str:
    return f"graph JSON {path}"


def _get(obj: object, key: str, kind: type | tuple[type, ...], path: str, default: object = ...) -> object:
    """``obj[key]``, checked to be an instance of ``kind``; GraphcError naming the field if not."""
    if not isinstance(obj, dict):
        raise GraphcError(f"{_where(path)} must be an object, got {type(obj).__name__}")
    if key not in obj:
        if default is not ...:
            return default
        raise GraphcError(f"{_where(path)} lacks the field {key!r}")
    value = obj[key]
    bad_bool = isinstance(value, bool) and (kind is int or (isinstance(kind, tuple) and bool not in kind))
    if not isinstance(value, kind) or bad_bool:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise GraphcError(f"{_where(path)}.{key} must be of type {names}, got {type(value).__name__}")
    return value


def _text(value: object, path: str) -> str:
    """A name: a non-empty string of at most MAX_NAME printable characters."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise GraphcError(f"{_where(path)} must be a non-empty string of at most {MAX_NAME} characters")
    if any(not c.isprintable() for c in value):
        raise GraphcError(f"{_where(path)} holds a control character: {value[:40]!r}")
    return value


def _type(item: object, path: str) -> TensorType:
    shape = _get(item, "shape", list, path)
    dtype = _get(item, "dtype", str, path)
    try:
        shape = SHAPE.check(tuple(shape))
    except AttrError as err:
        raise GraphcError(f"{_where(path)}.shape {err}") from None
    if dtype not in dtype_names():  # bf16 before ml_dtypes is loaded too
        raise GraphcError(f"{_where(path)}.dtype must be one of {sorted(dtype_names())}, got {dtype[:40]!r}")
    return TensorType(shape, dtype)


def graph_from_json(data: dict) -> Graph:
    """Rebuild a Graph from ``graph_to_json`` output; every field's type is checked (a
    GraphcError names the first bad field), attributes meet their ops' specs, and types are
    re-inferred and compared with the stored ones."""
    try:
        return _graph_from_json(data, "graph", 0)
    except (RecursionError, MemoryError, OverflowError) as err:
        raise GraphcError(f"malformed graph JSON: {type(err).__name__}") from None


def _graph_from_json(data: object, path: str, depth: int) -> Graph:
    if depth > MAX_BODY_DEPTH:
        raise GraphcError(f"{_where(path)}: bodies nest more than {MAX_BODY_DEPTH} deep")
    version = _get(data, "version", int, path, None)
    if version != FORMAT_VERSION:
        raise GraphcError(f"graph format version {version!r} is not supported")
    g = Graph(_text(_get(data, "name", str, path), f"{path}.name"))
    env: dict[str, Value] = {}
    for i, item in enumerate(_get(data, "inputs", list, path)):
        where = f"{path}.inputs[{i}]"
        name = _text(_get(item, "name", str, where), f"{where}.name")
        kind = _get(item, "kind", str, where)
        if kind not in INPUT_KINDS:
            raise GraphcError(f"{_where(where)}.kind must be one of {list(INPUT_KINDS)}, got {kind[:40]!r}")
        if name in env:
            raise GraphcError(f"{_where(where)}: value name %{name} is defined twice")
        env[name] = g.add_input(name, _type(item, where), kind)
    for i, item in enumerate(_get(data, "nodes", list, path)):
        _node_from_json(g, env, item, f"{path}.nodes[{i}]", depth)
    for i, name in enumerate(_get(data, "outputs", list, path)):
        g.add_output(_lookup(env, name, f"{path}.outputs[{i}]"))
    updates = _get(data, "updates", dict, path, {})
    for name, index in updates.items():
        where = f"{path}.updates[{str(name)[:40]!r}]"
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(g.outputs):
            raise GraphcError(f"{_where(where)} must be an output index below {len(g.outputs)}")
        if name not in env or g.kinds.get(name) not in ("param", "state"):
            raise GraphcError(f"{_where(where)} must name a param/state input")
    g.updates = dict(updates)
    return g


def _lookup(env: dict[str, Value], name: object, path: str) -> Value:
    if not isinstance(name, str) or name not in env:
        shown = name[:40] if isinstance(name, str) else name
        raise GraphcError(f"{_where(path)}: unknown value {shown!r}")
    return env[name]


def _node_from_json(g: Graph, env: dict[str, Value], item: object, path: str, depth: int) -> None:
    op = _get(item, "op", str, path)
    if ("body" in item) != (op == "fused"):
        raise GraphcError(f"{_where(path)}: node {op[:40]!r}: only fused nodes have a body, and they must")
    get_op(op)
    if ("bodies" in item) != (op in CONTROL_OPS):
        raise GraphcError(
            f"{_where(path)}: node {op[:40]!r}: only control-flow nodes have bodies, and they must"
        )
    ins = [
        _lookup(env, name, f"{path}.inputs[{j}]") for j, name in enumerate(_get(item, "inputs", list, path))
    ]
    outs = _get(item, "outputs", list, path)
    names = [
        _text(_get(o, "name", str, f"{path}.outputs[{j}]"), f"{path}.outputs[{j}].name")
        for j, o in enumerate(outs)
    ]
    types = [_type(o, f"{path}.outputs[{j}]") for j, o in enumerate(outs)]
    attrs = _get(item, "attrs", dict, path)
    source = _get(item, "source", str, path, None)
    if source is not None:
        _text(source, f"{path}.source")
    if len(set(names)) != len(names) or any(n in env for n in names):
        raise GraphcError(f"{_where(path)}: an output name is defined twice")
    if op == "fused":
        body = _graph_from_json(_get(item, "body", dict, path), f"{path}.body", depth + 1)
    bodies = []
    if op in CONTROL_OPS:
        stored = _get(item, "bodies", list, path)
        if len(stored) > 2:
            raise GraphcError(f"{_where(path)}.bodies: at most 2 bodies, got {len(stored)}")
        bodies = [_graph_from_json(b, f"{path}.bodies[{j}]", depth + 1) for j, b in enumerate(stored)]
        if len(set(names)) != len(names):
            raise GraphcError(f"{_where(path)}: an output name is defined twice")
    try:
        if op == "fused":
            node = g.add_fused(ins, body, normalize_attrs("fused", attrs), source)
            if len(node.outputs) != len(names):
                raise GraphcError(f"{len(names)} outputs stored, the body gives {len(node.outputs)}")
            for v in node.outputs:  # all temporary names first: one may be another's real name
                g._names.discard(v.name)
            for v, name in zip(node.outputs, names):
                v.name = g._claim(name)
        elif op in CONTROL_OPS:
            attrs = normalize_attrs(op, attrs)
            node = g.add_control(op, ins, bodies, attrs, source, names=names if names else None)
            if len(node.outputs) != len(names):
                raise GraphcError(f"{len(names)} outputs stored, the bodies give {len(node.outputs)}")
        else:
            attrs = normalize_attrs(op, attrs)
            if len(infer_types(op, [v.type for v in ins], attrs)) != len(names) or not names:
                raise GraphcError(f"{len(names)} outputs stored, the op gives another number")
            node = g.add_node(op, ins, attrs, source, names=names)
    except GraphcError as err:
        raise GraphcError(f"{_where(path)}: {err}") from None
    for v, t in zip(node.outputs, types):
        if v.type != t:
            raise GraphcError(
                f"{_where(path)}: %{v.name}: stored type {t} differs from the inferred {v.type}"
            )
        env[v.name] = v
