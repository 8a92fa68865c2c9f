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
    m = MLP()
    x = rng.standard_normal((8, 12)).astype(np.float32)
    cal = [rng.standard_normal((8, 12)).astype(np.float32) for _ in range(3)]
    plan = quantize_static(m, cal, x, per_channel=per_channel, method=method, percentile=99.0)
    counts = plan.graph.op_counts()
    assert counts.get("qmatmul") == 2 and "matmul" not in counts

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
    assert plan.graph.op_counts().get("qmatmul") == 2
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
    """matmul(dequantize(qa), dequantize(qw).T) -> qmatmul + epilogue, on a 3-D activation with a
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
    assert "matmul" not in lowered.op_counts() and lowered.op_counts()["qmatmul"] == 1
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
    assert "qmatmul" not in quantize_matmuls(g).op_counts()


def test_bad_arguments_are_graphc_errors():
    m = MLP()
    x = np.zeros((2, 12), np.float32)
    with pytest.raises(GraphcError, match="method must be one of"):
        quantize_static(m, [x], x, method="entropy")
    with pytest.raises(GraphcError, match="calibration_batches is empty"):
        quantize_static(m, [], x)
    with pytest.raises(GraphcError, match="calibration batch 0 has 2 arrays"):
        quantize_static(m, [(x, x)], x)
