"""quantize_static / quantize_dynamic and the quantize_matmuls pass, against a NumPy float64 oracle
that quantizes the same way (ONNX's formulas, written out here independently)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import nn
from graphc.ir import Graph, GraphcError, TensorType
from graphc.kernels.reference import execute
from graphc.passes.quantize import quantize_matmuls
from graphc.quantization import quantize_dynamic, quantize_static


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(12, 24)
        self.out = nn.Linear(24, 5)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def _q(x, scale, zero, lo, hi):
    return np.clip(np.rint(x / scale) + zero, lo, hi)


def _weight_q(w: np.ndarray, per_channel: bool) -> np.ndarray:
    """Dequantized int8 symmetric weights of an [out, in] matrix (float64)."""
    w = w.astype(np.float64)
    amax = np.abs(w).max(axis=1, keepdims=True) if per_channel else np.abs(w).max()
    scale = np.float32(amax / 127.0).astype(np.float64)
    return _q(w.astype(np.float32) / scale.astype(np.float32), 1.0, 0, -128, 127) * scale


def _act_q(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = np.float32((hi - lo) / 255.0)
    zero = np.clip(np.rint(-lo / float(scale)), 0, 255)
    q = _q(x.astype(np.float32) / scale, 1.0, zero, 0, 255)
    return (q - zero) * np.float64(scale)


def _oracle(m: MLP, x: np.ndarray, ranges, per_channel: bool) -> np.ndarray:
    w1, b1 = np.asarray(m.hidden.weight), np.asarray(m.hidden.bias)
    w2, b2 = np.asarray(m.out.weight), np.asarray(m.out.bias)
    (lo1, hi1), (lo2, hi2) = ranges(x, None)
    h = np.maximum(_act_q(x, lo1, hi1) @ _weight_q(w1, per_channel).T + b1, 0)
    (lo2, hi2) = ranges(x, h)[1]
    return _act_q(h.astype(np.float32), lo2, hi2) @ _weight_q(w2, per_channel).T + b2


def _float_hidden(m: MLP, x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ np.asarray(m.hidden.weight).T + np.asarray(m.hidden.bias), 0)


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_quantize_static_matches_the_oracle_and_uses_the_int8_gemm(per_channel, method):
    rng = np.random.default_rng(1)
    graphc.manual_seed(1)  # the model's weights, whatever ran before in this process
    m = MLP()
    x = rng.standard_normal((8, 12)).astype(np.float32)
    cal = [rng.standard_normal((8, 12)).astype(np.float32) for _ in range(3)]
    plan = quantize_static(m, cal, x, per_channel=per_channel, method=method, percentile=99.0)
    counts = plan.graph.op_counts()
    # Each layer is one qlinear (GEMM + epilogue); the hidden one also folds bias, ReLU and the
    # next layer's quantize, so the only other kernel is the input's quantize.
    assert {op: k for op, k in counts.items() if op != "const"} == {"quantize": 1, "qlinear": 2}

    cal_x = np.concatenate(cal)
    cal_h = _float_hidden(m, cal_x).astype(np.float32)

    def stat(v):
        return (v.min(), v.max()) if method == "minmax" else (np.percentile(v, 1.0), np.percentile(v, 99.0))

    ranges = lambda x, h: (stat(cal_x), stat(cal_h))  # noqa: E731
    want = _oracle(m, x, ranges, per_channel)
    np.testing.assert_allclose(plan(x), want, rtol=1e-4, atol=1e-4)
    # ... and it is a quantization of the float model (minmax clips nothing: a few steps off at most).
    exact = graphc.compile(m, x)(x)
    if method == "minmax":
        assert np.abs(plan(x) - exact).max() < 0.05 * np.abs(exact).max()


def test_quantize_dynamic_measures_each_call():
    rng = np.random.default_rng(2)
    m = MLP()
    x = rng.standard_normal((8, 12)).astype(np.float32)
    plan = quantize_dynamic(m, x)
    assert plan.graph.op_counts().get("qlinear") == 2
    for scale in (1.0, 30.0):
        xs = (x * scale).astype(np.float32)

        def ranges(x_, h, xs=xs):
            h = _float_hidden(m, xs) if h is None else h
            return (xs.min(), xs.max()), (h.min(), h.max())

        np.testing.assert_allclose(plan(xs), _oracle(m, xs, ranges, True), rtol=1e-4, atol=1e-4 * scale)


def test_quantized_plan_file_stores_int8_weights(tmp_path):
    rng = np.random.default_rng(3)
    m = MLP()
    x = rng.standard_normal((4, 12)).astype(np.float32)
    plan = quantize_static(m, [x], x)
    matrices = [v.dtype for v in plan.graph.inputs if v.type.rank == 2 and plan.graph.kinds[v.name] != "data"]
    assert matrices == ["i8", "i8"]  # no float weight matrix left
    path = tmp_path / "q.gcp"
    plan.save(str(path))
    loaded = graphc.load_plan(str(path))
    np.testing.assert_array_equal(loaded(x), plan(x))
    assert [v.dtype for v in loaded.graph.inputs if v.type.rank == 2 and v.name != "x"] == ["i8", "i8"]


def test_the_pass_lowers_qdq_matmuls_exactly():
    """matmul(dequantize(qa), dequantize(qw).T) -> qlinear, on a 3-D activation with a
    nonzero activation zero point; equal to the float64 product of the dequantized operands."""
    rng = np.random.default_rng(4)
    qa = rng.integers(0, 256, (2, 3, 16)).astype(np.uint8)
    qw = rng.integers(-128, 128, (7, 16)).astype(np.int8)
    sa, za = np.float32(0.05), np.uint8(131)
    sw = rng.uniform(0.01, 0.1, (7, 1)).astype(np.float32)
    g = Graph("qdq")
    a = g.add_input("qa", TensorType.of(qa))
    consts = {"sa": sa, "za": za, "qw": qw, "sw": sw, "zw": np.int8(0)}
    c = {k: g.add_input(k, TensorType.of(np.asarray(v)), "const", np.asarray(v)) for k, v in consts.items()}
    x = g.op("dequantize", a, c["sa"], c["za"])
    w = g.op("transpose", g.op("dequantize", c["qw"], c["sw"], c["zw"]), perm=(1, 0))
    g.add_output(g.op("matmul", x, w))
    (before,) = execute(g, {"qa": qa})
    lowered = quantize_matmuls(g.copy())
    assert "matmul" not in lowered.op_counts() and lowered.op_counts()["qlinear"] == 1
    (after,) = execute(lowered, {"qa": qa})
    want = (qa.astype(np.float64) - 131) * 0.05 @ (qw.astype(np.float64) * sw).T
    np.testing.assert_allclose(after, want, rtol=1e-6)
    np.testing.assert_allclose(before, want, rtol=1e-5)
    plan = graphc.compile_graph(g, passes_=[quantize_matmuls, *graphc.passes.default_pipeline()])
    np.testing.assert_allclose(plan(qa), want, rtol=1e-6)


def test_the_pass_leaves_nonsymmetric_weights_alone():
    g = Graph("qdq")
    a = g.add_input("qa", TensorType((4, 8), "i8"))
    s = g.add_input("s", TensorType((), "f32"), "const", np.float32(0.5))
    z = g.add_input("z", TensorType((), "i8"), "const", np.int8(3))
    qw = g.add_input("qw", TensorType((8, 2), "i8"), "const", np.ones((8, 2), np.int8))
    g.add_output(g.op("matmul", g.op("dequantize", a, s, z), g.op("dequantize", qw, s, z)))
    assert "qlinear" not in quantize_matmuls(g).op_counts()


def test_bad_arguments_are_graphc_errors():
    m = MLP()
    x = np.zeros((2, 12), np.float32)
    with pytest.raises(GraphcError, match="method must be one of"):
        quantize_static(m, [x], x, method="kl")
    with pytest.raises(GraphcError, match="calibration_batches is empty"):
        quantize_static(m, [], x)
    with pytest.raises(GraphcError, match="calibration batch 0 has 2 arrays"):
        quantize_static(m, [(x, x)], x)


def _qdq_layer(rng: np.random.Generator, m: int = 8, k: int = 96, n: int = 20):
    """A graph input qa (u8) through matmul(dequantize(qa), dequantize(qw).T) + bias, and its feeds."""
    qa = rng.integers(0, 256, (m, k)).astype(np.uint8)
    consts = {
        "sa": np.float32(0.02),
        "za": np.uint8(100),
        "qw": rng.integers(-128, 128, (n, k)).astype(np.int8),
        "sw": rng.uniform(0.001, 0.01, (n, 1)).astype(np.float32),
        "zw": np.int8(0),
        "bias": rng.uniform(-1, 1, n).astype(np.float32),
        "s2": np.float32(0.05),
        "z2": np.uint8(3),
    }
    g = Graph("layer")
    a = g.add_input("qa", TensorType.of(qa))
    c = {
        k_: g.add_input(k_, TensorType.of(np.asarray(v)), "const", np.asarray(v)) for k_, v in consts.items()
    }
    w = g.op("transpose", g.op("dequantize", c["qw"], c["sw"], c["zw"]), perm=(1, 0))
    y = g.op("add", g.op("matmul", g.op("dequantize", a, c["sa"], c["za"]), w), c["bias"])
    return g, y, c, qa


def test_the_pass_folds_bias_relu_and_the_next_quantize_into_one_qlinear():
    g, y, c, qa = _qdq_layer(np.random.default_rng(5))
    zero = g.op("const", value=0.0, dtype="f32")
    g.add_output(g.op("quantize", g.op("where", g.op("le", y, zero), zero, y), c["s2"], c["z2"]))
    (want,) = execute(g, {"qa": qa})
    lowered = quantize_matmuls(g.copy())
    ops = [n for n in lowered.nodes if n.op not in ("const", "cast", "sum", "mul", "reshape")]
    assert [(n.op, n.attrs["relu"], n.output.dtype) for n in ops] == [("qlinear", True, "u8")]
    (got,) = execute(lowered, {"qa": qa})
    plan = graphc.compile_graph(g, passes_=[quantize_matmuls, *graphc.passes.default_pipeline()])
    assert plan.graph.op_counts() == {"qlinear": 1}
    np.testing.assert_array_equal(plan(qa), got)  # the CPU kernel, bit for bit
    assert 5 < len(np.unique(want)) and np.abs(got.astype(int) - want).max() <= 1  # float rounding
    # Against a float64 oracle of the layer: within one quantization step.
    qw, sw, bias = (g.initializers[k] for k in ("qw", "sw", "bias"))
    h = (qa.astype(np.float64) - 100) * np.float64(np.float32(0.02)) @ (qw * sw.astype(np.float64)).T + bias
    oracle = np.clip(np.rint(np.maximum(h, 0) / np.float64(np.float32(0.05))) + 3, 0, 255)
    assert np.abs(got.astype(np.float64) - oracle).max() <= 1


def test_the_pass_does_not_fold_an_epilogue_another_op_reads():
    """The pre-activation is also an output: the bias folds in only once nothing else reads the
    GEMM's result, and the ReLU stays outside; one qlinear still, so the GEMM is not duplicated."""
    g, y, c, qa = _qdq_layer(np.random.default_rng(6))
    zero = g.op("const", value=0.0, dtype="f32")
    g.add_output(y)
    g.add_output(g.op("where", g.op("le", y, zero), zero, y))
    (pre, post) = execute(g, {"qa": qa})
    plan = graphc.compile_graph(g, passes_=[quantize_matmuls, *graphc.passes.default_pipeline()])
    assert plan.graph.op_counts().get("qlinear") == 1
    got_pre, got_post = plan(qa)
    np.testing.assert_allclose(got_pre, pre, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_post, np.where(got_pre <= 0, 0, got_pre))


class CNN(nn.Module):
    """Two convolutions (K = 27 and K = 36 < 64, a stride and no padding on the second) and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.c2 = nn.Conv2d(4, 8, kernel_size=3, stride=2)
        self.fc = nn.Linear(8 * 3 * 3, 5)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        return self.fc(F.relu(self.c2(h)).reshape(x.shape[0], -1))


def test_quantize_static_runs_convolutions_in_int8(tmp_path):
    rng = np.random.default_rng(7)
    m = CNN()
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    cal = [rng.standard_normal((6, 3, 16, 16)).astype(np.float32) for _ in range(2)]
    plan = quantize_static(m, cal, x)
    counts = plan.graph.op_counts()
    assert counts.get("qconv2d") == 2 and counts.get("qlinear") == 1
    assert not {"im2col", "matmul", "fused"} & set(counts)  # no float convolution left
    conv_weights = [
        v.dtype for v in plan.graph.inputs if v.type.rank == 4 and plan.graph.kinds[v.name] != "data"
    ]
    assert conv_weights == ["i8", "i8"]
    got, exact = plan(x), graphc.compile(m, x)(x)
    assert np.abs(got - exact).max() < 0.05 * np.abs(exact).max()
    # The plan's int8 kernels against the reference kernels on the same graph, bit for bit.
    ref = execute(plan.graph, {"x": x, **{k: np.asarray(v) for k, v in plan.graph.initializers.items()}})
    np.testing.assert_array_equal(got, ref[0])
    plan.save(str(tmp_path / "cnn.gcp"))
    np.testing.assert_array_equal(graphc.load_plan(str(tmp_path / "cnn.gcp"))(x), got)
