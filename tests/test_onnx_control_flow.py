"""ONNX If/Loop/Scan import (as cond/while_loop/scan) and export (cond/while_loop/scan as If/Loop),
each checked against ONNX Runtime running the same model."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

import graphc  # noqa: E402
import graphc.nn as nn  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.control_flow import cond, scan, while_loop  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402

F32, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _vi(name, etype, shape):
    return helper.make_tensor_value_info(name, etype, shape)


def _model(nodes, inputs, outputs, opset=17, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _graphc(model, *arrays, backend="reference"):
    m = graphc.onnx.load(model)
    out = graphc.compile(m, *arrays, backend=backend)(*arrays)
    return list(out) if isinstance(out, tuple) else [out]


def _if_model():
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"])], "then", [], [_vi("t", F32, [2, 3])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["x", "two"], ["e"])], "else", [], [_vi("e", F32, [2, 3])]
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["p"]),
        helper.make_node("If", ["p"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    inits = [
        helper.make_tensor("two", F32, [], [2.0]),
        helper.make_tensor("zero", F32, [], [0.0]),
    ]
    return _model(nodes, [_vi("x", F32, [2, 3])], [_vi("y", F32, [2, 3])], initializers=inits)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_if_with_a_run_time_condition_matches_onnxruntime(rng, sign):
    model = _if_model()
    x = (sign * np.abs(rng.standard_normal((2, 3)))).astype(np.float32)
    m = graphc.onnx.load(model)
    assert "cond" in {n.op for n in graphc.trace(m, x).nodes}  # not folded: x is known at run time
    (got,) = _graphc(model, x)
    (want,) = _ort(model, {"x": x})
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rank", [2, 3])
def test_an_if_on_a_constant_is_inlined_and_its_shape_stays_a_constant(rng, rank):
    """If(Size(shape) == 2) picks a branch while converting; the branch's Concat of the given
    shape is then a constant that Reshape can read (it was a Tensor: Reshape refused it)."""

    def branch(name, extra):
        nodes = [helper.make_node("Concat", ["shape", *extra], [name], axis=0)]
        return helper.make_graph(nodes, name, [], [_vi(name, I64, [None])])

    nodes = [
        helper.make_node("Size", ["shape"], ["n"]),
        helper.make_node("Equal", ["n", "two"], ["is2"]),
        helper.make_node(
            "If", ["is2"], ["target"], then_branch=branch("t", ["one"]), else_branch=branch("e", [])
        ),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    shape = [3, 4] if rank == 2 else [3, 2, 2]
    inits = [
        helper.make_tensor("shape", I64, [rank], shape),
        helper.make_tensor("two", I64, [], [2]),
        helper.make_tensor("one", I64, [1], [1]),
    ]
    model = _model(nodes, [_vi("x", F32, [12])], [_vi("y", F32, [None] * 3)], initializers=inits)
    x = rng.standard_normal(12).astype(np.float32)
    (got,) = _graphc(model, x)
    (want,) = _ort(model, {"x": x})
    assert got.shape == want.shape == ((3, 4, 1) if rank == 2 else (3, 2, 2))
    np.testing.assert_array_equal(got, want)


def _halving_loop_model():
    """``while |x|.sum() > 1: x = x / 2`` as an ONNX Loop with no trip count."""
    body = helper.make_graph(
        [
            helper.make_node("Div", ["xc", "two"], ["xn"]),
            helper.make_node("Abs", ["xn"], ["a"]),
            helper.make_node("ReduceSum", ["a"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "one"], ["c_out"]),
        ],
        "body",
        [_vi("i", I64, []), _vi("c_in", BOOL, []), _vi("xc", F32, [3])],
        [_vi("c_out", BOOL, []), _vi("xn", F32, [3])],
    )
    nodes = [
        helper.make_node("Abs", ["x"], ["a0"]),
        helper.make_node("ReduceSum", ["a0"], ["s0"], keepdims=0),
        helper.make_node("Greater", ["s0", "one"], ["c0"]),
        helper.make_node("Loop", ["", "c0", "x"], ["y"], body=body),
    ]
    inits = [helper.make_tensor("two", F32, [], [2.0]), helper.make_tensor("one", F32, [], [1.0])]
    return _model(nodes, [_vi("x", F32, [3])], [_vi("y", F32, [3])], initializers=inits)


@pytest.mark.parametrize("scale", [0.1, 10.0, 1000.0])
def test_loop_with_a_run_time_condition_is_a_while_loop(rng, scale):
    model = _halving_loop_model()
    x = (scale * rng.standard_normal(3)).astype(np.float32)
    m = graphc.onnx.load(model)
    assert "while_loop" in {n.op for n in graphc.trace(m, x).nodes}
    (got,) = _graphc(model, x)
    (want,) = _ort(model, {"x": x})
    np.testing.assert_array_equal(got, want)


def _counted_loop_model(trips):
    """M trips of ``acc = acc * w + i``, each trip's acc also a scan output."""
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["fi"], to=F32),
            helper.make_node("Mul", ["acc", "w"], ["m"]),
            helper.make_node("Add", ["m", "fi"], ["acc_n"]),
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Identity", ["acc_n"], ["y"]),
        ],
        "body",
        [_vi("i", I64, []), _vi("c_in", BOOL, []), _vi("acc", F32, [2])],
        [_vi("c_out", BOOL, []), _vi("acc_n", F32, [2]), _vi("y", F32, [2])],
    )
    nodes = [helper.make_node("Loop", ["M", "", "a0"], ["acc_final", "ys"], body=body)]
    inits = [helper.make_tensor("M", I64, [], [trips])]
    return _model(
        nodes,
        [_vi("a0", F32, [2]), _vi("w", F32, [2])],
        [_vi("acc_final", F32, [2]), _vi("ys", F32, [trips, 2])],
        initializers=inits,
    )


def test_loop_with_a_constant_trip_count_is_a_scan_with_stacked_outputs(rng):
    model = _counted_loop_model(5)
    a0, w = rng.standard_normal((2, 2)).astype(np.float32)
    m = graphc.onnx.load(model)
    assert "scan" in {n.op for n in graphc.trace(m, a0, w).nodes}
    got = _graphc(model, a0, w, backend="cpu")
    want = _ort(model, {"a0": a0, "w": w})
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-6)


def _scan_model(input_axis, input_dir, output_axis, output_dir):
    """Running sum over axis ``input_axis`` of x [3, 4]; each step's sum also a scan output."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "xi"], ["s_n"]), helper.make_node("Mul", ["s_n", "xi"], ["y"])],
        "body",
        [_vi("s", F32, [None]), _vi("xi", F32, [None])],
        [_vi("s_n", F32, [None]), _vi("y", F32, [None])],
    )
    n = 3 if input_axis == 0 else 4
    node = helper.make_node(
        "Scan",
        ["s0", "x"],
        ["s_final", "ys"],
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[input_axis],
        scan_input_directions=[input_dir],
        scan_output_axes=[output_axis],
        scan_output_directions=[output_dir],
    )
    width = 7 - n
    ys_shape = [n, width] if output_axis == 0 else [width, n]
    return _model(
        [node],
        [_vi("s0", F32, [width]), _vi("x", F32, [3, 4])],
        [_vi("s_final", F32, [width]), _vi("ys", F32, ys_shape)],
    )


@pytest.mark.parametrize("axes_dirs", [(0, 0, 0, 0), (1, 1, 0, 0), (0, 1, 1, 1), (1, 0, 1, 0)])
def test_scan_axes_and_directions_match_onnxruntime(rng, axes_dirs):
    model = _scan_model(*axes_dirs)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    s0 = rng.standard_normal(7 - (3 if axes_dirs[0] == 0 else 4)).astype(np.float32)
    got = _graphc(model, s0, x)
    want = _ort(model, {"s0": s0, "x": x})
    for g, e in zip(got, want):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-6)


def test_prescan_names_unsupported_ops_inside_bodies():
    body = helper.make_graph(
        [helper.make_node("NoSuchOp", ["xc"], ["xn"]), helper.make_node("Identity", ["c_in"], ["c_out"])],
        "body",
        [_vi("i", I64, []), _vi("c_in", BOOL, []), _vi("xc", F32, [3])],
        [_vi("c_out", BOOL, []), _vi("xn", F32, [3])],
    )
    nodes = [helper.make_node("Loop", ["M", "", "x"], ["y"], body=body, name="outer")]
    graph = helper.make_graph(
        nodes, "g", [_vi("x", F32, [3])], [_vi("y", F32, [3])], [helper.make_tensor("M", I64, [], [2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphcError, match="NoSuchOp x1"):
        graphc.onnx.load(model)


def test_loop_scan_outputs_with_a_run_time_condition_is_a_clear_error():
    model = _halving_loop_model()
    body = model.graph.node[-1].attribute[0].g
    body.output.append(_vi("extra", F32, [3]))
    body.node.append(helper.make_node("Identity", ["xn"], ["extra"]))
    model.graph.node[-1].output.append("ys")
    m = graphc.onnx.load(model)
    with pytest.raises(GraphcError, match="scan outputs of a Loop whose trip count or condition"):
        graphc.trace(m, np.ones(3, np.float32))


# ---------------------------------------------------------------------------- export
class _Halve(nn.Module):
    def forward(self, x):
        return while_loop(lambda c: c.abs().sum() > 1, lambda c: c / 2, x)


class _Branch(nn.Module):
    def forward(self, x):
        return cond(x.sum() > 0, lambda a: a * 2, lambda a: a - 1, x)


class _Running(nn.Module):
    def __init__(self, reverse):
        super().__init__()
        self.reverse = reverse
        self.w = nn.Parameter(np.linspace(0.5, 1.5, 3).astype(np.float32))

    def forward(self, x):
        carry, ys = scan(lambda c, xi: (c * self.w + xi, c * xi), x[0] * 0, x, reverse=self.reverse)
        return carry, ys


def _export_cases():
    return [
        ("while_loop", _Halve(), (4, 3)),
        ("cond", _Branch(), (4, 3)),
        ("scan", _Running(False), (4, 3)),
        ("scan reverse", _Running(True), (4, 3)),
        ("lstm", nn.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True), (2, 4, 3)),
    ]


@pytest.mark.parametrize("case", _export_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_control_flow_exports_and_runs_in_onnxruntime(rng, case, sign):
    _, model, shape = case
    x = (sign * 3 * rng.standard_normal(shape)).astype(np.float32)
    proto = graphc.onnx.export(model, x)  # onnx.checker runs inside
    got = _ort(proto, {proto.graph.input[0].name: x})
    out = graphc.compile(model, x, backend="reference")(x)
    flat = []

    def collect(v):
        if isinstance(v, (tuple, list)):
            for item in v:
                collect(item)
        elif v is not None:
            flat.append(np.asarray(v))

    collect(out)
    assert len(got) == len(flat)
    for g, e in zip(got, flat):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    back = _graphc(proto, x)  # graphc imports its own export back
    for g, e in zip(back, flat):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
