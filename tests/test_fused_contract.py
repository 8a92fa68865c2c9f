"""ir/fused.py: the fused-node contract holds for what fusion makes, and broken bodies are named."""

import importlib.util
from pathlib import Path

import pytest

import graphc
from graphc.ir import Graph, GraphcError, Node, TensorType
from graphc.ir.fused import attention_parts, check_fused, matmul_parts

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(f"contract_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ex = mod.example_inputs()
    return mod.model(), ex if isinstance(ex, tuple) else (ex,)


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer", "nest_mlp"])
def test_every_fused_node_of_the_examples_keeps_the_contract(name):
    model, ex = _example(name)
    plan = graphc.compile(model, *ex, backend="reference")
    fused = [n for n in plan.graph.nodes if n.op == "fused"]
    assert fused
    for node in fused:
        check_fused(node)
        if node.attrs["kind"] == "matmul":
            parts = matmul_parts(node)
            assert [n.op for n in parts.prologue + (parts.matmul,) + parts.epilogue] == [
                n.op for n in node.subgraph.nodes
            ]
            for operand, value in zip(parts.operands, parts.matmul.inputs):
                assert operand.view.shape == value.shape
    if name == "transformer":
        (att,) = [n for n in fused if n.attrs["kind"] == "attention"]
        parts = attention_parts(att)
        assert parts.head_perm is not None and parts.head_perm[-1] == len(parts.head_perm) - 1


def _fused(kind, build):
    body = Graph("body")
    a = body.add_input("a", TensorType((4, 4), "f32"))
    b = body.add_input("b", TensorType((4, 4), "f32"))
    out = build(body, a, b)
    body.add_output(out)
    return Node("fused", [a, b], {"kind": kind}, [out], "model.py:7", body)


def test_a_matmul_body_with_a_non_view_prologue_is_named():
    node = _fused("matmul", lambda g, a, b: g.op("matmul", g.op("exp", a), b))
    with pytest.raises(GraphcError, match="prologue.*model.py:7"):
        check_fused(node)


def test_a_matmul_body_with_a_reduction_epilogue_is_named():
    node = _fused("matmul", lambda g, a, b: g.op("sum", g.op("matmul", a, b), axes=(1,)))
    with pytest.raises(GraphcError, match="epilogue"):
        check_fused(node)


def test_operand_views_come_from_the_view_rule():
    node = _fused("matmul", lambda g, a, b: g.op("matmul", a, g.op("transpose", b, perm=(1, 0))))
    parts = matmul_parts(node)
    assert parts.operands[1].view.strides == (1, 4)
    assert parts.operands[0].chain == ()


def test_unknown_kind_and_misplaced_reductions_are_named():
    with pytest.raises(GraphcError, match="unknown kind"):
        check_fused(_fused("magic", lambda g, a, b: g.op("add", a, b)))
    with pytest.raises(GraphcError, match="pointwise body holds a reduction"):
        check_fused(_fused("pointwise", lambda g, a, b: g.op("sum", a, axes=(1,), keepdims=True)))
    with pytest.raises(GraphcError, match="cannot loop over"):
        check_fused(_fused("pointwise", lambda g, a, b: g.op("matmul", a, b)))


def test_an_attention_body_out_of_order_is_named():
    node = _fused("attention", lambda g, a, b: g.op("matmul", g.op("matmul", a, b), b))
    with pytest.raises(GraphcError, match="3 or 4 stages"):
        attention_parts(node)
