"""Every primitive and fused body on the CUDA backend against the NumPy reference (simulator-sized)."""

from __future__ import annotations

import numpy as np
import pytest
from cuda_cases import Case, all_cases

from graphc.ir import REGISTRY, GraphcError
from graphc.kernels import cuda as kc
from graphc.kernels.reference import run_node

pytestmark = pytest.mark.cudasim
CASES = all_cases()


def run_cuda(case: Case) -> list[np.ndarray]:
    """Compile the case's node, run it on device copies of its inputs, return host outputs."""
    from numba import cuda

    kernel = kc.compile_node(case.node)
    ins = [cuda.to_device(a) for a in case.inputs]
    outs = [cuda.device_array(v.shape, v.type.np_dtype) for v in case.node.outputs]
    kernel(*ins, *outs)
    return [o.copy_to_host() for o in outs]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_reference(case: Case) -> None:
    if case.raises:
        with pytest.raises(GraphcError, match=case.raises):
            run_cuda(case)
        return
    expect = run_node(case.node, case.inputs)
    got = run_cuda(case)
    for e, g in zip(expect, got):
        assert g.dtype == e.dtype and g.shape == e.shape
        if case.exact:
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e, rtol=case.rtol, atol=case.atol)


def test_every_primitive_has_a_generator_and_a_case() -> None:
    assert kc.missing_ops() == []
    tested = {c.node.op for c in CASES}
    assert set(REGISTRY) - tested == set()


def test_fused_bodies_generate_one_kernel_or_fall_back_as_expected() -> None:
    for case in CASES:
        if case.node.op != "fused":
            continue
        kernel = kc.compile_node(case.node)
        assert isinstance(kernel, kc.CudaKernel) == case.generated, case.name


def test_kernel_sources_are_cached_by_content(tmp_path, monkeypatch) -> None:
    from cuda_cases import prim

    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    case = next(c for c in CASES if c.name == "softmax_wide")
    source = kc.kernel_sources(case.node)
    assert "cuda.shared.array" in source and "cuda.syncthreads()" in source
    kernel = kc.compile_node(case.node)
    assert kernel.path.read_text() == source
    fresh = prim("exp", [np.zeros((3, 7), np.float32)])  # a shape no other test compiles
    kernel = kc.compile_node(fresh)
    assert kernel.path.parent == kc.cache_dir() and kernel.path.parent.parent == tmp_path / "cuda"
    assert kernel.path.name.startswith("graphc_cuda_") and kernel.path.read_text() == kc.kernel_sources(fresh)
    fallback = next(c for c in CASES if not c.generated)
    assert "runs its body node by node" in kc.kernel_sources(fallback.node)


def test_unknown_op_is_named() -> None:
    node = CASES[0].node
    bogus = type(node)("no_such_op", node.inputs, {}, node.outputs)
    with pytest.raises(GraphcError, match="no CUDA kernel for op 'no_such_op'"):
        kc.compile_node(bogus)


def test_wrong_array_shape_is_reported() -> None:
    from numba import cuda

    case = CASES[0]
    kernel = kc.compile_node(case.node)
    bad = cuda.device_array((3, 3), np.float32)
    with pytest.raises(GraphcError, match=r"f32\[4,5\]"):
        kernel(cuda.to_device(case.inputs[0]), bad)


def test_in_place_pointwise() -> None:
    from numba import cuda

    case = next(c for c in CASES if c.name == "gelu")
    buf = cuda.to_device(case.inputs[0])
    kc.compile_node(case.node)(buf, buf)
    np.testing.assert_allclose(buf.copy_to_host(), run_node(case.node, case.inputs)[0], rtol=2e-5, atol=1e-6)


def test_in_place_output_smaller_than_the_domain() -> None:
    # out1 (shape [5]) shares memory with input 1: every reader of in1 must finish before it is
    # overwritten, which one kernel over the [4,5] domain would not guarantee.
    from numba import cuda

    case = next(c for c in CASES if c.name == "pointwise_multi_out")
    x, r = (cuda.to_device(a) for a in case.inputs)
    out0 = cuda.device_array((4, 5), np.float32)
    out2 = cuda.device_array((4, 5), np.bool_)
    kc.compile_node(case.node)(x, r, out0, r, out2)
    expect = run_node(case.node, case.inputs)
    for got, want in zip((out0, r, out2), expect):
        np.testing.assert_allclose(got.copy_to_host(), want, rtol=2e-5, atol=1e-6)
