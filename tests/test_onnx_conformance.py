"""onnx's node conformance tests on graphc's ONNX backend (onnx.backend.base.Backend).

The cases are generated in memory from the installed onnx package. Cases whose model uses an op
with no converter are skipped by op name; the rest must pass, except the named, explained
entries of graphc.onnx.known_failures. All cases run on the NumPy reference kernels here (fast);
a selection runs on the CPU kernels; ``make onnx-conformance`` runs them all on the CPU kernels.
"""

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.onnx.backend import GraphcBackend, static_inputs  # noqa: E402
from graphc.onnx.conformance import missing_ops, node_cases, run_all, run_case  # noqa: E402
from graphc.onnx.known_failures import KNOWN_FAILURES  # noqa: E402

# Light-zoo and transformer ops, checked on the CPU kernels too.
CPU_SELECTION = (
    "test_conv_with_strides_and_asymmetric_padding",
    "test_maxpool_2d_ceil",
    "test_averagepool_2d_pads_count_include_pad",
    "test_batchnorm_example",
    "test_lrn",
    "test_gemm_all_attributes",
    "test_softmax_axis_1",
    "test_layer_normalization_4d_axis1",
    "test_resize_upsample_scales_linear",
    "test_resize_downsample_sizes_cubic_antialias",
    "test_resize_tf_crop_and_resize_extrapolation_value",
    "test_convtranspose_pads",
    "test_top_k",
    "test_einsum_batch_matmul",
    "test_gelu_tanh_1",
    "test_slice_neg_steps",
    "test_instancenorm_example",
    "test_group_normalization_example",
    "test_rms_normalization_2d_axis0",
    "test_depthtospace_crd_mode_example",
    "test_cumsum_2d_axis_1",
    "test_edge_pad",
    "test_argmax_keepdims_example_select_last_index",
    "test_if",
    "test_loop11",
    "test_scan9_multi_state",
    "test_gather_elements_negative_indices",
    "test_gathernd_example_int32_batch_dim1",
    "test_scatternd_add",
    "test_lstm_with_peepholes",
    "test_gru_defaults",
    "test_attention_4d_gqa_with_past_and_present",
    "test_rotary_embedding",
    "test_qlinearconv",
    "test_qlinearmatmul_2D_uint8_float32",
    "test_gridsample_bilinear",
    "test_lppool_2d_default",
    "test_cast_FLOAT_to_FLOAT8E4M3FN",
    "test_bitshift_right_uint8",
    "test_reduce_prod_default_axes_keepdims_example",
)


@pytest.fixture(scope="module")
def cases():
    return node_cases()


def test_all_node_tests_on_reference_kernels(cases):
    outcomes = run_all(cases, backend="reference")
    by_status = {s: [o for o in outcomes if o.status == s] for s in ("pass", "fail", "skip")}
    unexpected = [f"{o.name}: {o.detail}" for o in by_status["fail"] if o.name not in KNOWN_FAILURES]
    assert not unexpected, "\n".join(unexpected)
    stale = [o.name for o in by_status["pass"] if o.name in KNOWN_FAILURES]
    assert not stale, f"these pass now; remove them from KNOWN_FAILURES: {stale}"
    assert not [o for o in by_status["fail"] if "BUG" in o.detail]
    assert len(by_status["pass"]) >= 990
    for o in by_status["skip"]:
        assert o.detail.startswith("no converter for ")


def test_known_failures_name_real_cases(cases):
    names = {c.name for c in cases}
    assert set(KNOWN_FAILURES) <= names


@pytest.mark.parametrize("name", CPU_SELECTION)
def test_selected_node_tests_on_cpu_kernels(cases, name):
    (case,) = [c for c in cases if c.name == name]
    assert not missing_ops(case.model)
    outcome = run_case(case, backend="cpu")
    assert outcome.status == "pass", outcome.detail


def test_backend_interface(cases):
    (case,) = [c for c in cases if c.name == "test_relu"]
    assert GraphcBackend.supports_device("CPU") and not GraphcBackend.supports_device("CUDA")
    inputs, outputs = case.data_sets[0]
    (got,) = GraphcBackend.run_model(case.model, inputs, backend="reference")
    np.testing.assert_array_equal(got, np.maximum(inputs[0], 0))


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inputs_computing_a_static_slot_are_static_and_shape_reads_are_not():
    """``n`` reaches Range's limit through Cast and Mul, so the backend folds it; ``x`` only through
    Size (its shape is known while compiling), so it stays a data input."""
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    nodes = [
        helper.make_node("Size", ["x"], ["numel"]),
        helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.array(2.0, np.float32))),
        helper.make_node("Cast", ["n"], ["nf"], to=f32),
        helper.make_node("Mul", ["nf", "two"], ["twice"]),
        helper.make_node("Cast", ["twice"], ["limit"], to=i64),
        helper.make_node("Add", ["limit", "numel"], ["stop"]),
        helper.make_node("Range", ["zero", "stop", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=f32),
        helper.make_node("ReduceSum", ["x"], ["xs"], keepdims=0),
        helper.make_node("Add", ["rf", "xs"], ["y"]),
    ]
    consts = [  # (a float initializer would be a parameter: a Constant node is a constant)
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
    ]
    inputs = [helper.make_tensor_value_info("x", f32, [2, 3]), helper.make_tensor_value_info("n", i64, [])]
    model = _model(nodes, inputs, [helper.make_tensor_value_info("y", f32, None)], consts)
    assert static_inputs(model) == {"n"}
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    rep = GraphcBackend.prepare(model, backend="reference")
    for n in (1, 4):  # one plan per value of n
        (got,) = rep.run([x, np.array(n, np.int64)])
        np.testing.assert_array_equal(got, np.arange(2 * n + 6, dtype=np.float32) + x.sum())


def test_float64_initializers_keep_their_dtype():
    """An ONNX float64 initializer is a float64 parameter (not the default dtype, float32)."""
    w = (np.arange(6, dtype=np.float64).reshape(2, 3) / 7) ** 0.5
    f64 = TensorProto.DOUBLE
    model = _model(
        [helper.make_node("Mul", ["W", "x"], ["y"])],
        [helper.make_tensor_value_info("x", f64, [2, 3])],
        [helper.make_tensor_value_info("y", f64, [2, 3])],
        [numpy_helper.from_array(w, "W")],
    )
    module = graphc.onnx.load(model)
    assert dict(module.named_parameters())["W"].dtype == np.float64
    x = np.full((2, 3), 1 / 3)
    np.testing.assert_array_equal(graphc.compile(module, x, backend="reference")(x), w * x)
