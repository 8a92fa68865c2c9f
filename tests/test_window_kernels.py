"""The CPU window kernels' paths that small test images do not reach, against the reference
kernels: im2col over few planes in parallel with wide rows (a first convolution), and the flat
max pool over many narrow planes in parallel (ties, NaN, -0.0, integers)."""

import numpy as np
import pytest
from test_cpu_kernels import check, node_of

from graphc.kernels.cpu import window


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel": (7, 7), "stride": (2, 2), "padding": (3, 3)},  # RGB first convolution
        {"kernel": (3, 3), "stride": (1, 1), "padding": (1, 1), "dilation": (2, 1)},
        {"kernel": (1, 1), "stride": (3, 2)},
    ],
)
def test_im2col_few_planes_wide_rows(attrs):
    node = node_of("im2col", [((1, 3, 44, 150), "f32")], attrs)
    source = window.im2col_source(node)
    if attrs["kernel"] != (1, 1):  # (plane, window row) pairs in parallel
        assert "task" in source and "prange" in source
    assert ("dst = cols" in source) == (node.outputs[0].shape[-1] >= 64 * 2)
    x = np.random.default_rng(0).standard_normal((1, 3, 44, 150)).astype(np.float32)
    check(node, [x], exact=True)


@pytest.mark.parametrize("dtype", ["f32", "f64", "i32"])
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel": (3, 3), "stride": (1, 1)},
        {"kernel": (3, 3), "stride": (2, 2)},
        {"kernel": (2, 2), "stride": (2, 2)},
        {"kernel": (3, 2), "stride": (2, 1), "dilation": (2, 3)},
    ],
)
def test_flat_max_pool_many_narrow_planes(dtype, attrs):
    shape = (2, 300, 13, 15)
    node = node_of("max_pool2d", [(shape, dtype)], attrs)
    source = window.max_pool_source(node)
    assert "(flat)" in source and "prange" in source
    rng = np.random.default_rng(1)
    x = rng.integers(-3, 4, size=shape).astype(node.inputs[0].type.np_dtype)  # many exact ties
    if dtype != "i32":
        x[0, 5, 2:5, 3:6] = -0.0
        x[0, 5, 3, 4] = 0.0
        x[1, 7, 4, 4] = np.nan
        x[1, 8, 0, 0] = -np.inf
    check(node, [x], exact=True)
    if dtype != "i32":  # the sign of a zero: the window's first maximal element, as the reference
        from test_cpu_kernels import run_cpu, run_node

        out = run_cpu(node, [x])[0]
        np.testing.assert_array_equal(np.signbit(out), np.signbit(run_node(node, [x])[0]))


@pytest.mark.parametrize(
    "image, attrs, dtype",
    [
        ((2, 5, 7, 7), {"kernel": (3, 3), "padding": (1, 1)}, "f32"),  # a late ResNet stage, batch 2
        ((2, 5, 7, 7), {"kernel": (3, 3), "padding": (1, 1)}, "i64"),
        ((1, 2, 9, 8), {"kernel": (3, 3), "padding": (2, 2), "dilation": (2, 2)}, "f32"),
        ((1, 4, 5, 6), {"kernel": (1, 3), "padding": (0, 1)}, "f32"),
        ((1, 2, 4, 3), {"kernel": (7, 7), "padding": (5, 3)}, "f32"),  # taps wholly off the image
        ((20, 1, 3, 1), {"kernel": (3, 3), "padding": (1, 1)}, "f32"),  # one-pixel rows, many planes
    ],
)
def test_im2col_same_width_as_one_shifted_copy(image, attrs, dtype):
    """Stride 1 and an output as wide as the image: each tap is one shifted copy of the plane with
    the pixels it took from the neighbouring row zeroed (``_im2col_shifted``), bit for bit the
    reference's columns (NaN, -0.0 and integers included)."""
    node = node_of("im2col", [(image, dtype)], attrs)
    assert "off = " in window.im2col_source(node)
    x = np.random.default_rng(1).standard_normal(image) * 100
    if dtype == "f32":
        x.reshape(-1)[:3] = [np.nan, -0.0, np.inf]
    check(node, [x.astype(np.float32 if dtype == "f32" else np.int64)], exact=True)


def test_im2col_other_widths_keep_the_row_loops():
    for attrs in ({"kernel": (3, 3)}, {"kernel": (3, 3), "padding": (1, 1), "stride": (2, 2)}):
        assert "off = " not in window.im2col_source(node_of("im2col", [((1, 2, 8, 8), "f32")], attrs))
