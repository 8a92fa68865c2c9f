"""Reads the text form written by ``ir.printer`` back into a Graph (round trip is tested)."""

from __future__ import annotations

import ast
import re

import numpy as np

from .errors import GraphcError
from .graph import Graph, Value
from .ops import normalize_attrs
from .types import TensorType, to_numpy_dtype

_NAME = r"%([A-Za-z0-9_.:\-]+)"
_TYPE = r"([a-z0-9]+)\[([0-9, ]*)\]"
_KINDS = {"": "data", "param": "param", "const": "const", "state": "state"}


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = [ln for ln in text.splitlines() if ln.strip()]
        self.pos = 0

    def next(self) -> tuple[int, str]:
        if self.pos >= len(self.lines):
            raise GraphcError("graph text ends before its closing '}'")
        self.pos += 1
        return self.pos, self.lines[self.pos - 1]


_NAMED_FLOATS = {"inf": float("inf"), "nan": float("nan")}


def _literal(node: ast.AST):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in _NAMED_FLOATS:
        return _NAMED_FLOATS[node.id]
    raise ValueError(f"not a literal: {ast.dump(node)}")


def parse_literal(text: str):
    """A Python literal as the printer writes it, where ``inf`` and ``nan`` (repr of floats) are allowed."""
    return _literal(ast.parse(text, mode="eval").body)


def parse_type(text: str) -> TensorType:
    """Parse ``f32[2,3]``."""
    m = re.fullmatch(_TYPE, text.strip())
    if not m:
        raise GraphcError(f"bad type {text!r}; expected e.g. f32[2,3]")
    dims = [d for d in m.group(2).replace(" ", "").split(",") if d]
    return TensorType(tuple(int(d) for d in dims), m.group(1))


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets, braces, parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return [p.strip() for p in parts]


def _strip_comment(line: str) -> tuple[str, str | None]:
    # A source comment is '  # file:line' at the end; '#' never occurs elsewhere in the form.
    if "#" in line:
        code, comment = line.split("#", 1)
        return code.rstrip(), comment.strip() or None
    return line.rstrip(), None


def _parse_graph(lines: _Lines, header: str) -> Graph:
    m = re.fullmatch(r"\s*graph\s+([A-Za-z0-9_.\-]+)\((.*)\)\s*\{\s*", header)
    if not m:
        raise GraphcError(f"line {lines.pos}: expected 'graph NAME(...) {{', got {header!r}")
    g = Graph(m.group(1))
    env: dict[str, Value] = {}
    for part in _split_top(m.group(2)):
        im = re.fullmatch(_NAME + r"\s*:\s*" + _TYPE + r"\s*(param|const|state)?\s*(=\s*(.*))?", part)
        if not im:
            raise GraphcError(f"line {lines.pos}: bad graph input {part!r}")
        name, kind = im.group(1), _KINDS[im.group(4) or ""]
        ttype = parse_type(f"{im.group(2)}[{im.group(3)}]")
        value = None
        if im.group(6) is not None:
            value = np.array(parse_literal(im.group(6)), dtype=to_numpy_dtype(ttype.dtype))
            value = value.reshape(ttype.shape)
        env[name] = g.add_input(name, ttype, kind, value)
    while True:
        lineno, raw = lines.next()
        code, source = _strip_comment(raw)
        stripped = code.strip()
        if stripped.startswith("return"):
            _parse_return(g, env, stripped[len("return") :], lineno)
            _, closing = lines.next()
            if closing.strip() != "}":
                raise GraphcError(f"line {lines.pos}: expected '}}' after return")
            return g
        _parse_node(g, env, lines, stripped, source, lineno)


def _lookup(env: dict[str, Value], name: str, lineno: int) -> Value:
    try:
        return env[name]
    except KeyError:
        raise GraphcError(f"line {lineno}: %{name} is used before it is defined") from None


def _parse_return(g: Graph, env, text: str, lineno: int) -> None:
    for part in _split_top(text):
        rm = re.fullmatch(_NAME + r"(\s*->\s*" + _NAME + r")?", part)
        if not rm:
            raise GraphcError(f"line {lineno}: bad return entry {part!r}")
        g.add_output(_lookup(env, rm.group(1), lineno), updates=rm.group(3))


def _parse_node(g: Graph, env, lines: _Lines, code: str, source, lineno: int) -> None:
    body_header = None
    n_bodies = 0
    bm = re.fullmatch(r"(.*\S)\s+bodies\s+([0-9]+)", code)
    if bm:  # a control-flow node: its bodies follow, one 'graph NAME(...) {' ... '}' each
        code, n_bodies = bm.group(1), int(bm.group(2))
        if not 0 < n_bodies <= 2:
            raise GraphcError(f"line {lineno}: a control-flow node holds one or two bodies, not {n_bodies}")
    elif code.endswith("{"):  # a fused node: its body's 'graph NAME(...) {' ends the line
        cut = code.index(" graph ")
        code, body_header = code[:cut].rstrip(), code[cut + 1 :]
    m = re.fullmatch(r"(.+?)\s*=\s*([a-z_0-9]+)\((.*?)\)\s*(\{.*?\})?\s*:\s*(.+?)\s*", code)
    if not m:
        raise GraphcError(f"line {lineno}: cannot parse node {code!r}")
    outs = [re.fullmatch(_NAME, o.strip()) for o in m.group(1).split(",")]
    if not all(outs):
        raise GraphcError(f"line {lineno}: bad output names {m.group(1)!r}")
    out_names = [o.group(1) for o in outs]
    op = m.group(2)
    ins = []
    for part in _split_top(m.group(3)):
        nm = re.fullmatch(_NAME, part)
        if not nm:
            raise GraphcError(f"line {lineno}: bad operand {part!r}")
        ins.append(_lookup(env, nm.group(1), lineno))
    attrs = _parse_attrs(m.group(4), lineno)
    declared = [parse_type(t) for t in _split_top(m.group(5))]
    if body_header is not None:
        body = _parse_graph(lines, body_header)
        node = g.add_fused(ins, body, attrs, source)
        # Release every placeholder name first: one may equal a later declared output name.
        for v in node.outputs:
            g._names.discard(v.name)
        for v, name in zip(node.outputs, out_names):
            v.name = g._claim(name)
    elif n_bodies:
        bodies = []
        for _ in range(n_bodies):
            _, header = lines.next()
            bodies.append(_parse_graph(lines, _strip_comment(header)[0]))
        if len(set(out_names)) != len(out_names):
            raise GraphcError(f"line {lineno}: an output name is defined twice")
        try:
            node = g.add_control(op, ins, bodies, attrs, source, names=out_names)
        except GraphcError as err:
            raise GraphcError(f"line {lineno}: {err}") from None
    else:
        node = g.add_node(op, ins, normalize_attrs(op, attrs), source, names=out_names)
    got = [v.type for v in node.outputs]
    if got != declared:
        raise GraphcError(
            f"line {lineno}: {op} declares {', '.join(map(str, declared))} "
            f"but its operands give {', '.join(map(str, got))}"
        )
    for v in node.outputs:
        env[v.name] = v


def _parse_attrs(text: str | None, lineno: int) -> dict:
    if not text:
        return {}
    attrs = {}
    for part in _split_top(text.strip()[1:-1]):
        key, _, val = part.partition("=")
        try:
            attrs[key.strip()] = parse_literal(val.strip())
        except (ValueError, SyntaxError):
            raise GraphcError(f"line {lineno}: bad attribute value {part!r}") from None
    return attrs


def parse_graph(text: str) -> Graph:
    """Parse one graph in the text form."""
    lines = _Lines(text)
    _, header = lines.next()
    g = _parse_graph(lines, _strip_comment(header)[0])
    if lines.pos != len(lines.lines):
        raise GraphcError(f"line {lines.pos + 1}: text after the graph's closing '}}'")
    return g
