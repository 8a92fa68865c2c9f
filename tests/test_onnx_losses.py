"""ONNX NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, checked against ONNX Runtime and
PyTorch (weights, ignore_index, reductions, N-D inputs, int32/int64 targets, PyTorch's export)."""

import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402

TF = torch.nn.functional
_ELEM = {np.float16: TensorProto.FLOAT16, np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}
_ELEM.update({np.int32: TensorProto.INT32, np.int64: TensorProto.INT64})


def loss_model(op, inputs, n_outputs=1, inits=(), opset=13, **attrs):
    """A one-node model of ``op`` over named arrays ``inputs`` (their dtypes and shapes)."""
    names = [n for n, _ in inputs] + [n for n, _ in inits]
    outs = ["loss", "log_prob"][:n_outputs]
    node = helper.make_node(op, names, outs, name="the_loss", **attrs)
    graph = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info(n, _ELEM[a.dtype.type], a.shape) for n, a in inputs],
        [helper.make_tensor_value_info(n, _ELEM[inputs[0][1].dtype.type], None) for n in outs],
        [numpy_helper.from_array(a, n) for n, a in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def ort_run(model, arrays):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})


def graphc_run(model, arrays, backend="reference"):
    out = graphc.compile(graphc.onnx.load(model), *arrays, backend=backend)(*arrays)
    return list(out) if isinstance(out, tuple) else [out]


def make_case(rng, shape, tdtype, ignore_index=None, weight=True):
    """Inputs [N, C, d...], targets with some equal to ``ignore_index``, positive class weights."""
    n, c, *rest = shape
    x = rng.standard_normal(shape).astype(np.float32)
    target = rng.integers(0, c, size=(n, *rest)).astype(tdtype)
    if ignore_index is not None:
        target.reshape(-1)[::3] = ignore_index
    w = (rng.random(c) + 0.5).astype(np.float32) if weight else None
    return x, target, w


def torch_loss(fn, x, target, w, ignore_index, reduction):
    """PyTorch's loss (float64) with ONNX's defaults: no ignore_index means none (-100 is unused)."""
    return fn(
        torch.from_numpy(x.astype(np.float64)),
        torch.from_numpy(target.astype(np.int64)),
        weight=None if w is None else torch.from_numpy(w.astype(np.float64)),
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction=reduction,
    ).numpy()


# (input shape, target dtype, ignore_index, with weights, reduction)
CASES = [
    ((4, 5), np.int64, None, False, "mean"),
    ((4, 5), np.int64, 2, True, "mean"),
    ((3, 4, 6), np.int32, 1, True, "mean"),
    ((3, 4, 6), np.int64, -1, False, "mean"),
    ((2, 3, 4, 5), np.int32, 7, True, "sum"),
    ((2, 3, 4, 5), np.int64, 0, False, "none"),
    ((2, 3, 2, 3, 2), np.int64, None, True, "none"),
]


@pytest.mark.parametrize("shape,tdtype,ii,weighted,reduction", CASES)
def test_nll_loss_matches_ort_and_torch(shape, tdtype, ii, weighted, reduction):
    rng = np.random.default_rng(len(shape) * 10 + (ii or 0))
    x, target, w = make_case(rng, shape, tdtype, ii, weighted)
    logp = np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True)).astype(np.float32)
    inputs = [("input", logp), ("target", target)] + ([("weight", w)] if weighted else [])
    attrs = {"reduction": reduction} | ({} if ii is None else {"ignore_index": ii})
    model = loss_model("NegativeLogLikelihoodLoss", inputs, opset=13, **attrs)
    arrays = [a for _, a in inputs]
    (got,) = graphc_run(model, arrays)
    (want,) = ort_run(model, arrays)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        got, torch_loss(TF.nll_loss, logp, target, w, ii, reduction), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("shape,tdtype,ii,weighted,reduction", CASES)
def test_softmax_cross_entropy_loss_and_log_prob(shape, tdtype, ii, weighted, reduction):
    rng = np.random.default_rng(len(shape) * 7 + (ii or 0))
    x, target, w = make_case(rng, shape, tdtype, ii, weighted)
    inputs = [("scores", x), ("labels", target)] + ([("weights", w)] if weighted else [])
    attrs = {"reduction": reduction} | ({} if ii is None else {"ignore_index": ii})
    model = loss_model("SoftmaxCrossEntropyLoss", inputs, n_outputs=2, **attrs)
    arrays = [a for _, a in inputs]
    got_loss, got_logp = graphc_run(model, arrays)
    want_loss, want_logp = ort_run(model, arrays)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_logp, want_logp, rtol=1e-5, atol=1e-6)
    expect = torch_loss(TF.cross_entropy, x, target, w, ii, reduction)
    np.testing.assert_allclose(got_loss, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        got_logp, torch.log_softmax(torch.from_numpy(x).double(), 1).numpy(), atol=1e-5
    )


def test_weighted_mean_divides_by_weights_of_kept_targets_on_cpu_kernels():
    """ignore_index and weights with "mean" on the CPU kernels, one output, weight an initializer."""
    x = np.array([[0.1, 0.5, -1.0], [2.0, 0.0, 0.3], [-0.4, 0.9, 0.2], [1.0, 1.0, 1.0]], np.float32)
    target = np.array([2, 1, 0, 1], np.int64)
    w = np.array([0.5, 2.0, 3.0], np.float32)
    model = loss_model("SoftmaxCrossEntropyLoss", [("x", x), ("t", target)], inits=[("w", w)], ignore_index=1)
    (got,) = graphc_run(model, [x, target], backend="cpu")
    logp = np.log(np.exp(x.astype(np.float64)) / np.exp(x.astype(np.float64)).sum(1, keepdims=True))
    expect = -(3.0 * logp[0, 2] + 0.5 * logp[2, 0]) / (3.0 + 0.5)  # targets 1 are ignored
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    np.testing.assert_allclose(got, ort_run(model, [x, target])[0], rtol=1e-5)


def test_float16_input_is_rounded_once():
    rng = np.random.default_rng(3)
    x, target, w = make_case(rng, (6, 4, 3), np.int64, 3, True)
    x16, w16 = x.astype(np.float16), w.astype(np.float16)
    model = loss_model("SoftmaxCrossEntropyLoss", [("x", x16), ("t", target), ("w", w16)], ignore_index=3)
    (got,) = graphc_run(model, [x16, target, w16])
    assert got.dtype == np.float16
    expect = torch_loss(TF.cross_entropy, x16.astype(np.float32), target, w16.astype(np.float32), 3, "mean")
    np.testing.assert_allclose(got.astype(np.float64), expect, rtol=2e-3)


def test_torch_export_of_cross_entropy_and_nll_loss_imports():
    class Losses(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.tensor([0.5, 1.0, 2.0, 1.5, 0.7]))

        def forward(self, x, t):
            ce = TF.cross_entropy(x, t, weight=self.w, ignore_index=2)
            nll = TF.nll_loss(torch.log_softmax(x, 1), t, reduction="none")
            return ce, nll

    rng = np.random.default_rng(5)
    x, target, _ = make_case(rng, (4, 5, 3), np.int64, 2, False)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(Losses(), (torch.from_numpy(x), torch.from_numpy(target)), buf, dynamo=False)
        except Exception as err:  # the TorchScript exporter is gone in this torch
            pytest.skip(f"torch.onnx.export(dynamo=False) failed: {type(err).__name__}")
    model = onnx.load_from_string(buf.getvalue())
    assert {n.op_type for n in model.graph.node} >= {"SoftmaxCrossEntropyLoss"}
    with torch.no_grad():
        want = [t.numpy() for t in Losses()(torch.from_numpy(x), torch.from_numpy(target))]
    got = graphc_run(model, [x, target])
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_all_targets_ignored_mean_is_nan_like_ort():
    x = np.zeros((2, 3), np.float32)
    target = np.array([1, 1], np.int64)
    model = loss_model("NegativeLogLikelihoodLoss", [("x", x), ("t", target)], ignore_index=1)
    (got,) = graphc_run(model, [x, target])
    assert np.isnan(got) and np.isnan(ort_run(model, [x, target])[0])


def _rng_inputs(shape=(3, 4)):
    rng = np.random.default_rng(0)
    x, target, _ = make_case(rng, shape, np.int64)
    return x, target


@pytest.mark.parametrize(
    "op,inputs,attrs,message",
    [
        ("NegativeLogLikelihoodLoss", None, {"reduction": "avg"}, "'reduction' must be one of"),
        ("SoftmaxCrossEntropyLoss", "rank1", {}, "rank >= 2"),
        ("SoftmaxCrossEntropyLoss", "bad_target", {}, "input 1 (target) must have shape [3]"),
        ("NegativeLogLikelihoodLoss", "float_target", {}, "must be int32 or int64"),
        ("NegativeLogLikelihoodLoss", "bad_weight", {}, "input 2 (weight) must have shape [4]"),
    ],
)
def test_invalid_nodes_raise_graphc_error_naming_the_node(op, inputs, attrs, message):
    x, target = _rng_inputs()
    arrays = {
        None: [("x", x), ("t", target)],
        "rank1": [("x", x[0]), ("t", target[:1].reshape(()))],
        "bad_target": [("x", x), ("t", target[:, None])],
        "float_target": [("x", x), ("t", target.astype(np.float32))],
        "bad_weight": [("x", x), ("t", target), ("w", np.ones(5, np.float32))],
    }[inputs]
    model = loss_model(op, arrays, **attrs)
    with pytest.raises(GraphcError, match="the_loss") as err:
        graphc_run(model, [a for _, a in arrays])
    assert message in str(err.value)


def test_label_out_of_range_is_a_graphc_error_at_run_time():
    x, target = _rng_inputs()
    target[1] = 9
    model = loss_model("NegativeLogLikelihoodLoss", [("x", x), ("t", target)], reduction="sum")
    with pytest.raises(GraphcError):
        graphc_run(model, [x, target])


def test_ignored_target_adds_nothing_even_at_minus_inf():
    """An ignored target's loss is 0 where its log-probability is -inf (not -inf * 0 = NaN)."""
    with np.errstate(divide="ignore"):
        logp = np.log(np.array([[0.0, 1.0], [0.5, 0.5], [0.25, 0.75]], np.float32))
    target = np.array([0, 1, 1], np.int64)  # target 0 of row 0 is ignored, its log-prob is -inf
    model = loss_model("NegativeLogLikelihoodLoss", [("x", logp), ("t", target)], ignore_index=0)
    (got,) = graphc_run(model, [logp, target])
    np.testing.assert_allclose(got, (np.log(2.0) - np.log(0.75)) / 2, rtol=1e-6)
    np.testing.assert_allclose(got, ort_run(model, [logp, target])[0], rtol=1e-6)
