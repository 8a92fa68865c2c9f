"""Every primitive's numba CPU kernel against the NumPy reference (kernels/reference).

Shapes are small and shared between cases so kernels compiled once serve several tests (the
generated kernels are shape-generic within a broadcast pattern) and the on-disk cache keeps a
second run cheap.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import REGISTRY, Graph, GraphcError, TensorType
from graphc.kernels import cpu
from graphc.kernels.reference import run_node

RNG = np.random.default_rng(0)
TOL = {"f32": (1e-5, 1e-6), "f64": (1e-12, 1e-12)}
NP = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "bool": np.bool_}


def rand(shape, dtype="f32", kind="normal"):
    """Random test data: normal, positive (for log/sqrt/pow) or small ints and booleans."""
    if dtype == "bool":
        return RNG.random(shape) < 0.5
    if dtype in ("i32", "i64"):
        return RNG.integers(-5, 6, size=shape).astype(NP[dtype])
    if kind == "positive":
        return RNG.uniform(0.5, 2.0, size=shape).astype(NP[dtype])
    return RNG.standard_normal(shape).astype(NP[dtype])


def node_of(op, types, attrs=None):
    """A graph with one ``op`` node over fresh inputs of the given (shape, dtype) types."""
    g = Graph()
    ins = [g.add_input(f"x{k}", TensorType(shape, dtype)) for k, (shape, dtype) in enumerate(types)]
    return g.add_node(op, ins, attrs or {})


def run_cpu(node, arrays):
    """Run the CPU kernel of ``node`` on ``arrays``; returns fresh output arrays."""
    outs = [np.full(v.shape, 7, dtype=v.type.np_dtype) for v in node.outputs]  # garbage to overwrite
    cpu.compile_node(node)(*arrays, *outs)
    return outs


def check(node, arrays, exact=False):
    """CPU kernel == reference within the per-dtype tolerance (ints, bools, rng exactly)."""
    got = run_cpu(node, arrays)
    want = run_node(node, arrays)
    for g, w, v in zip(got, want, node.outputs):
        assert g.shape == w.shape and g.dtype == w.dtype
        if exact or v.dtype not in TOL:
            np.testing.assert_array_equal(g, w)
        else:
            rtol, atol = TOL[v.dtype]
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def test_every_primitive_has_a_cpu_kernel():
    missing = sorted(set(REGISTRY) - set(cpu.CPU_KERNELS))
    assert not missing, f"ops without a CPU kernel: {missing}"


# ---------------------------------------------------------------- pointwise
UNARY = {
    "neg": "normal",
    "exp": "normal",
    "log": "positive",
    "sqrt": "positive",
    "rsqrt": "positive",
    "tanh": "normal",
    "erf": "normal",
    "abs": "normal",
    "sign": "normal",
    "sin": "normal",
    "cos": "normal",
    "reciprocal": "positive",
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_f32(op):
    check(node_of(op, [((3, 4), "f32")]), [rand((3, 4), "f32", UNARY[op])])


@pytest.mark.parametrize("op", ["exp", "erf", "log", "rsqrt", "tanh"])
def test_unary_f64(op):
    kind = UNARY[op]
    check(node_of(op, [((3, 4), "f64")]), [rand((3, 4), "f64", kind)])


@pytest.mark.parametrize("op", ["neg", "abs", "sign"])
@pytest.mark.parametrize("dtype", ["i32", "i64"])
def test_unary_int(op, dtype):
    check(node_of(op, [((3, 4), dtype)]), [rand((3, 4), dtype)])


def test_erf_f32_accuracy_over_a_dense_grid():
    # float32 erf is a vectorizable rational approximation; bound its error everywhere.
    x = np.linspace(-6, 6, 20001, dtype=np.float32).reshape(3, -1)
    got = run_cpu(node_of("erf", [(x.shape, "f32")]), [x])[0]
    want = run_node(node_of("erf", [(x.shape, "f32")]), [x])[0]
    assert np.abs(got.astype(np.float64) - want).max() < 5e-7


def test_special_values_follow_numpy():
    x = np.array([[0.0, -0.0, np.inf], [-np.inf, np.nan, -1.0]], np.float32)  # kernels shared with (3, 4)
    for op in ("log", "sqrt", "rsqrt", "reciprocal", "exp", "erf", "tanh", "sign", "abs"):
        check(node_of(op, [(x.shape, "f32")]), [x])


BINARY = {
    "add": "normal",
    "sub": "normal",
    "mul": "normal",
    "div": "positive",
    "pow": "positive",
    "maximum": "normal",
    "minimum": "normal",
    "lt": "normal",
    "le": "normal",
    "eq": "normal",
    "ne": "normal",
    "gt": "normal",
    "ge": "normal",
}


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_f32_broadcast(op):
    a, b = rand((3, 4), "f32", BINARY[op]), rand((4,), "f32", BINARY[op])
    b[1] = a[2, 1]  # equal elements for the comparisons
    check(node_of(op, [((3, 4), "f32"), ((4,), "f32")]), [a, b])


@pytest.mark.parametrize(
    "op,dtype",
    [(op, "i32") for op in ("add", "sub", "mul", "maximum", "minimum", "lt", "eq")] + [("ge", "i64")],
)
def test_binary_int(op, dtype):
    check(node_of(op, [((3, 4), dtype), ((4,), dtype)]), [rand((3, 4), dtype), rand((4,), dtype)])


def test_int32_arithmetic_wraps_like_numpy():
    a = np.array([[2**31 - 1, -(2**31)], [5, -5]], np.int32)
    b = np.array([2, -1], np.int32)
    for op in ("add", "sub", "mul"):
        check(node_of(op, [((2, 2), "i32"), ((2,), "i32")]), [a, b])


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((3, 4), (3, 4)),
        ((3, 1), (1, 4)),
        ((), (3, 4)),
        ((2, 1, 4), (3, 1)),
        ((2, 3, 4), (2, 1, 4)),
        ((1,), (1,)),
    ],
)
def test_add_broadcast_patterns(sa, sb):
    check(node_of("add", [(sa, "f32"), (sb, "f32")]), [rand(sa), rand(sb)])


def test_add_f64():
    check(node_of("add", [((3, 4), "f64"), ((4,), "f64")]), [rand((3, 4), "f64"), rand((4,), "f64")])


def test_maximum_minimum_propagate_nan():
    a = np.array([[np.nan, 1.0, 2.0, np.nan], [0.0, 1.0, np.nan, 3.0]], np.float32)
    b = np.array([1.0, np.nan, 1.0, np.nan], np.float32)
    for op in ("maximum", "minimum"):
        check(node_of(op, [((2, 4), "f32"), ((4,), "f32")]), [a, b])


def test_compare_bool_operands():
    a, b = rand((3, 4), "bool"), rand((3, 4), "bool")
    check(node_of("eq", [((3, 4), "bool"), ((3, 4), "bool")]), [a, b])


def test_where_broadcast():
    types = [((3, 1), "bool"), ((3, 4), "f32"), ((4,), "f32")]
    check(node_of("where", types), [rand((3, 1), "bool"), rand((3, 4)), rand((4,))])


@pytest.mark.parametrize(
    "src,dst",
    [("f32", "i32"), ("f32", "bool"), ("bool", "f32"), ("i64", "f64"), ("f64", "f32"), ("i32", "i64")],
)
def test_cast(src, dst):
    x = rand((3, 4), src) * (3 if src.startswith("f") else 1)
    if src.startswith("f"):
        x[0, 0] = 0
    check(node_of("cast", [((3, 4), src)], {"dtype": dst}), [x])


def test_broadcast_to():
    check(node_of("broadcast_to", [((3, 1), "f32")], {"shape": (2, 3, 4)}), [rand((3, 1))])


def test_pointwise_in_place():
    # Contract: a pointwise output may be the same memory as an input of equal shape.
    node = node_of("add", [((3, 4), "f32"), ((4,), "f32")])
    x, b = rand((3, 4)), rand((4,))
    want = x + b
    cpu.compile_node(node)(x, b, x)
    np.testing.assert_allclose(x, want, rtol=1e-6)


def test_const():
    for value, dtype in [(1.5, "f32"), (-3, "i64"), (True, "bool"), (float("inf"), "f64")]:
        node = node_of("const", [], {"value": value, "dtype": dtype})
        check(node, [])


# ---------------------------------------------------------------- reductions
REDUCE_CASES = [
    ((2,), False),
    ((1, 2), True),
    ((0,), False),
    ((0, 2), True),
    ((0, 1, 2), False),
    ((1,), True),
]


@pytest.mark.parametrize(
    "op,axes,keepdims",
    [("sum", *c) for c in REDUCE_CASES] + [(op, *c) for op in ("max", "min") for c in REDUCE_CASES[:3]],
)
def test_reduce_f32(op, axes, keepdims):
    check(node_of(op, [((2, 3, 4), "f32")], {"axes": axes, "keepdims": keepdims}), [rand((2, 3, 4))])


@pytest.mark.parametrize(
    "op,dtype",
    [
        ("sum", "i32"),
        ("max", "i32"),
        ("min", "i64"),
        ("sum", "bool"),
        ("max", "bool"),
        ("min", "bool"),
        ("sum", "f64"),
    ],
)
def test_reduce_other_dtypes(op, dtype):
    x = rand((3, 4), dtype)
    check(node_of(op, [((3, 4), dtype)], {"axes": (1,)}), [x])
    check(node_of(op, [((3, 4), dtype)], {"axes": (0,)}), [x])


def test_reduce_nan_propagates():
    x = rand((2, 3, 4))
    x[1, 2, 1] = np.nan
    for op in ("max", "min", "sum"):
        check(node_of(op, [((2, 3, 4), "f32")], {"axes": (2,)}), [x])
        check(node_of(op, [((2, 3, 4), "f32")], {"axes": (0,)}), [x])


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_max_min_of_long_rows_propagate_nan_from_any_position(dtype):
    # Rows long enough for the vectorized body (LLVM's maximum/minimum) and its scalar rest:
    # a NaN in either part, at either end, and rows of infinities.
    x = rand((6, 71), dtype)
    x[0, 3] = np.nan  # vector body
    x[1, 70] = np.nan  # scalar rest
    x[2, 0] = np.nan
    x[3, :] = -np.inf
    x[4, :] = np.inf
    x[5, 40] = np.inf
    for op in ("max", "min"):
        check(node_of(op, [((6, 71), dtype)], {"axes": (1,)}), [x])


def test_sum_long_rows_is_accurate():
    x = RNG.uniform(0, 1, size=(2, 5000)).astype(np.float32)
    check(node_of("sum", [((2, 5000), "f32")], {"axes": (1,)}), [x])


@pytest.mark.parametrize("axis,keepdims", [(0, False), (1, True), (2, False)])
def test_argmax(axis, keepdims):
    x = rand((2, 3, 4))
    x[0, 1, 1] = x[0, 2, 1]  # a tie: the first index wins
    check(node_of("argmax", [((2, 3, 4), "f32")], {"axis": axis, "keepdims": keepdims}), [x])


def test_argmax_nan_and_int():
    x = rand((3, 4))
    x[1, 2] = np.nan
    check(node_of("argmax", [((3, 4), "f32")], {"axis": 1}), [x])
    check(node_of("argmax", [((3, 4), "f32")], {"axis": 0}), [x])
    check(node_of("argmax", [((3, 4), "i64")], {"axis": 1}), [rand((3, 4), "i64")])


# ---------------------------------------------------------------- matmul
@pytest.mark.parametrize(
    "sa,sb,dtype",
    [
        ((3, 4), (4, 5), "f32"),
        ((2, 3, 4), (4, 5), "f32"),
        ((2, 1, 3, 4), (3, 4, 5), "f32"),
        ((3, 4), (4, 5), "f64"),
        ((3, 4), (4, 5), "i64"),
    ],
)
def test_matmul(sa, sb, dtype):
    check(node_of("matmul", [(sa, dtype), (sb, dtype)]), [rand(sa, dtype), rand(sb, dtype)])


# ---------------------------------------------------------------- movement
def test_reshape():
    check(node_of("reshape", [((2, 3, 4), "f32")], {"shape": (4, 6)}), [rand((2, 3, 4))])
    check(node_of("reshape", [((), "i64")], {"shape": (1, 1)}), [rand((), "i64")])


@pytest.mark.parametrize("perm", [(1, 0, 2), (0, 2, 1), (2, 0, 1), (1, 2, 0)])
def test_transpose(perm):
    check(node_of("transpose", [((2, 3, 4), "f32")], {"perm": perm}), [rand((2, 3, 4))])


def test_transpose_4d_and_bool():
    check(node_of("transpose", [((2, 3, 1, 4), "f32")], {"perm": (0, 2, 3, 1)}), [rand((2, 3, 1, 4))])
    check(node_of("transpose", [((3, 4), "bool")], {"perm": (1, 0)}), [rand((3, 4), "bool")])


@pytest.mark.parametrize(
    "starts,stops,steps",
    [((0, 1, 0), (2, 3, 4), (1, 1, 2)), ((1, 0, 1), (2, 3, 4), (1, 2, 3)), ((0, 0, 0), (2, 3, 4), (1, 1, 1))],
)
def test_slice(starts, stops, steps):
    attrs = {"starts": starts, "stops": stops, "steps": steps}
    check(node_of("slice", [((2, 3, 4), "f32")], attrs), [rand((2, 3, 4))])


def test_pad():
    attrs = {"pads": ((0, 1), (2, 0), (1, 1)), "value": -1.5}
    check(node_of("pad", [((2, 3, 4), "f32")], attrs), [rand((2, 3, 4))])
    check(node_of("pad", [((3, 4), "i32")], {"pads": ((1, 1), (0, 2))}), [rand((3, 4), "i32")])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concat(axis):
    shapes = [(2, 3, 4), (2, 3, 4), (2, 3, 4)]
    shapes = [tuple(d + k if a == axis else d for a, d in enumerate(s)) for k, s in enumerate(shapes)]
    check(node_of("concat", [(s, "f32") for s in shapes], {"axis": axis}), [rand(s) for s in shapes])


# ---------------------------------------------------------------- indexing
@pytest.mark.parametrize("axis,idx_shape,dtype", [(0, (2, 2), "i64"), (1, (5,), "i32"), (2, (), "i64")])
def test_gather(axis, idx_shape, dtype):
    x = rand((3, 4, 5))
    idx = RNG.integers(0, x.shape[axis], size=idx_shape).astype(NP[dtype])
    check(node_of("gather", [((3, 4, 5), "f32"), (idx_shape, dtype)], {"axis": axis}), [x, idx])


def test_gather_out_of_range_raises():
    node = node_of("gather", [((3, 4), "f32"), ((2,), "i64")], {"axis": 0})
    with pytest.raises(GraphcError, match="out of range"):
        run_cpu(node, [rand((3, 4)), np.array([0, 3])])


@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_add(axis):
    shape = (4, 5)
    idx = np.array([[1, 0, 1], [3, 1, 1]], np.int64)  # repeats add up
    upd_shape = (*shape[:axis], *idx.shape, *shape[axis + 1 :])
    node = node_of("scatter_add", [(idx.shape, "i64"), (upd_shape, "f32")], {"axis": axis, "shape": shape})
    check(node, [idx, rand(upd_shape)])


def test_scatter_add_out_of_range_raises():
    node = node_of("scatter_add", [((2,), "i64"), ((2, 3), "f32")], {"axis": 0, "shape": (4, 3)})
    with pytest.raises(GraphcError, match="out of range"):
        run_cpu(node, [np.array([0, 4]), rand((2, 3))])


# ---------------------------------------------------------------- image
WINDOWS = [
    {"kernel": (3, 3), "padding": (1, 1)},
    {"kernel": (2, 3), "stride": (2, 1), "padding": (0, 1), "dilation": (1, 2)},
    {"kernel": (2, 2), "stride": (2, 2)},  # the last image column lies in no window
    {"kernel": (3, 2), "stride": (3, 2), "padding": (2, 3), "dilation": (2, 1)},  # windows all padding
    {"kernel": (5, 5), "padding": (4, 4), "dilation": (2, 2)},  # wider than the image
]


@pytest.mark.parametrize("attrs", WINDOWS)
def test_im2col(attrs):
    check(node_of("im2col", [((2, 3, 6, 7), "f32")], attrs), [rand((2, 3, 6, 7))])
    check(node_of("im2col", [((1, 2, 6, 7), "i64")], attrs), [rand((1, 2, 6, 7), "i64")])


@pytest.mark.parametrize("attrs", WINDOWS)
def test_col2im(attrs):
    fwd = node_of("im2col", [((2, 3, 6, 7), "f32")], attrs)
    cols = fwd.outputs[0].shape
    check(node_of("col2im", [(cols, "f32")], {**attrs, "image_shape": (2, 3, 6, 7)}), [rand(cols)])


POOLS = [
    {"kernel": (2, 2), "stride": (2, 2)},
    {"kernel": (3, 3), "stride": (2, 2)},  # overlapping windows: dx sums several dy entries
    {"kernel": (2, 3), "stride": (1, 2), "dilation": (2, 1)},
]


def pool_input(dtype="f32"):
    """An image with exact ties (a constant block, repeated ints) and, for floats, a NaN."""
    x = rand((2, 3, 7, 8), dtype)
    x[0, 0, :3, :3] = 1
    if dtype == "f32":
        x[1, 2, 3, 4] = np.nan
    return x


@pytest.mark.parametrize("attrs", POOLS)
@pytest.mark.parametrize("dtype", ["f32", "i32"])
def test_max_pool2d(attrs, dtype):
    check(node_of("max_pool2d", [((2, 3, 7, 8), dtype)], attrs), [pool_input(dtype)], exact=True)


@pytest.mark.parametrize("attrs", POOLS)
@pytest.mark.parametrize("dtype", ["f32", "i32"])
def test_max_pool2d_grad(attrs, dtype):
    node = node_of("max_pool2d", [((2, 3, 7, 8), dtype)], attrs)
    dy = node.outputs[0].shape
    grad = node_of("max_pool2d_grad", [((2, 3, 7, 8), dtype), (dy, "f32")], attrs)
    check(grad, [pool_input(dtype), rand(dy)])


# ---------------------------------------------------------------- random
@pytest.mark.parametrize(
    "seed,offset,dtype", [(0, 0, "f32"), (7, 3, "f32"), (123, -1, "f64"), (2**33 + 5, 2**40, "f32")]
)
def test_rng_uniform_bit_exact(seed, offset, dtype):
    node = node_of("rng_uniform", [((), "i64")], {"shape": (3, 5), "seed": seed, "dtype": dtype})
    check(node, [np.array(offset, np.int64)], exact=True)


def test_kernel_source_names_no_values():
    g = Graph()
    x = g.add_input("some_long_input_name", TensorType((3, 4)))
    node = g.add_node("exp", [x], names=["another_value_name"])
    src = cpu.kernel_source(node)
    assert "def kernel(" in src
    assert "some_long_input_name" not in src and "another_value_name" not in src


EDGE_CASES = [
    ("add", [((0, 3), "f32"), ((3,), "f32")], {}),
    ("sum", [((3, 0), "f32")], {"axes": (1,)}),
    ("sum", [((2, 3), "f32")], {"axes": ()}),
    ("max", [((1, 4, 1), "f32")], {"axes": (0, 2), "keepdims": True}),
    ("exp", [((), "f32")], {}),
    ("slice", [((5,), "f32")], {"starts": (1,), "stops": (5,), "steps": (2,)}),
]


@pytest.mark.parametrize("op,types,attrs", EDGE_CASES)
def test_edge_shapes(op, types, attrs):
    # zero-size, 0-d and all-size-1 shapes
    check(node_of(op, types, attrs), [rand(s, d) for s, d in types])


def test_in_place_kernel_stores_through_the_input():
    # The memory plan's in-place hint: output 0 is always passed as input 1's array.
    node = node_of("add", [((1, 5), "f32"), ((4, 5), "f32")])
    source = cpu.kernel_source(node)
    hinted = cpu.build(node, {0: 1}).source
    assert hinted != source and "a2" not in hinted.split("def kernel")[1].split(":", 1)[1]
    b, x = rand((1, 5)), rand((4, 5))
    want = b + x
    cpu.compile_node(node, {0: 1})(b, x, x)
    np.testing.assert_allclose(x, want, rtol=1e-6)


def test_loop_invariant_operands_are_loaded_outside_the_loops():
    # A broadcast operand loaded inside a loop that stores may alias the store as far as LLVM
    # knows, which keeps the loop scalar (the CNN's ReLU mask: 4.7 ms -> 0.9 ms): each load sits
    # in the outermost loop that its index needs.
    node = node_of("where", [((6, 5), "bool"), ((6, 5), "f32"), ((), "f32")])
    body = cpu.build(node, {0: 1}).source.split("def kernel")[1]
    assert body.index("v2[0]") < body.index("for ")
    assert "unseen(v0[i0])" in body  # the overwritten input's load: no masked stores
    row = node_of("mul", [((6, 5), "f32"), ((6, 1), "f32")])
    body = cpu.kernel_source(row).split("def kernel")[1]
    lines = body.splitlines()
    inner = next(k for k, line in enumerate(lines) if line.lstrip().startswith("for i1"))
    row_load = next(k for k, line in enumerate(lines) if "= v2[i0, 0]" in line)
    assert row_load < inner
    m, x, s = rand((6, 5)) > 0.5, rand((6, 5)), np.full((), -2.0, np.float32)
    want = np.where(m, x, s)
    cpu.compile_node(node, {0: 1})(m, x, s, x)
    np.testing.assert_array_equal(x, want)
    a, r = rand((6, 5)), rand((6, 1))
    check(row, [a, r])


def test_unseen_returns_its_argument():
    from numba import njit

    from graphc.kernels.cpu.intrinsics import unseen

    @njit
    def through(x, y, z):
        return unseen(x), unseen(y), unseen(z)

    assert through(np.float32(-1.5), np.int64(-7), True) == (np.float32(-1.5), -7, True)
    nan, neg_zero, _ = through(np.float32(np.nan), -0.0, False)
    assert np.isnan(nan) and neg_zero == 0.0 and np.signbit(neg_zero)


def test_float32_exp_over_its_whole_range():
    # The vectorizable exp of generated kernels against NumPy's: within 4 ulp wherever the
    # result is a normal float32, and exact at the edges (inf, 0, NaN, overflow).
    x = np.concatenate(
        [
            np.linspace(-87.3, 88.72, 200_001, dtype=np.float32),
            np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 88.72283, 88.7229, 89.0, -90.0, -1e30], np.float32),
        ]
    )
    node = node_of("exp", [(x.shape, "f32")])
    (got,) = run_cpu(node, [x])
    with np.errstate(over="ignore"):
        want = np.exp(x)
    normal = np.isfinite(want) & (want >= np.finfo(np.float32).tiny)
    np.testing.assert_allclose(got[normal], want[normal], rtol=4 * 2.0**-23)
    np.testing.assert_array_equal(got[-10:-5], want[-10:-5])
    assert np.isfinite(got[-5]) and np.isinf(got[-4]) and np.isinf(got[-3])
    assert got[-2] == 0 and got[-1] == 0


def _lowbias32(x: int) -> int:
    """lowbias32 in plain Python integers (an oracle independent of kernels.scalar_ops)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_rng_hash_matches_lowbias32():
    from graphc.kernels.scalar_ops import hash32_numpy

    xs = [0, 1, 2, 12345, 0x7FFFFFFF, 0xFFFFFFFF]
    got = hash32_numpy(np.array(xs, dtype=np.uint32))
    assert [int(v) for v in got] == [_lowbias32(x) for x in xs]


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_graph_values_reach_source_only_as_numbers(backend):
    """A pad value or a constant that is not a number is refused, never pasted into the source."""
    from graphc.kernels import cuda
    from graphc.kernels.cpu.codegen import Body, pointwise_source

    def source_of(node):
        if backend == "cuda":
            return cuda.kernel_sources(node)
        if node.op == "const":  # generated inline in a body (alone it is a NumPy fill)
            return pointwise_source(Body([], [node], node.outputs))
        return cpu.kernel_source(node)

    pad = node_of("pad", [((2, 3), "f32")], {"pads": ((1, 0), (0, 2)), "value": 0.5})
    const = node_of("const", [], {"value": 2.5, "dtype": "f32"})
    assert "0.5" in source_of(pad)
    for node in (pad, const):
        node.attrs["value"] = "0)\nimport os\n(0"
        with pytest.raises(GraphcError, match="must be a number"):
            source_of(node)
