"""The CPU int8 GEMM kernels (graphc.kernels.cpu.int8): the AVX-512 VNNI kernel and the portable
one, both bit-exact against an int64 NumPy product, at ragged shapes (edges of the 4 x 4 tiles,
k not a multiple of 64) and at the extreme operands (255 x -128 in every product)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from numba import njit

from graphc.ir import Graph, TensorType
from graphc.kernels.cpu import int8, int8_vnni
from graphc.kernels.cpu.cache import load_kernel
from graphc.kernels.reference import execute

needs_vnni = pytest.mark.skipif(not int8_vnni.HAVE_VNNI, reason="this CPU has no AVX-512 VNNI")


def _operands(rng: np.random.Generator, m: int, k: int, n: int, a_dtype=np.uint8, extreme: bool = False):
    info = np.iinfo(a_dtype)
    if extreme:  # every product at its largest magnitude: sums of k * 255 * -128
        return np.full((m, k), info.max, a_dtype), np.full((n, k), -128, np.int8)
    a = rng.integers(info.min, info.max + 1, (m, k)).astype(a_dtype)
    b = rng.integers(-128, 128, (n, k)).astype(np.int8)
    a.reshape(-1)[0], b.reshape(-1)[0] = info.max, -128
    return a, b


def _run(a: np.ndarray, b: np.ndarray, vnni: bool) -> np.ndarray:
    g = Graph("qmm")
    node = g.add_node("qmatmul", [g.add_input("a", TensorType.of(a)), g.add_input("b", TensorType.of(b))])
    source = int8.qmatmul_source(node, vnni=vnni)
    assert ("VNNI" in source) == vnni
    out = np.full((a.shape[0], b.shape[0]), 7, np.int32)
    load_kernel(source)(a, b, out)
    return out


SHAPES = [(4, 64, 4), (5, 65, 6), (7, 100, 9), (13, 784, 10), (32, 130, 37), (128, 512, 512)]


@needs_vnni
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_vnni_kernel_is_exact(m, k, n):
    rng = np.random.default_rng(m * 1000 + k + n)
    a, b = _operands(rng, m, k, n)
    want = a.astype(np.int64) @ b.astype(np.int64).T
    np.testing.assert_array_equal(_run(a, b, vnni=True), want)


@needs_vnni
def test_vnni_kernel_is_exact_at_the_extremes():
    a, b = _operands(np.random.default_rng(0), 6, 1000, 5, extreme=True)
    want = a.astype(np.int64) @ b.astype(np.int64).T
    assert want.min() == 1000 * 255 * -128
    np.testing.assert_array_equal(_run(a, b, vnni=True), want)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), SHAPES[2], SHAPES[3]])
@pytest.mark.parametrize("a_dtype", [np.uint8, np.int8])
def test_portable_kernel_is_exact(m, k, n, a_dtype):
    rng = np.random.default_rng(m + k + n)
    a, b = _operands(rng, m, k, n, a_dtype)
    want = a.astype(np.int64) @ b.astype(np.int64).T
    np.testing.assert_array_equal(_run(a, b, vnni=False), want)


def test_the_kernel_is_picked_by_shape_and_dtype():
    assert not int8.vnni_applies(3, 512, 512, "u8", "i8")  # fewer rows than a tile
    assert not int8.vnni_applies(128, 63, 512, "u8", "i8")  # k under one vector
    assert not int8.vnni_applies(128, 512, 512, "i8", "i8")  # vpdpbusd takes u8 x s8
    assert int8.vnni_applies(128, 512, 512, "u8", "i8") == int8_vnni.HAVE_VNNI


@needs_vnni
def test_vnni_tile_compiles_to_vpdpbusd():
    @njit
    def tile(a, b, acc):
        int8_vnni.vnni_tile(a, 0, b, 2, a.shape[1], acc)

    a, b = _operands(np.random.default_rng(1), 4, 80, 6)
    acc = np.zeros((4, 7), np.int32)
    tile(a, b, acc)
    want = np.zeros((4, 7), np.int64)
    want[:, 2:6] = a.astype(np.int64) @ b[2:6].astype(np.int64).T
    np.testing.assert_array_equal(acc, want)
    asm = tile.inspect_asm(tile.signatures[0])
    assert re.search(r"vpdpbusd\s+%zmm", asm)


# ---------------------------------------------------------------- qlinear: the GEMM with its epilogue
def _qlinear_inputs(rng, m, k, n, per_column: bool, out_dtype, fdtype=np.float32):
    a, b = _operands(rng, m, k, n)
    cols = (n,) if per_column else ()
    shift = rng.integers(-5000, 5000, cols).astype(np.int32)
    scale = rng.uniform(1e-4, 2e-3, cols).astype(fdtype)
    bias = rng.uniform(-3, 3, cols).astype(fdtype)
    xs = [a, b, shift, scale, bias]
    if out_dtype is not None:
        xs += [np.asarray(1.0, fdtype), np.asarray(7 if out_dtype == np.uint8 else -3, out_dtype)]
    return xs


def _graph(op: str, xs: list[np.ndarray], **attrs) -> Graph:
    g = Graph("q")
    ins = [g.add_input(f"x{i}", TensorType.of(np.asarray(x))) for i, x in enumerate(xs)]
    g.add_output(g.add_node(op, ins, attrs).output)
    return g


VARIANTS = [  # (per_column, relu, out dtype or None, float dtype)
    (True, False, None, np.float32),
    (True, True, None, np.float32),
    (False, True, np.uint8, np.float32),
    (True, True, np.uint8, np.float32),
    (True, False, np.int8, np.float32),
    (True, True, None, np.float64),
]


@pytest.mark.parametrize("per_column,relu,out_dtype,fdtype", VARIANTS)
def test_qlinear_reference_is_the_chain_of_ops_it_replaces(per_column, relu, out_dtype, fdtype):
    """qlinear = qmatmul, sub, cast, mul, add, where(le), quantize, run as separate reference ops."""
    xs = _qlinear_inputs(np.random.default_rng(5), 6, 40, 9, per_column, out_dtype, fdtype)
    g = Graph("chain")
    a, b, shift, scale, bias, *oq = [
        g.add_input(f"x{i}", TensorType.of(np.asarray(x))) for i, x in enumerate(xs)
    ]
    y = g.op("mul", g.op("cast", g.op("sub", g.op("qmatmul", a, b), shift), dtype=scale.dtype), scale)
    y = g.op("add", y, bias)
    if relu:
        zero = g.op("const", value=0.0, dtype=scale.dtype)
        y = g.op("where", g.op("le", y, zero), zero, y)
    if oq:
        y = g.op("quantize", y, *oq)
    g.add_output(y)
    feeds = {f"x{i}": np.asarray(x) for i, x in enumerate(xs)}
    (want,) = execute(g, feeds)
    (got,) = execute(_graph("qlinear", xs, relu=relu), feeds)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("per_column,relu,out_dtype,fdtype", VARIANTS[1:5])
@pytest.mark.parametrize("vnni", [pytest.param(True, marks=needs_vnni), False])
def test_qlinear_cpu_kernel_matches_the_reference_bit_for_bit(per_column, relu, out_dtype, fdtype, vnni):
    xs = _qlinear_inputs(np.random.default_rng(6), 10, 100, 13, per_column, out_dtype, fdtype)
    g = _graph("qlinear", xs, relu=relu)
    (want,) = execute(g, {f"x{i}": np.asarray(x) for i, x in enumerate(xs)})
    if out_dtype is not None:  # the requantized output saturates somewhere and varies elsewhere
        assert len(np.unique(want)) > 10
    source = int8.qlinear_source(g.nodes[0], vnni=vnni)
    out = np.empty(want.shape, want.dtype)
    load_kernel(source)(*[np.asarray(x) for x in xs], out)
    np.testing.assert_array_equal(out, want)


# ---------------------------------------------------------------- qconv2d: the int8 convolution
CONVS = [  # (x shape, O, kh, kw, stride, padding, dilation)
    ((2, 3, 9, 8), 8, 3, 3, (1, 1), (1, 1), (1, 1)),  # K = 27: padded to one 64-byte vector
    ((3, 16, 6, 7), 6, 3, 3, (2, 1), (1, 0), (1, 1)),  # K = 144, ragged tiles
    ((1, 8, 9, 9), 5, 2, 3, (1, 2), (0, 2), (2, 1)),  # dilation
]


def _conv_inputs(rng, xshape, o, kh, kw, requantize: bool, fdtype=np.float64):
    x = rng.integers(0, 256, xshape).astype(np.uint8)
    w = rng.integers(-128, 128, (o, kh, kw, xshape[1])).astype(np.int8)
    xs = [x, w, np.asarray(200, np.uint8), rng.integers(-900, 900, o).astype(np.int32)]
    xs += [rng.uniform(1e-3, 1e-2, o).astype(fdtype), np.asarray(0.5, fdtype)]
    if requantize:
        xs += [np.asarray(2.0, fdtype), np.asarray(9, np.uint8)]
    return xs


@pytest.mark.parametrize("xshape,o,kh,kw,stride,padding,dilation", CONVS)
def test_qconv2d_reference_is_the_exact_integer_convolution(xshape, o, kh, kw, stride, padding, dilation):
    torch = pytest.importorskip("torch")
    xs = _conv_inputs(np.random.default_rng(7), xshape, o, kh, kw, False)
    xs[3] = np.zeros(o, np.int32)
    xs[4], xs[5] = np.ones(o, np.float64), np.asarray(0.0)  # y = the i32 product itself
    attrs = {"stride": stride, "padding": padding, "dilation": dilation}
    g = _graph("qconv2d", xs, **attrs)
    (got,) = execute(g, {f"x{i}": np.asarray(v) for i, v in enumerate(xs)})
    x, w, z = (torch.from_numpy(v.astype(np.float64)) for v in xs[:3])
    want = torch.nn.functional.conv2d(x - z, w.permute(0, 3, 1, 2), None, stride, padding, dilation)
    want = want + z * w.sum(dim=(1, 2, 3)).reshape(1, o, 1, 1)  # padding holds the zero point
    np.testing.assert_array_equal(got, want.reshape(got.shape).numpy())


@pytest.mark.parametrize(
    "xshape,o,kh,kw,stride,padding,dilation,requantize",
    [(*CONVS[0], True), (*CONVS[1], False), (*CONVS[2], True)],
)
@pytest.mark.parametrize("vnni", [pytest.param(True, marks=needs_vnni), False])
def test_qconv2d_cpu_kernel_matches_the_reference(
    xshape, o, kh, kw, stride, padding, dilation, requantize, vnni
):
    xs = _conv_inputs(np.random.default_rng(8), xshape, o, kh, kw, requantize, np.float32)
    g = _graph("qconv2d", xs, stride=stride, padding=padding, dilation=dilation, relu=True)
    (want,) = execute(g, {f"x{i}": np.asarray(v) for i, v in enumerate(xs)})
    assert len(np.unique(want)) > 10
    source = int8.qconv2d_source(g.nodes[0], vnni=vnni)
    assert ("VNNI" in source) == vnni
    out = np.empty(want.shape, want.dtype)
    load_kernel(source)(*[np.asarray(v) for v in xs], out)
    np.testing.assert_array_equal(out, want)
