"""Fused pointwise bodies with a slice prologue and a concat epilogue (passes.fusion) on the CUDA
generator: one kernel each, equal to the reference backend (simulator-sized)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # graph_testing
from graph_testing import parse  # noqa: E402

from graphc.kernels import cuda as kc  # noqa: E402
from graphc.kernels.reference import run_node  # noqa: E402
from graphc.passes import fusion  # noqa: E402

pytestmark = pytest.mark.cudasim

BODIES = {
    "gate_slices_and_concat": """
        graph g(%x: f32[3,12], %h: f32[3,4]) {
          %s0 = slice(%x) {starts=(0, 0), stops=(3, 4), steps=(1, 1)} : f32[3,4]
          %s1 = slice(%x) {starts=(0, 4), stops=(3, 8), steps=(1, 1)} : f32[3,4]
          %s2 = slice(%x) {starts=(0, 8), stops=(3, 12), steps=(1, 1)} : f32[3,4]
          %a = exp(%s0) : f32[3,4]
          %b = mul(%a, %s1) : f32[3,4]
          %c = tanh(%s2) : f32[3,4]
          %d = add(%c, %h) : f32[3,4]
          %e = mul(%b, %d) : f32[3,4]
          %k = concat(%e, %b) {axis=1} : f32[3,8]
          return %k, %d
        }
        """,
    "middle_axis_steps_broadcast": """
        graph g(%x: f64[2,9,3], %z: f64[3]) {
          %s = slice(%x) {starts=(0, 1, 0), stops=(2, 8, 3), steps=(1, 2, 1)} : f64[2,4,3]
          %t = slice(%x) {starts=(1, 2, 1), stops=(2, 9, 3), steps=(1, 2, 2)} : f64[1,4,1]
          %a = mul(%s, %z) : f64[2,4,3]
          %b = add(%a, %t) : f64[2,4,3]
          %e = exp(%b) : f64[2,4,3]
          %k = concat(%b, %e) {axis=0} : f64[4,4,3]
          return %k
        }
        """,
}


@pytest.mark.parametrize("name", sorted(BODIES))
def test_slice_prologue_and_concat_epilogue_in_one_cuda_kernel(name):
    from numba import cuda

    g = fusion(parse(BODIES[name]))
    (node,) = [n for n in g.nodes if n.op == "fused"]
    assert len(g.nodes) == 1 and {"slice", "concat"} <= set(node.subgraph.op_counts())
    kernel = kc.compile_node(node)
    assert isinstance(kernel, kc.CudaKernel)  # generated, not the node-by-node fallback
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(v.shape).astype(v.type.np_dtype) for v in node.inputs]
    outs = [cuda.device_array(v.shape, v.type.np_dtype) for v in node.outputs]
    kernel(*(cuda.to_device(a) for a in arrays), *outs)
    for got, want in zip(outs, run_node(node, arrays)):
        np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-5, atol=1e-6)
