"""ONNX Attention (opsets 23-25), RotaryEmbedding and SwiGLU import (graphc/onnx/ops/attention.py),
checked against onnx's NumPy reference evaluated in float64, ONNX Runtime (the opsets it runs) and
a direct float64 NumPy formula; the attention chain stitching into one fused node; gradients;
errors naming the node."""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference.ops.op_attention import _compute_attention  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc import passes  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402
from graphc.tracing import trace  # noqa: E402

_ELEM = {
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.bool_): TensorProto.BOOL,
}
_ATTN_INPUTS = ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen")


def one_node(op, inputs, outputs, opset, inits=(), **attrs):
    """A one-node model; ``inputs`` lists (name, array) in the node's input order (None: absent),
    ``inits`` names the inputs stored as initializers."""
    names = [name if arr is not None else "" for name, arr in inputs]
    while names and not names[-1]:
        names.pop()
    node = helper.make_node(op, names, outputs, name="the_node", **attrs)
    given = [(n, a) for n, a in inputs if a is not None]
    graph = helper.make_graph(
        [node],
        "t",
        [helper.make_tensor_value_info(n, _ELEM[a.dtype], a.shape) for n, a in given if n not in inits],
        [helper.make_tensor_value_info(n, _ELEM[given[0][1].dtype], None) for n in outputs if n],
        [numpy_helper.from_array(a, n) for n, a in given if n in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model, [a for n, a in given if n not in inits]


def graphc_run(model, arrays, backend="cpu"):
    out = graphc.compile(graphc.onnx.load(model), *arrays, backend=backend)(*arrays)
    return [np.asarray(o) for o in out] if isinstance(out, (tuple, list)) else [np.asarray(out)]


def ort_run(model, arrays):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), arrays)})


def reference64(inputs, n_out, **attrs):
    """onnx's reference Attention on the float64 widening of the float inputs."""
    kw = {k: (a.astype(np.float64) if a.dtype.kind == "f" else a) for k, a in inputs if a is not None}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        out = _compute_attention(kw.pop("Q"), kw.pop("K"), kw.pop("V"), **kw, **attrs)
    return list(out[:n_out])


def attention_case(
    seed=0, b=2, hq=4, hkv=2, s=3, kv=5, d=4, dv=6, past=0, mask=None, nonpad=None, dtype=np.float32
):
    """Random 4-D inputs in the node's order; ``mask`` is (shape, dtype)."""
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    arrays = {"Q": rand(b, hq, s, d), "K": rand(b, hkv, kv, d), "V": rand(b, hkv, kv, dv)}
    if mask is not None:
        shape, mdtype = mask
        arrays["attn_mask"] = rng.random(shape) > 0.3 if mdtype is bool else rand(*shape).astype(mdtype)
    if past:
        arrays["past_key"], arrays["past_value"] = rand(b, hkv, past, d), rand(b, hkv, past, dv)
    if nonpad is not None:
        arrays["nonpad_kv_seqlen"] = np.array(nonpad, np.int64)
    return [(n, arrays.get(n)) for n in _ATTN_INPUTS]


def to_3d(inputs, hq, hkv):
    """Q, K, V of a 4-D case as 3-D [batch, seq, heads * size]."""
    out = []
    for name, a in inputs:
        if name in ("Q", "K", "V"):
            a = a.transpose(0, 2, 1, 3).reshape(a.shape[0], a.shape[2], -1)
        out.append((name, a))
    return out


def check(got, expected, tol):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g.astype(np.float64), e, rtol=tol, atol=tol)


# (case keyword arguments, node attributes, outputs, opset)
REFERENCE_CASES = [
    # causal grouped-query attention decoding with a past key/value cache: offset = past length
    (dict(past=6, s=2, kv=2), dict(is_causal=1), ["Y", "present_key", "present_value"], 23),
    (dict(past=4, mask=((2, 1, 3, 9), bool)), dict(is_causal=1), ["Y", "present_key", "present_value"], 24),
    # a float mask shorter than the total length (padded with -inf), softcap, every qk output mode
    (dict(mask=((3, 4), np.float32)), dict(softcap=1.5, qk_matmul_output_mode=2), ["Y", "", "", "qk"], 23),
    (dict(mask=((4, 3, 5), bool)), dict(qk_matmul_output_mode=3, scale=0.3), ["Y", "", "", "qk"], 23),
    (dict(hq=2, hkv=2), dict(softcap=2.0, qk_matmul_output_mode=1), ["Y", "", "", "qk"], 23),
    # masks broadcast along the query axis (rank 1; per query head), grouped-query
    (dict(mask=((5,), bool)), dict(), ["Y"], 23),
    (dict(mask=((2, 4, 1, 5), np.float32)), dict(), ["Y"], 23),
    # nonpad_kv_seqlen (external cache: bottom-right causal per batch entry), with a bool mask
    (dict(nonpad=[5, 3], kv=5, s=2), dict(is_causal=1), ["Y"], 24),
    (dict(nonpad=[4, 1], mask=((2, 1, 3, 4), bool)), dict(), ["Y"], 24),
    # fully masked rows (all-False mask rows, negative offset) give zeros
    (dict(nonpad=[2, 1], s=4, kv=4), dict(is_causal=1), ["Y"], 24),
    (dict(mask=((3, 5), bool)), dict(softmax_precision=11), ["Y"], 24),
    # opset 25 windows
    (dict(past=3), dict(is_causal=1, left_window_size=2), ["Y", "present_key", "present_value"], 25),
    (dict(nonpad=[5, 4]), dict(left_window_size=1, right_window_size=0), ["Y"], 25),
]


@pytest.mark.parametrize("kw, attrs, outputs, opset", REFERENCE_CASES)
def test_attention_matches_the_reference_in_float64(kw, attrs, outputs, opset):
    inputs = attention_case(**kw)
    model, arrays = one_node("Attention", inputs, outputs, opset, **attrs)
    expected = reference64(inputs, 4, **attrs)
    wanted = [e for e, o in zip(expected, ["Y", "present_key", "present_value", "qk"]) if o in outputs]
    check(graphc_run(model, arrays), wanted, 1e-5)


def test_fully_masked_rows_are_zero():
    inputs = attention_case(mask=((3, 5), bool))
    inputs[3] = ("attn_mask", np.array([[True] * 5, [False] * 5, [False, True, False, False, False]]))
    model, arrays = one_node("Attention", inputs, ["Y", "", "", "qk"], 23, qk_matmul_output_mode=3)
    y, probs = graphc_run(model, arrays)
    assert np.all(np.isfinite(y)) and not y[:, :, 1].any() and not probs[:, :, 1].any()
    assert np.allclose(probs[:, :, 2, 1], 1.0) and np.allclose(probs.sum(-1)[:, :, [0, 2]], 1.0)
    model, arrays = one_node("Attention", inputs, ["Y", "", "", "qk"], 23, qk_matmul_output_mode=2)
    expected = reference64(inputs, 4, qk_matmul_output_mode=2)
    check(graphc_run(model, arrays), [expected[0], expected[3]], 1e-5)
    assert np.all(np.isneginf(graphc_run(model, arrays)[1][:, :, 1]))


ORT_CASES = [
    (dict(hq=6, hkv=3, past=4, s=1, kv=1), dict(is_causal=1), ["Y", "present_key", "present_value"], False),
    (dict(hq=4, hkv=1, mask=((1, 4, 3, 5), np.float32)), dict(scale=0.25), ["Y"], False),
    (dict(hq=4, hkv=2, past=2, mask=((3, 7), bool)), dict(), ["Y", "present_key", "present_value"], True),
    (dict(hq=2, hkv=2, kv=3, s=3), dict(is_causal=1, softcap=3.0), ["Y"], True),
    (dict(dtype=np.float16, mask=((3, 5), np.float16)), dict(is_causal=1), ["Y"], False),
    # mode 0 is the raw product even with softcap (the spec and ONNX Runtime; onnx's reference
    # evaluator gives the softcapped one)
    (dict(hq=2, hkv=2), dict(softcap=1.0), ["Y", "", "", "qk"], False),
]


@pytest.mark.parametrize("kw, attrs, outputs, three_d", ORT_CASES)
def test_attention_matches_onnxruntime(kw, attrs, outputs, three_d):
    inputs = attention_case(**kw)
    if three_d:
        inputs = to_3d(inputs, kw["hq"], kw["hkv"])
        attrs = dict(attrs, q_num_heads=kw["hq"], kv_num_heads=kw["hkv"])
    model, arrays = one_node("Attention", inputs, outputs, 23, **attrs)
    expected = ort_run(model, arrays)
    got = graphc_run(model, arrays)
    assert [g.dtype for g in got] == [e.dtype for e in expected]
    check(got, expected, 2e-3 if kw.get("dtype") == np.float16 else 1e-5)


@pytest.mark.parametrize("shape", [(5,), (2, 4, 1, 5)])
def test_grouped_query_with_a_constant_mask_broadcast_along_queries(shape):
    inputs = attention_case(mask=(shape, np.float32))
    model, arrays = one_node("Attention", inputs, ["Y"], 23, inits=("attn_mask",))
    check(graphc_run(model, arrays, "reference"), reference64(inputs, 1), 1e-5)


@pytest.mark.parametrize("shape", [(1, 5), (2, 4, 1, 5)])
def test_causal_with_a_mask_broadcast_along_queries(shape):
    """The mask broadcasts to [batch, q_heads, q_len, total] as the spec says (onnx's reference sizes
    its causal mask by the mask's query axis, ONNX Runtime refuses it): the same as the mask
    broadcast beforehand."""
    inputs = attention_case(mask=(shape, np.float32))
    model, arrays = one_node("Attention", inputs, ["Y"], 23, is_causal=1)
    mask = np.broadcast_to(inputs[3][1], shape[:-2] + (3, 5))
    expected = reference64(inputs[:3] + [("attn_mask", mask)] + inputs[4:], 1, is_causal=1)
    check(graphc_run(model, arrays), expected, 1e-5)


def test_static_mask_folds_and_the_chain_stitches():
    """A causal mask known while converting is one constant bias, no fully-masked-row guard is left
    (no row is fully masked), and the matmul, softmax, matmul chain becomes one fused attention."""
    inputs = attention_case(hq=4, hkv=2, mask=((3, 5), bool))
    model, arrays = one_node("Attention", inputs, ["Y"], 23, inits=("attn_mask",), is_causal=1)
    m = graphc.onnx.load(model)
    traced = trace(m, *arrays)
    assert not any(n.op in ("where", "eq") for n in traced.nodes)
    optimized = passes.optimize(traced)
    assert [n for n in optimized.nodes if n.op == "fused" and n.attrs["kind"] == "attention"]
    expected = reference64([(n, a) for n, a in inputs], 1, is_causal=1)
    check(graphc_run(model, arrays), expected, 1e-5)


def test_gradients_flow_to_query_key_and_value():
    """compile_train's gradients of sum(Y * W) for Q, K, V initializers (float64; softcap, a run-time
    bool mask with a fully masked row) against central differences of the float64 reference."""
    inputs = attention_case(hq=2, hkv=1, s=3, kv=3, d=2, dv=2, mask=((3, 3), bool), dtype=np.float64)
    mask = np.array([[True, False, True], [False, False, False], [True, True, False]])
    inputs[3] = ("attn_mask", mask)
    model, _ = one_node("Attention", inputs, ["Y"], 23, inits=("Q", "K", "V"), softcap=2.0)
    m = graphc.onnx.load(model)
    w = np.random.default_rng(3).standard_normal((2, 2, 3, 2))
    pname = {onnx_name: p for p, onnx_name in m.onnx_names.items()}
    before = {n: np.array(getattr(m, pname[n]).numpy()) for n in ("Q", "K", "V")}
    loss = graphc.compile_train(
        m, lambda y, target: (y * target).sum(), graphc.optim.SGD(lr=1.0), mask, w, backend="reference"
    )(mask, w)
    values = dict(inputs)
    assert np.isclose(float(np.asarray(loss)), np.sum(reference64(inputs, 1, softcap=2.0)[0] * w))
    for n in ("Q", "K", "V"):
        grad = before[n] - np.asarray(getattr(m, pname[n]).numpy())
        numeric = np.zeros_like(grad)
        for idx in np.ndindex(grad.shape):
            shifted = []
            for eps in (1e-6, -1e-6):
                arr = values[n].copy()
                arr[idx] += eps
                shifted.append(np.sum(reference64(list({**values, n: arr}.items()), 1, softcap=2.0)[0] * w))
            numeric[idx] = (shifted[0] - shifted[1]) / 2e-6
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- RotaryEmbedding
def rope64(x, cos, sin, pos=None, interleaved=0, rotary_embedding_dim=0, num_heads=0):
    from onnx.reference.ops.op_rotary_embedding import rotary_embedding

    f64 = [a.astype(np.float64) for a in (x, cos, sin)]
    return rotary_embedding(
        *f64, pos, interleaved=interleaved, rotary_embedding_dim=rotary_embedding_dim, num_heads=num_heads
    )


@pytest.mark.parametrize(
    "three_d, interleaved, rotary_dim, with_pos",
    [(False, 0, 0, True), (True, 1, 4, True), (False, 1, 0, False), (True, 0, 2, False)],
)
def test_rotary_embedding_matches_the_reference(three_d, interleaved, rotary_dim, with_pos):
    rng = np.random.default_rng(1)
    b, h, s, d = 2, 3, 4, 6
    half = (rotary_dim or d) // 2
    x = rng.standard_normal((b, s, h * d) if three_d else (b, h, s, d)).astype(np.float32)
    table = (10, half) if with_pos else (b, s, half)
    angles = rng.uniform(0, 6.3, table)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    pos = rng.integers(0, 10, (b, s)).astype(np.int64) if with_pos else None
    attrs = dict(interleaved=interleaved, rotary_embedding_dim=rotary_dim)
    if three_d:
        attrs["num_heads"] = h
    inputs = [("X", x), ("cos_cache", cos), ("sin_cache", sin), ("position_ids", pos)]
    model, arrays = one_node("RotaryEmbedding", inputs, ["Y"], 23, **attrs)
    expected = rope64(x, cos, sin, pos, **attrs)
    check(graphc_run(model, arrays), [expected], 1e-6)
    check(graphc_run(model, arrays), ort_run(model, arrays), 1e-6)


def test_swiglu_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = (
        rng.standard_normal((2, 3, 8)).astype(np.float32),
        rng.standard_normal((2, 3, 8)).astype(np.float32),
    )
    model, arrays = one_node("SwiGLU", [("A", a), ("B", b)], ["Y"], 28, alpha=1.5)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    check(graphc_run(model, arrays), [a64 / (1 + np.exp(-1.5 * a64)) * b64], 1e-6)


# ---------------------------------------------------------------- errors
ERROR_CASES = [
    (dict(hq=3, hkv=2), {}, 23, "not a multiple"),
    (dict(mask=((3, 6), np.float32)), {}, 23, "attn_mask"),
    (dict(mask=((2, 3, 3, 5), bool)), {}, 23, "attn_mask"),
    (dict(nonpad=[1, 2], past=2), {}, 24, "cannot be combined"),
    (dict(nonpad=[1, 2]), {}, 23, "at most 6 inputs"),
    (dict(), dict(softmax_precision=7), 23, "softmax_precision"),
    (dict(), dict(qk_matmul_output_mode=4), 23, "qk_matmul_output_mode"),
    (dict(), dict(softcap=-1.0), 23, "softcap"),
    (dict(), dict(q_num_heads=4, kv_num_heads=2), 25, "must not be given"),
    (dict(), dict(q_num_heads=2), 23, "differ"),
]


@pytest.mark.parametrize("kw, attrs, opset, message", ERROR_CASES)
def test_attention_errors_name_the_node(kw, attrs, opset, message):
    inputs = attention_case(**kw)
    model, _ = one_node("Attention", inputs, ["Y"], opset, **attrs)
    with pytest.raises(GraphcError, match=message) as err:
        graphc_run(model, [a for _, a in inputs if a is not None], "reference")
    assert "the_node" in str(err.value)


def test_attention_error_cases_without_heads_and_past_alone():
    inputs = to_3d(attention_case(), 4, 2)
    model, arrays = one_node("Attention", inputs, ["Y"], 23)
    with pytest.raises(GraphcError, match="q_num_heads and kv_num_heads"):
        graphc_run(model, arrays, "reference")
    inputs = attention_case(past=2)
    inputs[5] = ("past_value", None)
    model, arrays = one_node("Attention", inputs, ["Y"], 23)
    with pytest.raises(GraphcError, match="together"):
        graphc_run(model, arrays, "reference")


def test_rotary_and_swiglu_errors_name_the_node():
    x = np.zeros((1, 2, 3, 6), np.float32)
    cos = np.zeros((1, 3, 2), np.float32)
    model, arrays = one_node("RotaryEmbedding", [("X", x), ("cos_cache", cos), ("sin_cache", cos)], ["Y"], 23)
    with pytest.raises(GraphcError, match="the_node.*caches must be"):
        graphc_run(model, arrays, "reference")
    model, arrays = one_node(
        "RotaryEmbedding", [("X", x[0]), ("cos_cache", cos), ("sin_cache", cos)], ["Y"], 23, num_heads=4
    )
    with pytest.raises(GraphcError, match="the_node.*num_heads"):
        graphc_run(model, arrays, "reference")
    model, arrays = one_node("SwiGLU", [("A", x), ("B", x[:, :1])], ["Y"], 28)
    with pytest.raises(GraphcError, match="the_node.*one dtype and shape"):
        graphc_run(model, arrays, "reference")
