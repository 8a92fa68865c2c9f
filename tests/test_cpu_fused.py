"""Fused nodes on the numba CPU backend against the reference (which runs the body node by node).

Bodies are built directly with ir.Graph/add_fused: softmax, layer_norm, the GELU chain of the
benchmark, matmul epilogues, multi-output pointwise bodies, the row-loss pattern of
cross-entropy, inline dropout RNG, a body the generators cannot handle (fallback), and one
large case of each kind to run the prange variants.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphc.ir import Graph, TensorType
from graphc.kernels import cpu
from graphc.kernels.reference import run_node

RNG = np.random.default_rng(1)
NP = {"f32": np.float32, "f64": np.float64, "i64": np.int64, "bool": np.bool_}


def fused(build, types, kind="pointwise", consts=None, prefix="p"):
    """A fused node whose body ``build(body, *params)`` returns its outputs."""
    body = Graph("body")
    params = [body.add_input(f"{prefix}{k}", TensorType(s, d)) for k, (s, d) in enumerate(types)]
    extra = [body.add_input(f"c{k}", TensorType.of(a), "const", a) for k, a in enumerate(consts or [])]
    for v in build(body, *params, *extra):
        body.add_output(v)
    g = Graph()
    ins = [g.add_input(f"x{k}", TensorType(s, d)) for k, (s, d) in enumerate(types)]
    return g.add_fused(ins, body, {"kind": kind})


def data(types):
    """Random inputs for (shape, dtype) types."""
    out = []
    for shape, dtype in types:
        if dtype == "i64":
            out.append(np.array(RNG.integers(0, 100), np.int64).reshape(shape))
        else:
            out.append(RNG.standard_normal(shape).astype(NP[dtype]))
    return out


def check(node, arrays, rtol=None, atol=None):
    """The CPU kernel's outputs match the reference's."""
    outs = [np.full(v.shape, 3, v.type.np_dtype) for v in node.outputs]
    cpu.compile_node(node)(*arrays, *outs)
    for got, want, v in zip(outs, run_node(node, arrays), node.outputs):
        if v.dtype in ("f32", "f64"):
            default = (1e-5, 1e-6) if v.dtype == "f32" else (1e-12, 1e-12)
            np.testing.assert_allclose(got, want, rtol=rtol or default[0], atol=atol or default[1])
        else:
            np.testing.assert_array_equal(got, want)
    return outs


def c(body, value, dtype="f32"):
    """A scalar constant node in the body."""
    return body.op("const", value=value, dtype=dtype)


def softmax(b, x):
    m = b.op("max", x, axes=(len(x.shape) - 1,), keepdims=True)
    e = b.op("exp", b.op("sub", x, m))
    return [b.op("div", e, b.op("sum", e, axes=(len(x.shape) - 1,), keepdims=True))]


def layer_norm(b, x, w, bias, axes=(1,), eps=1e-5):
    n = float(np.prod([x.shape[a] for a in axes]))
    dt = x.dtype
    mean = b.op("mul", b.op("sum", x, axes=axes, keepdims=True), c(b, 1 / n, dt))
    d = b.op("sub", x, mean)
    var = b.op("mul", b.op("sum", b.op("mul", d, d), axes=axes, keepdims=True), c(b, 1 / n, dt))
    inv = b.op("rsqrt", b.op("add", var, c(b, eps, dt)))
    return [b.op("add", b.op("mul", b.op("mul", d, inv), w), bias)]


def gelu(b, x):
    dt = x.dtype
    t = b.op("erf", b.op("mul", x, c(b, 1 / math.sqrt(2), dt)))
    return b.op("mul", b.op("mul", x, c(b, 0.5, dt)), b.op("add", t, c(b, 1.0, dt)))


def chain(b, x, bias, s, r):
    """The benchmark chain layer_norm(gelu(x + b) * s + r) (no affine)."""
    y = b.op("add", b.op("mul", gelu(b, b.op("add", x, bias)), s), r)
    n = float(y.shape[-1])
    mean = b.op("mul", b.op("sum", y, axes=(1,), keepdims=True), c(b, 1 / n))
    d = b.op("sub", y, mean)
    var = b.op("mul", b.op("sum", b.op("mul", d, d), axes=(1,), keepdims=True), c(b, 1 / n))
    return [b.op("mul", d, b.op("rsqrt", b.op("add", var, c(b, 1e-5))))]


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_softmax(dtype):
    types = [((6, 7), dtype)]
    x = data(types)[0] * 5
    check(fused(softmax, types, "reduction"), [x])


def test_softmax_rows_with_nan_and_infinities():
    # The row max keeps NumPy's NaN propagation (a NaN row stays NaN) through its vectorized form.
    types = [((4, 9), "f32")]
    x = data(types)[0]
    x[1, 3] = np.nan
    x[2, :] = -np.inf
    x[3, 5] = np.inf
    with np.errstate(invalid="ignore"):
        check(fused(softmax, types, "reduction"), [x])


def test_softmax_exp_of_values_below_the_row_max():
    # x - max(x) is never positive: the kernel uses the exp without overflow handling, which
    # must still give 0 below the float32 range and 1 at the maximum.
    types = [((3, 8), "f32")]
    node = fused(softmax, types, "reduction")
    assert "_exp_nonpos_f32(" in cpu.kernel_source(node)
    x = data(types)[0] * 30
    x[1, :4] = [0.0, -87.0, -88.0, -1e30]
    x[2, :] = np.float32(88.0)
    check(node, [x])


def test_softmax_rows_of_3d():
    types = [((2, 3, 7), "f32")]
    check(fused(softmax, types, "reduction"), data(types))


def test_layer_norm():
    types = [((6, 7), "f32"), ((7,), "f32"), ((7,), "f32")]
    node = fused(layer_norm, types, "reduction")
    src = cpu.kernel_source(node)
    assert src.count("for r in range") == 1  # one pass structure per row
    check(node, data(types))


def test_layer_norm_two_trailing_axes_partial_weight():
    # weight [4] over inner axes (3, 4): two inner loop groups and a flat scratch index
    types = [((2, 3, 4), "f32"), ((4,), "f32"), ((3, 1), "f32")]
    check(fused(lambda b, x, w, bb: layer_norm(b, x, w, bb, axes=(1, 2)), types, "reduction"), data(types))


def test_gelu_chain():
    types = [((6, 16), "f32"), ((16,), "f32"), ((16,), "f32"), ((6, 16), "f32")]
    check(fused(chain, types, "reduction"), data(types))


def test_gelu_chain_f64_uses_exact_erf():
    types = [((6, 16), "f64"), ((16,), "f64")]
    check(fused(lambda b, x, bias: [gelu(b, b.op("add", x, bias))], types), data(types))


def test_matmul_bias_relu_epilogue():
    types = [((5, 6), "f32"), ((6, 7), "f32"), ((7,), "f32")]

    def body(b, x, w, bias):
        return [b.op("maximum", b.op("add", b.op("matmul", x, w), bias), c(b, 0.0))]

    node = fused(body, types, "matmul")
    assert "np.matmul" in cpu.kernel_source(node)
    check(node, data(types))


def test_matmul_epilogue_with_raw_output_and_other_dtype():
    types = [((2, 5, 6), "f32"), ((6, 7), "f32"), ((7,), "f32")]

    def body(b, x, w, bias):
        m = b.op("matmul", x, w)
        return [b.op("gt", b.op("add", m, bias), c(b, 0.0)), m, m]

    check(fused(body, types, "matmul"), data(types))


def test_matmul_epilogue_into_scratch():
    # the only output has another dtype: the product goes to a scratch buffer (twice)
    types = [((5, 6), "f64"), ((6, 7), "f64")]
    node = fused(lambda b, x, w: [b.op("lt", b.op("matmul", x, w), c(b, 0.0, "f64"))], types, "matmul")
    kernel = cpu.compile_node(node)
    for _ in range(2):
        x, w = data(types)
        out = np.empty((5, 7), bool)
        kernel(x, w, out)
        np.testing.assert_array_equal(out, x @ w < 0)


def _prologue_node():
    """A fused matmul whose operands are contract views: an every-other-column slice of x (no BLAS
    layout) and q-like slice -> transpose -> reshape of a packed input (a strided BLAS view)."""
    types = [((4, 12), "f32"), ((3, 2, 6), "f32")]

    def body(b, x, packed):
        cols = b.op("slice", x, starts=(0, 0), stops=(4, 12), steps=(1, 2))
        one = b.op("slice", packed, starts=(1, 0, 0), stops=(2, 2, 6), steps=(1, 1, 1))
        w = b.op("reshape", b.op("transpose", one, perm=(2, 0, 1)), shape=(6, 2))
        return [b.op("tanh", b.op("matmul", cols, w))]

    return fused(body, types, "matmul"), types


def test_matmul_operands_are_the_contract_views():
    from graphc.ir.fused import matmul_parts
    from graphc.kernels.cpu.views import operand_array

    node, types = _prologue_node()
    parts = matmul_parts(node)
    x, packed = data(types)
    get_cols, get_w = (operand_array(ov, node.subgraph.inputs) for ov in parts.operands)
    cols, w = get_cols([x, packed]), get_w([x, packed])
    # no BLAS layout (stride 2 on both axes' inner one): a dense copy, decided when built
    assert cols.flags.c_contiguous and not np.shares_memory(cols, x)
    np.testing.assert_array_equal(cols, x[:, ::2])
    # the packed slice is a strided view BLAS takes as it is: no copy
    assert np.shares_memory(w, packed)
    np.testing.assert_array_equal(w, packed[1].transpose(1, 0))
    check(node, [x, packed])


def test_multi_output_pointwise_of_several_shapes():
    types = [((3, 4), "f32"), ((4,), "f32")]

    def body(b, x, v):
        y = b.op("mul", x, v)
        return [b.op("exp", y), b.op("add", v, c(b, 1.0)), y, b.op("lt", y, c(b, 0.0))]

    check(fused(body, types), data(types))


def test_fused_pointwise_in_place():
    types = [((3, 4), "f32"), ((4,), "f32")]
    node = fused(lambda b, x, v: [b.op("tanh", b.op("add", x, v))], types)
    x, v = data(types)
    want = np.tanh(x + v)
    cpu.compile_node(node)(x, v, x)
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-6)


def test_row_loss_pattern():
    # cross-entropy rows: logsumexp without keepdims minus the picked logit (an input of the
    # rows' shape), and their mean over all rows in a second body
    types = [((6, 7), "f32"), ((6,), "f32")]

    def body(b, x, picked):
        m = b.op("max", x, axes=(1,), keepdims=True)
        s = b.op("sum", b.op("exp", b.op("sub", x, m)), axes=(1,))
        m2 = b.op("max", x, axes=(1,))
        return [b.op("sub", b.op("add", b.op("log", s), m2), picked), m]

    node = fused(body, types, "reduction")
    assert "node by node" not in cpu.kernel_source(node)
    check(node, data(types))


def test_full_reduction_mean_of_squares():
    types = [((3, 4, 5), "f32"), ((3, 4, 5), "f32")]

    def body(b, x, y):
        d = b.op("sub", x, y)
        total = b.op("sum", b.op("mul", d, d), axes=(0, 1, 2))
        return [b.op("mul", total, c(b, 1 / 60)), d]

    check(fused(body, types, "reduction"), data(types))


def test_reduction_body_with_row_inputs_and_int_sum():
    types = [((4, 5), "f32"), ((4, 1), "f32")]

    def body(b, x, t):
        pos = b.op("cast", b.op("gt", x, t), dtype="i64")
        return [b.op("sum", pos, axes=(1,)), b.op("max", b.op("mul", x, t), axes=(1,), keepdims=True)]

    check(fused(body, types, "reduction"), data(types))


def test_inline_dropout_rng_is_bit_exact():
    types = [((6, 7), "f32"), ((), "i64")]

    def body(b, x, offset):
        u = b.op("rng_uniform", offset, shape=(6, 7), seed=11, dtype="f32")
        keep = b.op("ge", u, c(b, 0.25))
        return [b.op("where", keep, b.op("mul", x, c(b, 1 / 0.75)), c(b, 0.0)), keep]

    node = fused(body, types)
    assert "_rng_u" in cpu.kernel_source(node)
    x, off = data(types)
    outs = check(node, [x, off], rtol=0, atol=0)
    assert 0 < outs[1].sum() < 42


def test_body_const_inputs():
    w = RNG.standard_normal((4,)).astype(np.float32)
    types = [((3, 4), "f32")]
    check(fused(lambda b, x, cw: [b.op("mul", x, cw)], types, consts=[w]), data(types))


def test_unsupported_body_falls_back_to_primitives():
    types = [((3, 4), "f32"), ((4, 3), "f32")]

    def body(b, x, y):
        t = b.op("transpose", x, perm=(1, 0))
        return [b.op("exp", b.op("add", t, y))]

    node = fused(body, types)
    assert "node by node" in cpu.kernel_source(node)
    check(node, data(types))


def test_identical_bodies_share_one_kernel():
    types = [((6, 7), "f32"), ((7,), "f32"), ((7,), "f32")]
    a = fused(layer_norm, types, "reduction")
    b = fused(layer_norm, types, "reduction", prefix="other_name_")  # same structure
    assert cpu.kernel_source(a) == cpu.kernel_source(b)
    assert cpu.compile_node(a) is cpu.compile_node(b)


def test_large_bodies_use_prange():
    # above the parallel threshold: chunked rows for the reduction, prange for pointwise
    types = [((1040, 1024), "f32"), ((1024,), "f32"), ((1024,), "f32"), ((1040, 1024), "f32")]
    node = fused(chain, types, "reduction")
    assert "prange" in cpu.kernel_source(node)
    check(node, data(types))
    pw = fused(lambda b, x, v: [gelu(b, b.op("add", x, v))], types[:2])
    assert "prange" in cpu.kernel_source(pw)
    check(pw, data(types[:2]))
