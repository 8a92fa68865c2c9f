"""ONNX Attention on float16 and bfloat16 inputs (graphc/onnx/ops/attention.py) against onnx's
reference implementation run in the inputs' 16-bit dtype, as the node tests' expected values are
made: every step of the reference rounds to the 16-bit dtype, and graphc rounds at those points (to
the node tests' rtol 1e-3, below one bfloat16 ulp); float32 graphs keep no rounding casts."""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ml_dtypes = pytest.importorskip("ml_dtypes")

from onnx import TensorProto, helper  # noqa: E402
from onnx.reference.ops.op_attention import _compute_attention  # noqa: E402

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.tracing import trace  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
_ELEM = {
    np.dtype(np.float16): TensorProto.FLOAT16,
    BF16: TensorProto.BFLOAT16,
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.bool_): TensorProto.BOOL,
}
_OUTPUTS = ("Y", "present_key", "present_value", "qk")


def _model(inputs: list, outputs: list, opset: int, **attrs):
    """A one-node Attention model; ``inputs`` are (name, array or None) in the node's order."""
    names = [n if a is not None else "" for n, a in inputs]
    while not names[-1]:
        names.pop()
    given = [(n, a) for n, a in inputs if a is not None]
    dtype = _ELEM[given[0][1].dtype]
    graph = helper.make_graph(
        [helper.make_node("Attention", names, outputs, **attrs)],
        "attention",
        [helper.make_tensor_value_info(n, _ELEM[a.dtype], a.shape) for n, a in given],
        [helper.make_tensor_value_info(n, dtype, None) for n in outputs if n],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model, [a for _, a in given]


def _case(dtype, seed=0, b=2, hq=4, hkv=2, s=3, kv=6, d=8, past=0, mask=None, nonpad=None):
    """Random inputs in [0, 1) (as onnx's node tests draw them) in the node's input order."""
    rng = np.random.default_rng(seed)

    def rand(*shape):
        return rng.random(shape).astype(dtype)

    return [
        ("Q", rand(b, hq, s, d)),
        ("K", rand(b, hkv, kv, d)),
        ("V", rand(b, hkv, kv, d)),
        ("attn_mask", None if mask is None else rand(*mask)),
        ("past_key", rand(b, hkv, past, d) if past else None),
        ("past_value", rand(b, hkv, past, d) if past else None),
        ("nonpad_kv_seqlen", None if nonpad is None else np.array(nonpad, dtype=np.int64)),
    ]


def _reference(inputs: list, **attrs) -> list:
    """onnx's reference Attention in the inputs' own dtype (no widening)."""
    kw = {n: a for n, a in inputs if a is not None}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return list(_compute_attention(kw.pop("Q"), kw.pop("K"), kw.pop("V"), **kw, **attrs))


def _run(model, arrays) -> list:
    out = graphc.compile(graphc.onnx.load(model), *arrays, backend="cpu")(*arrays)
    return [np.asarray(o) for o in out] if isinstance(out, (tuple, list)) else [np.asarray(out)]


# (case keyword arguments, node attributes, outputs, opset)
CASES = [
    (dict(), dict(is_causal=1), ["Y"], 23),
    # grouped-query attention, a float mask shorter than the keys, softcap, the biased scores
    (dict(mask=(3, 5)), dict(softcap=2.5, qk_matmul_output_mode=2), ["Y", "", "", "qk"], 23),
    # a past cache, an explicit scale, the probabilities
    (dict(past=3), dict(is_causal=1, scale=0.7, qk_matmul_output_mode=3), list(_OUTPUTS), 23),
    # padding (external cache) with a causal frontier per batch entry
    (dict(nonpad=[4, 6], mask=(2, 4, 3, 6)), dict(is_causal=1), ["Y"], 24),
    # the softmax computed in float32, the rest rounded
    (dict(), dict(softmax_precision=1, softcap=1.5), ["Y"], 23),
]


@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float16)], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kw, attrs, outputs, opset", CASES)
def test_16_bit_attention_rounds_where_the_reference_rounds(dtype, kw, attrs, outputs, opset):
    inputs = _case(dtype, **kw)
    model, arrays = _model(inputs, outputs, opset, **attrs)
    expected = [e for e, name in zip(_reference(inputs, **attrs), _OUTPUTS) if name in outputs]
    got = _run(model, arrays)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        np.testing.assert_allclose(g.astype(np.float32), e.astype(np.float32), rtol=1e-3, atol=1e-7)


def test_long_bfloat16_rows_are_summed_once():
    """Past the sequential-sum limit the bfloat16 row sum is a float32 sum rounded once: within a
    bfloat16 rounding or two of the float32 reference."""
    inputs = _case(BF16, hq=2, hkv=1, s=2, kv=80, d=4)
    model, arrays = _model(inputs, ["Y"], 23)
    wide = [(n, None if a is None else a.astype(np.float32)) for n, a in inputs]
    (got,) = _run(model, arrays)
    np.testing.assert_allclose(got.astype(np.float32), _reference(wide)[0], rtol=2e-2, atol=1e-3)


def test_float32_attention_has_no_rounding_casts():
    inputs = _case(np.dtype(np.float32), mask=(3, 6))
    model, arrays = _model(inputs, ["Y"], 23, softcap=2.0)
    traced = trace(graphc.onnx.load(model), *arrays)
    assert not [n for n in traced.nodes if n.op == "cast"]
    got = _run(model, arrays)[0]
    expected = _reference([(n, None if a is None else a.astype(np.float64)) for n, a in inputs], softcap=2.0)
    np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-6)


def test_negative_scale_keeps_its_sign():
    """The reference's sqrt(scale) is NaN for a negative scale; graphc puts the sign on Q: the float64
    softmax(scale * q @ k^T) @ v to bfloat16 precision."""
    inputs = _case(BF16, hq=2, hkv=2, s=2, kv=4, d=4)
    model, arrays = _model(inputs, ["Y"], 23, scale=-0.5)
    q, k, v = (a.astype(np.float64) for a in arrays)
    z = -0.5 * q @ np.swapaxes(k, -1, -2)
    p = np.exp(z - z.max(-1, keepdims=True))
    expected = (p / p.sum(-1, keepdims=True)) @ v
    (got,) = _run(model, arrays)
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=2e-2, atol=1e-2)
