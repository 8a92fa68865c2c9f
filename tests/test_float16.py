"""The float16 element type f16: NumPy's float16 on the reference backend, and on the CPU backend
(numba has no float16) each op computed in f32 between casts (passes.legalize_half), rounded once
per op; the type rules, and every place a dtype is stored or read (text form, JSON, plan files,
weights files, checkpoint arrays, ONNX type maps). Oracles: NumPy float16 ufuncs (which compute
in float32 and round once), float64 rounded to float16, ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.functional as F
from graphc import passes
from graphc.compiler import compile_graph
from graphc.control_flow import scan
from graphc.ir import Graph, GraphcError, TensorType, graph_from_json, graph_to_json, parse_graph, print_graph
from graphc.ir.control import CONTROL_OPS
from graphc.ir.types import FLOAT_DTYPES, from_numpy_dtype, promote_dtypes, to_numpy_dtype
from graphc.kernels.reference import execute
from graphc.passes.legalize_half import has_half, is_half_cast, legalize_half
from graphc.runtime import Plan

F16 = np.float16
ULP = 2.0**-10  # float16's relative spacing at 1 (one unit in the last place, relative)


def _values(n: int = 64, seed: int = 0) -> np.ndarray:
    """float16 edge values (signed zeros, infinities, NaN, the largest, subnormals) and random ones."""
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, -65504.0, 2.0**-24, -(2.0**-24), 2.0**-14]
    edges += [1.0, -1.0, 0.5, 2.5, -2.5, 0.1, 1 / 3, 1000.0]
    rng = np.random.default_rng(seed)
    rand = rng.standard_normal(n - len(edges)) * rng.choice([1e-3, 1.0, 30.0], n - len(edges))
    return np.concatenate([edges, rand]).astype(F16)


def _run(g: Graph, backend: str, *arrays: np.ndarray) -> list[np.ndarray]:
    if backend == "reference":
        return execute(g, {v.name: a for v, a in zip(g.data_inputs, arrays)})
    out = compile_graph(g, backend=backend)(*arrays)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _same_bits(got: np.ndarray, want: np.ndarray, what: str, signed_zeros: bool = True) -> None:
    """Equal dtype and values, NaN where NaN (and -0.0 where -0.0 unless ``signed_zeros`` is False)."""
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, want {want.dtype}"
    np.testing.assert_array_equal(got, want, err_msg=what)
    if signed_zeros:
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want), err_msg=f"{what} (signs)")


def _within_ulp(got: np.ndarray, want: np.ndarray, what: str, ulps: float = 1.0) -> None:
    """float16 results within ``ulps`` units of the last place of ``want`` (NaN and inf exactly)."""
    assert got.dtype == np.float16, f"{what}: dtype {got.dtype}"
    g, w = got.astype(np.float64), want.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{what} (NaN)")
    finite = np.isfinite(w)
    np.testing.assert_array_equal(g[~finite & ~np.isnan(w)], w[~finite & ~np.isnan(w)], err_msg=what)
    spacing = np.spacing(np.abs(want[finite])).astype(np.float64)
    assert np.all(np.abs(g[finite] - w[finite]) <= ulps * spacing), what


def test_dtype_tables_and_promotion():
    assert to_numpy_dtype("f16") == np.dtype(np.float16)
    assert from_numpy_dtype(np.float16) == "f16"
    assert "f16" in FLOAT_DTYPES
    assert TensorType((3, 2), "f16").nbytes == 12
    # the wider float wins (NumPy, PyTorch); a float keeps its dtype against integers (PyTorch)
    assert promote_dtypes("f16", "f32") == promote_dtypes("f32", "f16") == "f32"
    assert promote_dtypes("f16", "f64") == "f64"
    for other in ("bool", "i8", "u8", "i32", "i64", "u64"):
        assert promote_dtypes("f16", other) == promote_dtypes(other, "f16") == "f16"


def _one_op(op: str, arity: int, in_dtype: str = "f16", **attrs) -> Graph:
    g = Graph(op)
    xs = [g.add_input(f"x{i}", TensorType((64,), in_dtype)) for i in range(arity)]
    g.add_output(g.add_node(op, xs, attrs).output)
    return g


# Correctly rounded in float32, so rounding that to float16 equals NumPy's float16 ufunc bit for bit.
EXACT_UNARY = {
    "neg": np.negative,
    "abs": np.abs,
    "sqrt": np.sqrt,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,
    "trunc": np.trunc,
    "sign": np.sign,
    "reciprocal": lambda x: F16(1) / x,
}
EXACT_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "fmod": np.fmod,
    "lt": np.less,
    "eq": np.equal,
    "ge": np.greater_equal,
}
# libm functions: within one float16 ulp of float64's value rounded to float16
LIBM_UNARY = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "sin": np.sin, "cos": np.cos}


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_elementwise_ops_against_numpy_float16(backend):
    x, y = _values(seed=1), _values(seed=2)[::-1].copy()
    with np.errstate(all="ignore"):
        for op, fn in EXACT_UNARY.items():
            (got,) = _run(_one_op(op, 1), backend, x)
            # sign(-0.0): NumPy gives 0.0, graphc's CPU kernels -0.0 (in f32 too)
            _same_bits(got, np.asarray(fn(x)), f"{backend} {op}", signed_zeros=op != "sign")
        for op, fn in EXACT_BINARY.items():
            (got,) = _run(_one_op(op, 2), backend, x, y)
            _same_bits(got, np.asarray(fn(x, y)), f"{backend} {op}")
        for op, fn in LIBM_UNARY.items():
            (got,) = _run(_one_op(op, 1), backend, x)
            _within_ulp(got, fn(x.astype(np.float64)).astype(F16), f"{backend} {op}")


def test_each_op_rounds_its_result_once():
    """(x * a) * b rounds x * a to float16 first, as NumPy does; f32 all the way would differ."""
    g = Graph("twice")
    x = g.add_input("x", TensorType((64,), "f16"))
    a = g.add_node("const", [], {"value": 1.1, "dtype": "f16"}).output
    b = g.add_node("const", [], {"value": 3.3, "dtype": "f16"}).output
    g.add_output(g.add_node("mul", [g.add_node("mul", [x, a]).output, b]).output)
    v = np.linspace(-4, 4, 64).astype(F16)
    want = (v * F16(1.1)) * F16(3.3)
    fused_in_f32 = (v.astype(np.float32) * np.float32(F16(1.1)) * np.float32(F16(3.3))).astype(F16)
    assert not np.array_equal(want, fused_in_f32)  # the case tells the two apart
    for backend in ("reference", "cpu"):
        _same_bits(_run(g, backend, v)[0], want, backend)


def test_casts_round_straight_from_the_source_dtype():
    """f64 -> f16 rounds once (no f32 step: 1 + 2**-11 + 2**-40 rounds up, through f32 it ties to even)."""
    x = np.array([1 + 2.0**-11 + 2.0**-40, 70000.0, -1e-9, 2.0**-25 * 1.5, np.nan, 0.1], np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # 70000 and inf overflow f16; NaN to int
        for backend in ("reference", "cpu"):
            (got,) = _run(_one_op("cast", 1, "f64", dtype="f16"), backend, np.resize(x, 64))
            _same_bits(got, np.resize(x, 64).astype(F16), f"{backend} f64 -> f16")
            h = _values(seed=3)
            for dtype in ("f32", "f64", "bool", "i32"):
                (got,) = _run(_one_op("cast", 1, dtype=dtype), backend, h)
                if (
                    dtype == "i32"
                ):  # finite values truncate toward zero (the rest is graphc's float-to-int rule)
                    finite = np.isfinite(h)
                    np.testing.assert_array_equal(got[finite], np.trunc(h[finite]).astype(np.int32))
                else:
                    _same_bits(got, h.astype(to_numpy_dtype(dtype)), f"{backend} f16 -> {dtype}")
            for dtype in ("f32", "i32", "u8", "bool"):  # to f16 straight from the source dtype
                src = (_values(seed=4).astype(np.float32) * 7).astype(to_numpy_dtype(dtype))
                (got,) = _run(_one_op("cast", 1, dtype, dtype="f16"), backend, src)
                _same_bits(got, src.astype(F16), f"{backend} {dtype} -> f16")


def test_sums_accumulate_in_f32_and_round_once():
    """A sum down a strided axis: NumPy's float16 add.reduce would round after every add."""
    x = np.random.default_rng(9).uniform(0.5, 1.5, (512, 4)).astype(F16)
    want = x.astype(np.float64).sum(axis=0).astype(F16)
    assert np.abs(x.sum(axis=0).astype(float) - want.astype(float)).max() >= 2 * np.spacing(want).max()
    for backend in ("reference", "cpu"):
        (got,) = _run(_one_op_2d("sum", x.shape, axes=(0,)), backend, x)
        _within_ulp(got, want, f"{backend} sum")


def _one_op_2d(op: str, shape: tuple[int, ...], **attrs) -> Graph:
    g = Graph(op)
    g.add_output(g.add_node(op, [g.add_input("x", TensorType(shape, "f16"))], attrs).output)
    return g


def _model(x, w, idx):
    h = x @ w
    s = h.sum(axis=0) + h.max(axis=1).reshape(-1)[:1]
    parts = [h.T[:, ::2], h.T[:, 1::2]]
    return s, F.softmax(h, dim=-1), F.cat(parts, 1), h.reshape(-1)[idx]


def test_a_small_model_on_cpu_equals_the_reference_backend():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 16)).astype(F16)
    w = (rng.standard_normal((16, 8)) / 4).astype(F16)
    idx = np.array([0, 5, 47, 3], np.int64)
    ref = graphc.compile(_model, x, w, idx, backend="reference")(x, w, idx)
    cpu = graphc.compile(_model, x, w, idx)(x, w, idx)
    for name, r, c in zip(("sums", "softmax", "concat", "gather"), ref, cpu):
        assert c.dtype == r.dtype == np.float16, name
        _within_ulp(c, r, f"cpu vs reference: {name}")
    h = (x.astype(np.float64) @ w.astype(np.float64)).astype(F16)
    _within_ulp(cpu[3], h.reshape(-1)[idx], "gather vs float64")
    # The movement is exact: the concat holds the bits of h as the CPU computed it (a float32
    # GEMM rounded to f16, which may round apart from the float64 product: double rounding).
    h32 = (x.astype(np.float32) @ w.astype(np.float32)).astype(F16)
    _within_ulp(h32, (x.astype(np.float64) @ w.astype(np.float64)).astype(F16), "float32 GEMM vs float64")
    _same_bits(cpu[2], np.concatenate([h32.T[:, ::2], h32.T[:, 1::2]], 1), "movement of h is exact")


def test_legalized_graph_computes_only_casts_on_f16():
    x = np.linspace(-3, 3, 12).astype(F16).reshape(3, 4)
    g = graphc.trace(_model, x, np.ones((4, 2), F16), np.array([1, 2], np.int64))
    assert has_half(g)
    legal = legalize_half(g)
    assert legal is not g and has_half(g)  # the caller's graph is untouched
    optimized = passes.optimize(legal)
    for node in optimized.nodes:
        touches = [v for v in (*node.inputs, *node.outputs) if v.dtype == "f16"]
        assert not touches or is_half_cast(node) or node.op in CONTROL_OPS, node
        for body in node.bodies:  # fusion never takes an f16 cast into a numba body
            assert not has_half(body), node
    plain = _one_op("add", 2, "f32")
    assert legalize_half(plain) is plain


def test_cpu_backend_refuses_an_unlegalized_f16_op():
    g = _one_op("exp", 1)
    scheduled = passes.schedule(g)
    with pytest.raises(GraphcError, match="numba has no float16"):
        Plan(scheduled, passes.plan_memory(scheduled), "cpu")(_values())


def test_scan_carries_f16_values_on_cpu():
    def f(h, xs):
        return scan(lambda c, x: (c * 0.5 + x, (c * 0.5 + x) * 3), h, xs)

    h = np.array([1.0, -2.0, 0.1], F16)
    xs = (np.arange(12).reshape(4, 3) / 3).astype(F16)
    carry, want = h, []
    for x in xs:
        carry = carry * F16(0.5) + x
        want.append(carry * F16(3))
    for backend in ("reference", "cpu"):
        c, ys = graphc.compile(f, h, xs, backend=backend)(h, xs)
        _same_bits(c, carry, f"{backend} carry")
        _same_bits(ys, np.stack(want), f"{backend} ys")


BITS = np.array([0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0xFE3F, 0x7BFF, 0x0001, 0x03FF, 0x3C00], np.uint16)


def _from_json(g: Graph) -> Graph:
    again = graph_from_json(graph_to_json(g))
    again.initializers.update(g.initializers)  # arrays travel beside the JSON (plan files: .npz)
    return again


def test_text_form_and_json_keep_f16_constants():
    g = Graph("h")
    x = g.add_input("x", TensorType((4,), "f16"))
    finite = np.array([0.1, 65504, -0.0, 2.0**-24], F16)
    c = g.add_input("c", TensorType((4,), "f16"), "const", finite)
    k = g.add_node("const", [], {"value": 0.1, "dtype": "f16"}).output
    g.add_output(g.add_node("add", [g.add_node("mul", [x, c]).output, k]).output)
    a = np.array([1.5, -2.0, 3.0, 0.25], F16)
    with np.errstate(over="ignore"):
        want = a * finite + F16(0.1)
    for again in (parse_graph(print_graph(g)), _from_json(g)):
        assert again.inputs[1].type == TensorType((4,), "f16")
        np.testing.assert_array_equal(again.initializers["c"].view(np.uint16), finite.view(np.uint16))
        _same_bits(execute(again, {"x": a})[0], want, "round trip")


def test_plan_files_keep_f16_values_bit_for_bit(tmp_path):
    g = Graph("p")
    x = g.add_input("x", TensorType((10,), "f16"))
    w = g.add_input("w", TensorType((10,), "f16"), "const", BITS.view(F16))
    g.add_output(g.add_node("maximum", [x, w]).output)
    g.add_output(w)
    plan = compile_graph(g)
    a = np.full(10, -1.0, F16)
    before = plan(a)
    plan.save(str(tmp_path / "p.graphc"))
    after = graphc.load_plan(str(tmp_path / "p.graphc"))(a)
    for b, c in zip(before, after):
        np.testing.assert_array_equal(b.view(np.uint16), c.view(np.uint16))
    np.testing.assert_array_equal(after[1].view(np.uint16), BITS)  # NaN payloads included


def test_weights_and_checkpoint_arrays_keep_f16_bits(tmp_path):
    from graphc.runtime import archive

    arrays = {"w": BITS.view(F16).reshape(2, 5), "b": _values(24, seed=6)}
    pytest.importorskip("safetensors.numpy").save_file(arrays, str(tmp_path / "w.safetensors"))
    np.savez(tmp_path / "w.npz", **arrays)
    for name in ("w.safetensors", "w.npz"):
        loaded = graphc.load_weights(str(tmp_path / name))
        for key, arr in arrays.items():
            assert loaded[key].dtype == np.float16
            np.testing.assert_array_equal(loaded[key].view(np.uint16), arr.view(np.uint16))
    with open(tmp_path / "a.npy", "wb") as fh:
        np.save(fh, arrays["w"])
    data = (tmp_path / "a.npy").read_bytes()
    back = archive.read_npy(data, "a.npy", np.dtype(F16), (2, 5))
    np.testing.assert_array_equal(back.view(np.uint16), BITS.reshape(2, 5))


def test_onnx_float16_import_export_against_onnxruntime():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    from graphc.onnx.exporter import to_onnx
    from graphc.onnx.importer import load
    from graphc.onnx.proto import GRAPHC_TO_ONNX, graphc_dtype

    assert graphc_dtype(TensorProto.FLOAT16, "here") == "f16" and GRAPHC_TO_ONNX["f16"] == TensorProto.FLOAT16
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((8, 5)) / 3).astype(F16)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Softmax", ["h"], ["p"], axis=-1),
        helper.make_node("Transpose", ["h"], ["t"], perm=[1, 0]),
    ]
    graph = helper.make_graph(
        nodes,
        "f16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT16, None) for n in ("p", "t")],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((4, 8)).astype(F16)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})
    for backend in ("reference", "cpu"):
        got = graphc.compile(load(model), x, backend=backend)(x)
        for name, g_, w_ in zip(("softmax", "transpose"), got, want):
            _within_ulp(g_, w_, f"{backend} {name} vs onnxruntime", ulps=2)
    exported = to_onnx(graphc.trace(load(model), x))
    assert exported.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    again = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    for g_, w_ in zip(again.run(None, {exported.graph.input[0].name: x}), want):
        _same_bits(g_, w_, "exported model on onnxruntime")
    assert onnx is not None


F16_NODE_TESTS = (
    "test_cast_DOUBLE_to_FLOAT16",
    "test_celu_float16_expanded",
    "test_mod_float16_mixed_sign_fmod_0",
    "test_isnan_float16",
    "test_attention_4d_fp16_expanded",
)


def test_float16_node_tests_on_cpu_kernels():
    pytest.importorskip("onnx")
    from graphc.onnx.conformance import node_cases, run_case

    cases = {c.name: c for c in node_cases() if c.name in F16_NODE_TESTS}
    assert set(cases) == set(F16_NODE_TESTS)
    for name in F16_NODE_TESTS:
        outcome = run_case(cases[name], backend="cpu")
        assert outcome.status == "pass", f"{name}: {outcome.detail}"


def test_cuda_backend_refuses_f16_graphs_with_a_graphc_error():
    with pytest.raises(GraphcError, match="CUDA backend has no float16"):
        compile_graph(_one_op("add", 2), device="cuda")


# ---------------------------------------------------------------- bfloat16 (ml_dtypes' NumPy type)
try:
    import ml_dtypes

    BF16 = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover - onnx brings ml_dtypes
    BF16 = None
needs_bf16 = pytest.mark.skipif(BF16 is None, reason="bf16 needs ml_dtypes (installed with onnx)")


def _bf16_values() -> np.ndarray:
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, 3e38, 1e-40, -1e-40, 1.0, 0.1, -2.5, 1 / 3]
    rand = np.random.default_rng(8).standard_normal(64 - len(edges)) * 10
    return np.concatenate([edges, rand]).astype(BF16)


@needs_bf16
def test_bf16_dtype_tables_and_promotion():
    assert to_numpy_dtype("bf16") == np.dtype(BF16) and from_numpy_dtype(BF16) == "bf16"
    assert promote_dtypes("f16", "bf16") == promote_dtypes("bf16", "f16") == "f32"  # PyTorch's rule
    assert promote_dtypes("bf16", "f32") == "f32" and promote_dtypes("bf16", "i64") == "bf16"


@needs_bf16
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_bf16_ops_compute_in_f32_and_round_once(backend):
    """Both backends legalize bf16 (NumPy has no bfloat16 arithmetic): each op is the float32 op on
    the widened values, rounded once to bfloat16 (nearest even) by ml_dtypes' conversion."""
    x, y = _bf16_values(), _bf16_values()[::-1].copy()
    wx, wy = x.astype(np.float32), y.astype(np.float32)
    with np.errstate(all="ignore"):
        for op, fn in {"add": np.add, "mul": np.multiply, "div": np.divide, "maximum": np.maximum}.items():
            (got,) = _run(_one_op(op, 2, "bf16"), backend, x, y)
            want = fn(wx, wy).astype(BF16)
            np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16), err_msg=op)
        (got,) = _run(_one_op("exp", 1, "bf16"), backend, x)
        want = np.exp(x.astype(np.float64)).astype(BF16).astype(np.float64)
        g = got.astype(np.float64)
        finite = np.isfinite(want)
        assert np.all(
            np.abs(g[finite] - want[finite]) <= np.spacing(np.abs(want[finite]).astype(BF16)).astype(float)
        )
        (got,) = _run(_one_op("cast", 1, "f64", dtype="bf16"), backend, x.astype(np.float64) * 1.001)
        np.testing.assert_array_equal(
            got.view(np.uint16), (x.astype(np.float64) * 1.001).astype(BF16).view(np.uint16)
        )


@needs_bf16
def test_bf16_text_form_plan_and_weights_files_keep_bits(tmp_path):
    bits = np.array([0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x0001, 0x3F80, 0x7F7F], np.uint16)
    g = Graph("p")
    x = g.add_input("x", TensorType((8,), "bf16"))
    w = g.add_input("w", TensorType((8,), "bf16"), "param", bits.view(BF16))
    g.add_output(g.add_node("maximum", [x, w]).output)
    g.add_output(w)
    text = Graph("t")
    text.add_output(text.add_input("c", TensorType((8,), "bf16"), "const", bits.view(BF16)))
    again = parse_graph(print_graph(text))
    finite = np.isfinite(bits.view(BF16).astype(np.float32))
    np.testing.assert_array_equal(again.initializers["c"].view(np.uint16)[finite], bits[finite])
    compile_graph(g).save(str(tmp_path / "p.graphc"))
    out = graphc.load_plan(str(tmp_path / "p.graphc"))(np.zeros(8, BF16))
    np.testing.assert_array_equal(out[1].view(np.uint16), bits)  # NaN payloads included
    pytest.importorskip("safetensors.numpy").save_file(
        {"w": bits.view(BF16)}, str(tmp_path / "w.safetensors")
    )
    np.testing.assert_array_equal(
        graphc.load_weights(str(tmp_path / "w.safetensors"))["w"].view(np.uint16), bits
    )


BF16_NODE_TESTS = ("test_cast_FLOAT_to_BFLOAT16", "test_celu_bfloat16", "test_einsum_batch_matmul_bfloat16")


@needs_bf16
def test_bfloat16_onnx_type_map_and_node_tests_on_cpu_kernels():
    pytest.importorskip("onnx")
    from onnx import TensorProto

    from graphc.onnx.conformance import node_cases, run_case
    from graphc.onnx.proto import GRAPHC_TO_ONNX, graphc_dtype

    assert (
        graphc_dtype(TensorProto.BFLOAT16, "here") == "bf16"
        and GRAPHC_TO_ONNX["bf16"] == TensorProto.BFLOAT16
    )
    cases = {c.name: c for c in node_cases() if c.name in BF16_NODE_TESTS}
    assert set(cases) == set(BF16_NODE_TESTS)
    for name in BF16_NODE_TESTS:
        outcome = run_case(cases[name], backend="cpu")
        assert outcome.status == "pass", f"{name}: {outcome.detail}"
