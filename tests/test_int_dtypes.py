"""The integer element types i16, u16, u32, u64 (next to i8, u8, i32, i64): NumPy's wrap-around
arithmetic of that width on the reference and CPU backends, the type rules (no silent float64 for
u64 mixed with a signed type, float-only ops refused), and every place a dtype is stored or read
(text form, plan files, weights files, ONNX type maps, CUDA sources)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.compiler import compile_graph
from graphc.ir import Graph, GraphcError, TensorType
from graphc.ir.parser import parse_graph
from graphc.ir.printer import print_graph
from graphc.ir.types import INT_DTYPES, promote_dtypes, to_numpy_dtype
from graphc.kernels.reference import execute

NEW = ("i16", "u16", "u32", "u64")
BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "fmod": np.fmod,
    "remainder": np.remainder,
    "floordiv": np.floor_divide,
    "lt": np.less,
    "le": np.less_equal,
    "eq": np.equal,
    "ne": np.not_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
}
UNARY = {"neg": np.negative, "abs": np.abs, "sign": np.sign, "floor": lambda x: x, "round": lambda x: x}


def _edges(dtype: str) -> np.ndarray:
    """The dtype's extremes, small values of both signs, and values above 2**53 (float64's integers)."""
    info = np.iinfo(to_numpy_dtype(dtype))
    picks = {int(info.min), int(info.min) + 1, -7, -1, 0, 1, 2, 3, 7, int(info.max) - 1, int(info.max)}
    picks |= {2**40 + 3, 2**53 + 1, 2**63 + 5}
    return np.array(sorted(v for v in picks if info.min <= v <= info.max), dtype=to_numpy_dtype(dtype))


def _run(g: Graph, backend: str, *arrays: np.ndarray) -> list[np.ndarray]:
    if backend == "reference":
        return execute(g, {v.name: a for v, a in zip(g.inputs, arrays)})
    out = compile_graph(g, backend=backend)(*arrays)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _check(got: list[np.ndarray], want: dict[str, np.ndarray], what: str) -> None:
    for (name, w), r in zip(want.items(), got):
        assert r.dtype == w.dtype, f"{what} {name}: dtype {r.dtype}, NumPy's {w.dtype}"
        np.testing.assert_array_equal(r, w, err_msg=f"{what} {name}")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", ("i8", "i64", *NEW))
def test_elementwise_ops_wrap_like_numpy(dtype, backend):
    vals = _edges(dtype)
    a, b = np.repeat(vals, len(vals)), np.tile(vals, len(vals))  # every pair of edge values
    g = Graph("ints")
    x = g.add_input("x", TensorType(a.shape, dtype))
    y = g.add_input("y", TensorType(b.shape, dtype))
    want = {}
    with np.errstate(all="ignore"):
        for op, fn in BINARY.items():
            g.add_output(g.add_node(op, [x, y]).output)
            want[op] = fn(a, b)
        for op, fn in UNARY.items():
            g.add_output(g.add_node(op, [x]).output)
            want[op] = fn(a)
    _check(_run(g, backend, a, b), want, f"{dtype} on {backend}")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", NEW)
def test_reductions_and_casts_match_numpy(dtype, backend):
    npdt = to_numpy_dtype(dtype)
    info = np.iinfo(npdt)
    vals = _edges(dtype)
    with np.errstate(all="ignore"):
        a = np.stack([vals, vals[::-1], vals * npdt.type(3)])
    floats = np.array([0.0, 1.5, 2.5, 100.7, 65535.0, 2.0**32 - 1, 2.0**53, 2.0**63 + 2.0**12, -0.0, -3.0])
    floats = floats[(floats >= info.min) & (floats <= info.max)]
    g = Graph("ints")
    x = g.add_input("x", TensorType(a.shape, dtype))
    f = g.add_input("f", TensorType(floats.shape, "f64"))
    want = {}
    with np.errstate(all="ignore"):
        for op, axes in (("sum", (0,)), ("sum", (0, 1)), ("max", (1,)), ("min", (1,))):
            g.add_output(g.add_node(op, [x], {"axes": axes}).output)
            want[f"{op}{axes}"] = getattr(np, op)(a, axis=axes).astype(npdt)
        g.add_output(g.add_node("argmax", [x], {"axis": 1}).output)
        want["argmax"] = np.argmax(a, axis=1)
        for to in ("f64", "f32", "i64", "u64", "i32", "u8", "bool"):
            g.add_output(g.add_node("cast", [x], {"dtype": to}).output)
            want[f"cast to {to}"] = a.astype(to_numpy_dtype(to))
        g.add_output(g.add_node("cast", [f], {"dtype": dtype}).output)
        want["cast from f64"] = floats.astype(npdt)
    _check(_run(g, backend, a, floats), want, f"{dtype} on {backend}")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_fmod_and_floordiv_at_the_lowest_signed_value(backend):
    """abs(INT_MIN) and INT_MIN // -1 wrap: the forms avoid both (NumPy gives 0 and INT_MIN)."""
    for dtype in ("i8", "i16", "i32", "i64"):
        lo = np.iinfo(to_numpy_dtype(dtype)).min
        a = np.array([lo, lo, lo, lo + 1, -7, 7], to_numpy_dtype(dtype))
        b = np.array([-1, 3, -7, -1, -1, -3], to_numpy_dtype(dtype))
        g = Graph("edge")
        x, y = g.add_input("x", TensorType(a.shape, dtype)), g.add_input("y", TensorType(b.shape, dtype))
        for op in ("fmod", "floordiv", "remainder"):
            g.add_output(g.add_node(op, [x, y]).output)
        with np.errstate(all="ignore"):
            want = {"fmod": np.fmod(a, b), "floordiv": np.floor_divide(a, b), "remainder": np.remainder(a, b)}
        _check(_run(g, backend, a, b), want, f"{dtype} on {backend}")


def test_promotion_rules():
    assert promote_dtypes("u8", "i8") == "i16"
    assert promote_dtypes("u16", "i16") == "i32"
    assert promote_dtypes("u32", "i32") == "i64"
    assert promote_dtypes("u32", "u64") == "u64"
    assert promote_dtypes("u64", "bool") == "u64"
    assert promote_dtypes("u64", "f32") == "f32" and promote_dtypes("i16", "f64") == "f64"
    for signed in ("i8", "i16", "i32", "i64"):
        with pytest.raises(GraphcError, match="no common integer dtype.*cast one operand explicitly"):
            promote_dtypes("u64", signed)
    with pytest.raises(GraphcError, match="unknown dtype"):
        promote_dtypes("u64", "u128")


def test_traced_mixed_integers_promote_or_are_refused():
    a = np.array([40000, 2, 65535], np.uint16)
    b = np.array([-3, 30000, -32768], np.int16)
    out = graphc.compile(lambda x, y: x + y, a, b)(a, b)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, a.astype(np.int32) + b)
    big = np.array([2**63 + 1], np.uint64)
    with pytest.raises(GraphcError, match="u64 and i64 have no common integer dtype"):
        graphc.trace(lambda x, y: x + y, big, np.array([1], np.int64))


def test_type_rules_refuse_float_only_ops_and_mixed_operands():
    g = Graph("rules")
    u = g.add_input("u", TensorType((3,), "u64"))
    i = g.add_input("i", TensorType((3,), "i64"))
    s = g.add_input("s", TensorType((3,), "u16"))
    with pytest.raises(GraphcError, match=r"add: dtypes differ: u64, i64"):
        g.add_node("add", [u, i])
    for op in ("exp", "sqrt", "reciprocal"):
        with pytest.raises(GraphcError, match=rf"{op}: needs a float operand, got u16"):
            g.add_node(op, [s])
    with pytest.raises(GraphcError, match="div: needs float operands, got u32"):
        v = g.add_input("v", TensorType((3,), "u32"))
        g.add_node("div", [v, v])
    with pytest.raises(GraphcError, match="qmatmul needs i8/u8 operands, got i16"):
        w = g.add_input("w", TensorType((2, 3), "i16"))
        g.add_node("qmatmul", [w, w])
    with pytest.raises(GraphcError, match="value -1 is out of range for u32"):
        g.add_node("const", [], {"value": -1, "dtype": "u32"})


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", ["i16", "u16"])
def test_quantize_to_16_bits(dtype, backend):
    """ONNX QuantizeLinear's formula: saturate(round_half_even(x / s) + z), and back."""
    npdt = to_numpy_dtype(dtype)
    info = np.iinfo(npdt)
    x = np.array([0.0, 0.5, 1.5, -2.5, 1e6, -1e6, 123.25, -7.75, np.nan], np.float32)
    scale, zero = np.array(0.25, np.float32), np.array(info.min // 4 + info.max // 4, npdt)
    g = Graph("q")
    xv, sv, zv = (
        g.add_input(n, TensorType(a.shape, d))
        for n, a, d in (("x", x, "f32"), ("s", scale, "f32"), ("z", zero, dtype))
    )
    q = g.add_node("quantize", [xv, sv, zv]).output
    g.add_output(q)
    g.add_output(g.add_node("dequantize", [q, sv, zv]).output)
    with np.errstate(invalid="ignore"):
        t = np.where(np.isnan(x), info.min, np.round(x.astype(np.float64) / 0.25) + int(zero))  # NaN: lowest
    want_q = np.clip(t, info.min, info.max).astype(npdt)
    want = {
        "quantize": want_q,
        "dequantize": ((want_q.astype(np.int64) - int(zero)) * 0.25).astype(np.float32),
    }
    _check(_run(g, backend, x, scale, zero), want, f"{dtype} on {backend}")
    assert want_q.min() == info.min and want_q.max() == info.max  # saturation was exercised


@pytest.mark.parametrize("dtype", NEW)
def test_text_form_and_plan_files_keep_the_dtype(dtype, tmp_path):
    top = int(np.iinfo(to_numpy_dtype(dtype)).max)
    g = Graph("text")
    x = g.add_input("x", TensorType((2, 3), dtype))
    c = g.add_node("const", [], {"value": top, "dtype": dtype}).output
    g.add_output(g.add_node("sub", [c, x]).output)
    again = parse_graph(print_graph(g))
    assert [v.type for v in again.inputs] == [TensorType((2, 3), dtype)]
    assert again.outputs[0].type == TensorType((2, 3), dtype)
    a = np.arange(6, dtype=to_numpy_dtype(dtype)).reshape(2, 3)
    want = to_numpy_dtype(dtype).type(top) - a
    np.testing.assert_array_equal(execute(again, {"x": a})[0], want)  # the constant stayed exact
    plan = compile_graph(g, backend="cpu")
    plan.save(str(tmp_path / "p.graphc"))
    got = graphc.load_plan(str(tmp_path / "p.graphc"))(a)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_weights_files_load_every_integer_dtype(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    arrays = {d: (np.arange(4) * 1000).astype(to_numpy_dtype(d)) for d in INT_DTYPES}
    arrays["u64"][-1] = 2**64 - 1
    safetensors.save_file(arrays, str(tmp_path / "w.safetensors"))
    np.savez(tmp_path / "w.npz", **arrays)
    for name in ("w.safetensors", "w.npz"):
        loaded = graphc.load_weights(str(tmp_path / name))
        for key, arr in arrays.items():
            assert loaded[key].dtype == arr.dtype
            np.testing.assert_array_equal(loaded[key], arr)


def test_onnx_type_maps_and_export_round_trip():
    pytest.importorskip("onnx")
    from onnx import TensorProto

    from graphc.onnx.exporter import to_onnx
    from graphc.onnx.importer import load
    from graphc.onnx.proto import GRAPHC_TO_ONNX, graphc_dtype

    codes = {"i16": TensorProto.INT16, "u16": TensorProto.UINT16, "u32": TensorProto.UINT32}
    codes["u64"] = TensorProto.UINT64
    for dtype, code in codes.items():
        assert graphc_dtype(code, "here") == dtype and GRAPHC_TO_ONNX[dtype] == code
    with pytest.raises(GraphcError, match="here: element type complex64 is not supported"):
        graphc_dtype(TensorProto.COMPLEX64, "here")
    g = Graph("export")
    x = g.add_input("x", TensorType((3,), "u32"))
    g.add_output(g.add_node("mul", [x, x]).output)
    model = to_onnx(g)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT32
    a = np.array([3, 65536, 2**32 - 1], np.uint32)
    got = graphc.compile(load(model), a)(a)
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, a * a)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.int16, np.int64])
def test_onnx_topk_smallest_of_unsigned_and_lowest_values(dtype):
    """TopK(largest=0) ranks by the complement, not by -x (which wraps for unsigned x and INT_MIN)."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    from graphc.onnx.importer import load
    from graphc.onnx.proto import GRAPHC_TO_ONNX

    info = np.iinfo(dtype)
    x = np.array([[5, 0, info.max, 1, info.min, 7], [3, info.max - 1, 2, 0, 9, info.min + 1]], dtype)
    code = GRAPHC_TO_ONNX[TensorType.of(x).dtype]
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], largest=0)
    graph = helper.make_graph(
        [node],
        "topk",
        [helper.make_tensor_value_info("x", code, x.shape)],
        [helper.make_tensor_value_info("v", code, None), helper.make_tensor_value_info("i", 7, None)],
        [numpy_helper.from_array(np.array([3], np.int64), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    values, indices = graphc.compile(load(model), x)(x)
    want = np.argsort(x, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(indices, want)
    np.testing.assert_array_equal(values, np.take_along_axis(x, want, axis=1))
    assert onnx is not None
