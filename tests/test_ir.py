"""The IR: text form round trip, verifier, JSON, DOT and the type rules' error messages."""

import json

import numpy as np
import pytest

from graphc.ir import (
    Graph,
    GraphcError,
    TensorType,
    graph_from_json,
    graph_to_dot,
    graph_to_json,
    parse_graph,
    print_graph,
    verify,
)


def sample_graph() -> Graph:
    g = Graph("sample")
    x = g.add_input("x", TensorType((4, 3)))
    w = g.add_input("lin.weight", TensorType((5, 3)), "param", np.ones((5, 3), np.float32))
    c = g.add_input("c", TensorType((5,)), "const", np.arange(5, dtype=np.float32))
    s = g.add_input("step", TensorType((), "i64"), "state", np.array(0))
    t = g.op("transpose", w, perm=(1, 0), source="model.py:3")
    m = g.op("matmul", x, t, source="model.py:4")
    z = g.op("const", value=0.5)
    r = g.op("maximum", g.op("add", m, c), z)
    red = g.op("sum", r, axes=(1,), keepdims=True)
    body = Graph("body")
    a = body.add_input("a", r.type)
    b = body.add_input("b", red.type)
    body.add_output(body.op("exp", body.op("sub", a, b)))
    fused = g.add_fused([r, red], body, {"kind": "pointwise"}).output
    one = g.op("const", value=1, dtype="i64")
    new_step = g.op("add", s, one)
    g.add_output(fused)
    g.add_output(new_step, updates="step")
    return g


def test_text_round_trip():
    g = sample_graph()
    verify(g)
    text = print_graph(g)
    assert "# model.py:3" in text and "%step: i64[] state" in text and "-> %step" in text
    again = parse_graph(text)
    verify(again)
    assert print_graph(again) == text
    np.testing.assert_array_equal(again.initializers["c"], g.initializers["c"])


def test_json_round_trip():
    g = sample_graph()
    data = json.loads(json.dumps(graph_to_json(g)))
    again = graph_from_json(data)
    again.initializers = dict(g.initializers)
    assert print_graph(again) == print_graph(g)


def test_dot_names_every_node():
    dot = graph_to_dot(sample_graph())
    assert dot.startswith('digraph "sample"')
    for op in ("matmul", "transpose", "fused", "maximum"):
        assert op in dot


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "graph g(%x: f32[2]) {\n  %0 = exp(%y) : f32[2]\n  return %0\n}",
            "%y is used before it is defined",
        ),
        (
            "graph g(%x: f32[2]) {\n  %0 = exp(%x) : f32[3]\n  return %0\n}",
            "declares f32[3] but its operands give f32[2]",
        ),
        (
            "graph g(%x: f32[2], %x: f32[2]) {\n  return %x\n}",
            "defined twice",
        ),
        ("graph g(%x: f32[2]) {\n  %0 = frob(%x) : f32[2]\n  return %0\n}", "unknown primitive op 'frob'"),
    ],
)
def test_parser_rejects_broken_text(text, message):
    with pytest.raises(GraphcError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_graph(text)


def test_verifier_names_what_is_broken():
    g = sample_graph()
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]  # matmul before the transpose it reads
    with pytest.raises(GraphcError, match=r"node %1 = matmul \(model.py:4\): operand %0 is used before"):
        verify(g)

    g = sample_graph()
    g.nodes[1].outputs[0].type = TensorType((4, 6))
    with pytest.raises(GraphcError, match=r"outputs typed f32\[4,6\] but the op gives f32\[4,5\]"):
        verify(g)

    g = sample_graph()
    g.updates["lin.weight"] = 1  # the update output is i64[], the weight f32[5,3]
    with pytest.raises(GraphcError, match="update of %lin.weight is i64"):
        verify(g)

    g = sample_graph()
    g.nodes[2].attrs["dtype"] = "f64"  # the const's attribute no longer matches its output type
    with pytest.raises(GraphcError, match=r"node %2 = const: outputs typed f32\[\] but the op gives f64\[\]"):
        verify(g)


def test_type_rule_errors_name_op_and_shapes():
    g = Graph()
    a = g.add_input("a", TensorType((2, 3)))
    b = g.add_input("b", TensorType((4, 5)))
    with pytest.raises(GraphcError, match=r"matmul: inner dimensions differ: 3 \(left\) vs 4 \(right\)"):
        g.op("matmul", a, b)
    with pytest.raises(GraphcError, match=r"add: shapes \(2, 3\) and \(4, 5\) do not broadcast"):
        g.op("add", a, b)
    with pytest.raises(GraphcError, match="reshape: cannot reshape"):
        g.op("reshape", a, shape=(5,))
    with pytest.raises(GraphcError, match="missing required attribute 'axes'"):
        g.op("sum", a)


def test_non_finite_constants_round_trip():
    g = Graph("nonfinite")
    x = g.add_input("x", TensorType((3,)))
    c = g.add_input("c", TensorType((3,)), "const", np.array([np.inf, -np.inf, np.nan], np.float32))
    g.add_output(g.op("maximum", g.op("add", x, c), g.op("const", value=float("-inf"))))
    text = print_graph(g)
    again = parse_graph(text)
    assert print_graph(again) == text
    np.testing.assert_array_equal(again.initializers["c"], g.initializers["c"])
