"""The CPU transpose kernel: a transpose that moves the input's innermost axis runs in cache tiles
(kernels/cpu/movement.py), its output checked bit for bit against NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from graph_testing import parse

from graphc.kernels import cpu
from graphc.kernels.cpu import movement

CASES = [
    ((256, 1024), (1, 0)),  # the LSTM's W_hh (blocked, prange over column blocks)
    ((33, 70), (1, 0)),  # sizes that are not multiples of the tile
    ((70, 33), (1, 0)),  # ... with the tile's stores innermost (the shorter stride is the load's)
    ((1024, 256), (1, 0)),
    ((3, 5, 7), (2, 1, 0)),  # a run between the tiled ones
    ((4, 33, 70), (0, 2, 1)),  # a batch of transposes (prange over the batch)
    ((2, 3, 4, 5), (3, 1, 0, 2)),
    ((40, 1, 50), (2, 1, 0)),  # a size-1 axis dropped
    ((64, 32, 256), (1, 0, 2)),  # the innermost axis stays: the plain nest
    ((6, 7), (0, 1)),
]


def _transpose_node(shape: tuple[int, ...], perm: tuple[int, ...]):
    out = tuple(shape[p] for p in perm)
    dims = ",".join(map(str, shape))
    text = f"""
graph g(%x: f32[{dims}]) {{
  %y = transpose(%x) {{perm=({", ".join(map(str, perm))},)}} : f32[{",".join(map(str, out))}]
  return %y
}}
"""
    return parse(text).nodes[0]


@pytest.mark.parametrize(("shape", "perm"), CASES)
def test_transpose_matches_numpy(shape, perm):
    node = _transpose_node(shape, perm)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out = np.full(tuple(shape[p] for p in perm), 7, np.float32)
    cpu.compile_node(node)(x, out)
    np.testing.assert_array_equal(out, x.transpose(perm))


def test_a_transpose_moving_the_innermost_axis_runs_in_tiles():
    blocked = cpu.kernel_source(_transpose_node((256, 1024), (1, 0)))
    assert f"// {movement.TRANSPOSE_BLOCK}" in blocked
    kept = cpu.kernel_source(_transpose_node((64, 32, 256), (1, 0, 2)))
    assert f"// {movement.TRANSPOSE_BLOCK}" not in kept
