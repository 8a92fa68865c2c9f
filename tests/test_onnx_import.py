"""graphc.onnx.load: small ONNX models built with onnx.helper, checked against ONNX Runtime."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402

F32 = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, inits=(), opset=17):
    """A ModelProto from nodes, (name, shape) inputs/outputs (float32) and array initializers."""
    graph = helper.make_graph(
        nodes,
        "t",
        [helper.make_tensor_value_info(n, F32, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F32, s) for n, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def ort_run(model, *arrays):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})


def graphc_run(model, *arrays, backend="reference", freeze=False):
    plan = graphc.compile(graphc.onnx.load(model), *arrays, backend=backend, freeze=freeze)
    out = plan(*arrays)
    return list(out) if isinstance(out, tuple) else [out]


def check(model, *arrays, rtol=1e-4, atol=1e-5, backend="reference"):
    expected = ort_run(model, *arrays)
    got = graphc_run(model, *arrays, backend=backend)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    "group,pads,strides,dilations",
    [(1, [1, 1, 1, 1], [1, 1], [1, 1]), (2, [0, 1, 2, 0], [2, 1], [1, 1]), (4, [1, 1, 1, 1], [1, 1], [2, 2])],
)
def test_conv_groups_pads(rng, group, pads, strides, dilations):
    w = rand(rng, 8, 4 // group, 3, 3)
    b = rand(rng, 8)
    node = helper.make_node(
        "Conv", ["x", "w", "b"], ["y"], group=group, pads=pads, strides=strides, dilations=dilations
    )
    model = make_model([node], [("x", [2, 4, 9, 8])], [("y", None)], [("w", w), ("b", b)])
    check(model, rand(rng, 2, 4, 9, 8), backend="cpu")


def test_conv1d_same_upper_and_conv_transpose(rng):
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], auto_pad="SAME_UPPER", strides=[2]),
        helper.make_node("ConvTranspose", ["h", "wt"], ["y"], strides=[2], pads=[1, 0], output_padding=[1]),
    ]
    inits = [("w", rand(rng, 6, 3, 4)), ("wt", rand(rng, 6, 2, 3))]
    check(make_model(nodes, [("x", [2, 3, 11])], [("y", None)], inits), rand(rng, 2, 3, 11))


def test_conv_transpose_2d_groups(rng):
    node = helper.make_node(
        "ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1], group=2
    )
    inits = [("w", rand(rng, 4, 3, 3, 3)), ("b", rand(rng, 6))]
    check(make_model([node], [("x", [1, 4, 5, 6])], [("y", None)], inits), rand(rng, 1, 4, 5, 6))


@pytest.mark.parametrize("ceil", [0, 1])
def test_pools(rng, ceil):
    nodes = [
        helper.make_node(
            "MaxPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=ceil
        ),
        helper.make_node(
            "AveragePool",
            ["a"],
            ["b"],
            kernel_shape=[2, 3],
            strides=[2, 1],
            pads=[0, 1, 1, 1],
            ceil_mode=ceil,
        ),
        helper.make_node(
            "AveragePool", ["a"], ["c"], kernel_shape=[2, 2], pads=[1, 1, 0, 0], count_include_pad=1
        ),
        helper.make_node("GlobalAveragePool", ["b"], ["d"]),
    ]
    model = make_model(nodes, [("x", [2, 3, 12, 11])], [("b", None), ("c", None), ("d", None)])
    check(model, rand(rng, 2, 3, 12, 11))


def test_batchnorm_lrn_relu_softmax_gemm(rng):
    c = 6
    nodes = [
        helper.make_node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["a"], epsilon=1e-3),
        helper.make_node("LRN", ["a"], ["l"], size=5, alpha=1e-2, beta=0.75, bias=2.0),
        helper.make_node("Relu", ["l"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w", "gb"], ["g"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Softmax", ["g"], ["y"], axis=1),
    ]
    inits = [
        ("s", rand(rng, c)),
        ("bb", rand(rng, c)),
        ("m", rand(rng, c)),
        ("v", rng.uniform(0.5, 2, c).astype(np.float32)),
        ("w", rand(rng, 7, c * 16)),
        ("gb", rand(rng, 7)),
    ]
    check(make_model(nodes, [("x", [3, c, 4, 4])], [("y", None)], inits), rand(rng, 3, c, 4, 4))


def test_softmax_opset11_flattens(rng):
    node = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    check(make_model([node], [("x", [2, 3, 4])], [("y", None)], opset=11), rand(rng, 2, 3, 4))


@pytest.mark.parametrize(
    "mode,coord",
    [
        ("nearest", "asymmetric"),
        ("nearest", "half_pixel"),
        ("linear", "half_pixel"),
        ("linear", "align_corners"),
    ],
)
def test_resize(rng, mode, coord):
    scales = np.array([1, 1, 2.0, 1.5], dtype=np.float32)
    node = helper.make_node(
        "Resize", ["x", "", "scales"], ["y"], mode=mode, coordinate_transformation_mode=coord
    )
    model = make_model([node], [("x", [1, 2, 4, 6])], [("y", None)], [("scales", scales)], opset=13)
    check(model, rand(rng, 1, 2, 4, 6))


def test_transformer_ops(rng):
    """What PyTorch's transformer exports use: shape arithmetic folds, then matmuls and norms."""
    d = 8
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "rest"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["x", "newshape"], ["xr"]),
        helper.make_node("LayerNormalization", ["xr", "g", "b"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("MatMul", ["ln", "wq"], ["q"]),
        helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "qt"], ["att"]),
        helper.make_node("Trilu", ["att"], ["tri"], upper=0),
        helper.make_node("Div", ["tri", "scale"], ["sc"]),
        helper.make_node("Softmax", ["sc"], ["p"], axis=-1),
        helper.make_node("Einsum", ["p", "ln"], ["ctx"], equation="bij,bjd->bid"),
        helper.make_node("Gelu", ["ctx"], ["ge"]),
        helper.make_node("Split", ["ge", "split"], ["s1", "s2"], axis=2),
        helper.make_node("Slice", ["s1", "st", "en", "ax", "sp"], ["sl"]),
        helper.make_node("ReduceMean", ["sl", "axes2"], ["rm"], keepdims=1),
        helper.make_node("Sub", ["s2", "rm"], ["y1"]),
        helper.make_node("Erf", ["y1"], ["er"]),
        helper.make_node("Pow", ["er", "two"], ["pw"]),
        helper.make_node("Sqrt", ["pw"], ["sq"]),
        helper.make_node("Less", ["sq", "half"], ["lt"]),
        helper.make_node("Not", ["lt"], ["nlt"]),
        helper.make_node("Where", ["nlt", "sq", "y1"], ["w"]),
        helper.make_node("Clip", ["w", "lo", "hi"], ["cl"]),
        helper.make_node("HardSwish", ["cl"], ["hs"]),
        helper.make_node("Expand", ["hs", "eshape"], ["ex"]),
        helper.make_node("TopK", ["ex", "k"], ["tv", "ti"], axis=-1),
        helper.make_node("Cast", ["ti"], ["y2"], to=F32),
    ]
    i64 = np.int64
    inits = [
        ("zero", np.array(0, i64)),
        ("axes0", np.array([0], i64)),
        ("rest", np.array([-1, d], i64)),
        ("g", rand(rng, d)),
        ("b", rand(rng, d)),
        ("wq", rand(rng, d, d)),
        ("scale", np.array(2.0, np.float32)),
        ("split", np.array([4, 4], i64)),
        ("st", np.array([3, 0], i64)),
        ("en", np.array([-100, 10], i64)),
        ("ax", np.array([2, 1], i64)),
        ("sp", np.array([-1, 2], i64)),
        ("axes2", np.array([1], i64)),
        ("two", np.array(2.0, np.float32)),
        ("half", np.array(0.5, np.float32)),
        ("lo", np.array(-0.7, np.float32)),
        ("hi", np.array(0.9, np.float32)),
        ("eshape", np.array([2, 1, 1, 1], i64)),
        ("k", np.array([2], i64)),
    ]
    model = make_model(nodes, [("x", [2, 5 * d])], [("tv", None), ("y2", None)], inits, opset=20)
    check(model, rand(rng, 2, 5 * d))


def test_prescan_lists_every_unsupported_op_once():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Unique", ["a"], ["b"], name="floor1"),
        helper.make_node("Unique", ["b"], ["c"], name="floor2"),
        helper.make_node("NonZero", ["c"], ["y"], name="nz"),
    ]
    model = make_model(nodes, [("x", [3])], [("y", None)])
    with pytest.raises(GraphcError) as err:
        graphc.onnx.load(model)
    text = str(err.value)
    assert "Unique x2" in text and "'floor1'" in text and "'floor2'" in text
    assert "NonZero x1" in text and "'nz'" in text
    assert "Relu" not in text


def test_if_reading_an_outer_name_imports():
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", F32, [3])],
    )
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=then)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", F32, [3]),
        ],
        [helper.make_tensor_value_info("y", F32, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m = graphc.onnx.load(model)  # the branch reads x from the enclosing graph
    x = np.arange(3, dtype=np.float32)
    for c in (np.array(True), np.array(False)):
        np.testing.assert_array_equal(graphc.compile(m, c, x, backend="reference")(c, x), x)


@pytest.mark.parametrize(
    "attrs,match",
    [
        ({"group": 0}, "'group' must be in"),
        ({"kernel_shape": [3, -1]}, "'kernel_shape' must be ints"),
        ({"strides": [1, 1, 1]}, "'strides' must be 2 entries"),
        ({"auto_pad": "SIDEWAYS"}, "'auto_pad' must be one of"),
        ({"group": 1.5}, "'group' must be an int"),
    ],
)
def test_bad_attributes_are_graphc_errors(rng, attrs, match):
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c1", **attrs)
    model = make_model([node], [("x", [1, 2, 5, 5])], [("y", None)], [("w", rand(rng, 2, 2, 3, 3))])
    with pytest.raises(GraphcError, match=match) as err:
        graphc.compile(graphc.onnx.load(model), rand(rng, 1, 2, 5, 5), backend="reference")
    assert "ONNX node 'c1' (Conv)" in str(err.value)


def test_runtime_value_where_a_constant_is_needed(rng):
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", F32, [6]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", F32, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphcError, match="'r' \\(Reshape\\): input 1 \\(shape\\) must be a constant"):
        graphc.compile(graphc.onnx.load(model), rand(rng, 6), np.array([2, 3]), backend="reference")


def test_unreadable_file_is_a_graphc_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage\xff\xff")
    with pytest.raises(GraphcError, match="not a readable ONNX model"):
        graphc.onnx.load(bad)
    with pytest.raises(GraphcError, match="does not exist"):
        graphc.onnx.load(tmp_path / "missing.onnx")


def test_wrong_input_shape_is_named(rng):
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2, 3])], [("y", None)])
    with pytest.raises(GraphcError, match=r"input 'x' must have shape \[2, 3\]"):
        graphc.compile(graphc.onnx.load(model), rand(rng, 3, 2), backend="reference")


def test_parameters_are_initializers_and_train(rng):
    w = rand(rng, 4, 3)
    nodes = [helper.make_node("Gemm", ["x", "w.0/weight", "b"], ["y"], transB=1)]
    model = make_model(nodes, [("x", [5, 3])], [("y", None)], [("w.0/weight", w), ("b", rand(rng, 4))])
    module = graphc.onnx.load(model)
    names = dict(module.named_parameters())
    assert set(names) == {"w_0_weight", "b"}
    assert module.onnx_names["w_0_weight"] == "w.0/weight"
    np.testing.assert_array_equal(names["w_0_weight"], w)
    x = rand(rng, 5, 3)
    labels = np.array([0, 1, 2, 3, 0])
    frozen = graphc.compile(module, x, freeze=True, backend="reference")
    assert not frozen.graph.inputs_of_kind("param")
    step = graphc.compile_train(module, graphc.functional.cross_entropy, graphc.optim.SGD(lr=0.5), x, labels)
    losses = [float(step(x, labels)) for _ in range(5)]
    assert losses[-1] < losses[0]
    assert not np.array_equal(dict(module.named_parameters())["w_0_weight"], w)  # trained in place
