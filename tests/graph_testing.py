"""Test support shared by graphc's test suites (not part of the package): example graphs built with
ir ops, a hypothesis strategy of random well-typed graphs of primitives, random feeds, and an
equivalence check. pytest puts tests/ on sys.path, so tests import it as ``graph_testing``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st

from graphc.ir import Graph, MemoryPlan, TensorType, Value, broadcast_shapes, parse_graph, verify
from graphc.kernels.reference import execute
from graphc.passes.util import canonical_text

F32 = "f32"


# ---------------------------------------------------------------------------- feeds and checks
def make_feeds(graph: Graph, seed: int = 0, low: float = 0.5, high: float = 1.5) -> dict[str, np.ndarray]:
    """Random arrays for the graph's data inputs (floats in [low, high), ints in [0, 4))."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in graph.data_inputs:
        if v.dtype in ("f32", "f64"):
            feeds[v.name] = rng.uniform(low, high, v.shape).astype(v.type.np_dtype)
        elif v.dtype == "bool":
            feeds[v.name] = rng.integers(0, 2, v.shape).astype(bool)
        else:
            feeds[v.name] = rng.integers(0, 4, v.shape).astype(v.type.np_dtype)
    return feeds


def assert_same_outputs(
    before: Graph,
    after: Graph,
    feeds: dict[str, np.ndarray],
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Execute both graphs with the reference kernels and compare every output."""
    with np.errstate(all="ignore"):
        want = execute(before, feeds)
        got = execute(after, feeds)
    assert len(want) == len(got), f"{len(want)} outputs before, {len(got)} after"
    for i, (w, g) in enumerate(zip(want, got)):
        assert w.shape == g.shape and w.dtype == g.dtype, (
            f"output {i}: {w.dtype}{w.shape} vs {g.dtype}{g.shape}"
        )
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"output {i}")


def parse(text: str) -> Graph:
    """``ir.parse_graph``, also accepting a graph header wrapped over several lines."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    head = 0
    while not lines[head].endswith("{"):
        head += 1
    return parse_graph("\n".join([" ".join(lines[: head + 1]), *lines[head + 1 :]]))


def check_rewrite(
    pass_fn: Callable[[Graph], Graph], before: str, after: str, seed: int = 0, rtol: float = 1e-5
) -> Graph:
    """Text in, text out: ``pass_fn(parse(before))`` has the structure of ``after`` and the same outputs.

    Node outputs are compared by position (``util.canonical_text``), inputs by name.
    """
    original = parse(before)
    verify(original)
    result = pass_fn(parse(before))
    verify(result)
    expected = parse(after)
    assert canonical_text(result) == canonical_text(expected), (
        f"got:\n{canonical_text(result)}\nexpected:\n{canonical_text(expected)}"
    )
    assert_same_outputs(original, result, make_feeds(original, seed), rtol=rtol)
    return result


def const(g: Graph, value: float, dtype: str = F32) -> Value:
    """A scalar ``const`` node."""
    return g.op("const", value=value, dtype=dtype)


def _param(
    g: Graph, name: str, shape: tuple[int, ...], rng: np.random.Generator, kind: str = "param", scale=None
):
    scale = 1.0 / math.sqrt(shape[-1]) if scale is None else scale
    arr = (rng.standard_normal(shape) * scale).astype(np.float32)
    return g.add_input(name, TensorType(shape, F32), kind, arr)


# ---------------------------------------------------------------------------- example graphs
def gelu(g: Graph, a: Value) -> Value:
    """Exact GELU: 0.5 * a * (1 + erf(a / sqrt 2))."""
    t = g.op("erf", g.op("mul", a, const(g, 1 / math.sqrt(2))))
    return g.op("mul", g.op("mul", a, g.op("add", t, const(g, 1.0))), const(g, 0.5))


def layer_norm(g: Graph, y: Value, eps: float = 1e-5, weight=None, bias=None) -> Value:
    """Layer norm over the last axis: mean = sum/D, var from the centered values, rsqrt(var + eps)."""
    axis = len(y.shape) - 1
    d = float(y.shape[-1])
    mean = g.op("div", g.op("sum", y, axes=(axis,), keepdims=True), const(g, d))
    c = g.op("sub", y, mean)
    var = g.op("div", g.op("sum", g.op("mul", c, c), axes=(axis,), keepdims=True), const(g, d))
    out = g.op("mul", c, g.op("rsqrt", g.op("add", var, const(g, eps))))
    if weight is not None:
        out = g.op("mul", out, weight)
    if bias is not None:
        out = g.op("add", out, bias)
    return out


def softmax(g: Graph, x: Value) -> Value:
    """Softmax over the last axis: max, sub, exp, sum, div."""
    axis = len(x.shape) - 1
    e = g.op("exp", g.op("sub", x, g.op("max", x, axes=(axis,), keepdims=True)))
    return g.op("div", e, g.op("sum", e, axes=(axis,), keepdims=True))


def fusion_chain_graph(rows: int = 64, cols: int = 128) -> Graph:
    """docs/BENCHMARKS.md's fusion chain: ``layer_norm(gelu(x + b) * s + r)`` over the last axis."""
    g = Graph("fusion_chain")
    x = g.add_input("x", TensorType((rows, cols)))
    b = g.add_input("b", TensorType((cols,)))
    s = g.add_input("s", TensorType((cols,)))
    r = g.add_input("r", TensorType((rows, cols)))
    y = g.op("add", g.op("mul", gelu(g, g.op("add", x, b)), s), r)
    g.add_output(layer_norm(g, y))
    return g


def linear(g: Graph, x: Value, name: str, n_in: int, n_out: int, rng) -> Value:
    """``x @ W.T + b`` with ``W`` [out, in] and ``b`` [out] params named like PyTorch's."""
    w = _param(g, f"{name}.weight", (n_out, n_in), rng)
    b = _param(g, f"{name}.bias", (n_out,), rng)
    return g.op("add", g.op("matmul", x, g.op("transpose", w, perm=(1, 0))), b)


def relu(g: Graph, x: Value) -> Value:
    """``maximum(x, 0)``."""
    return g.op("maximum", x, const(g, 0.0))


def mlp_graph(batch: int = 64, sizes: tuple[int, ...] = (20, 256, 10), seed: int = 0) -> Graph:
    """An MLP forward with ReLU between layers."""
    rng = np.random.default_rng(seed)
    g = Graph("mlp")
    h = g.add_input("x", TensorType((batch, sizes[0])))
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        h = linear(g, h, f"layers.{i}", a, b, rng)
        if i < len(sizes) - 2:
            h = relu(g, h)
    g.add_output(h)
    return g


def transformer_layer_graph(
    batch: int = 2, seq: int = 16, d: int = 32, heads: int = 4, ff: int = 64, seed: int = 0
) -> Graph:
    """A post-norm encoder layer (attention written as matmuls, ReLU feed-forward)."""
    rng = np.random.default_rng(seed)
    g = Graph("transformer_layer")
    dh = d // heads
    x = g.add_input("x", TensorType((batch, seq, d)))
    x2 = g.op("reshape", x, shape=(batch * seq, d))

    def heads_of(name: str) -> Value:
        t = g.op("reshape", linear(g, x2, name, d, d, rng), shape=(batch, seq, heads, dh))
        return g.op("transpose", t, perm=(0, 2, 1, 3))

    q, k, v = heads_of("attn.q"), heads_of("attn.k"), heads_of("attn.v")
    scores = g.op(
        "mul", g.op("matmul", q, g.op("transpose", k, perm=(0, 1, 3, 2))), const(g, 1 / math.sqrt(dh))
    )
    attn = g.op("matmul", softmax(g, scores), v)
    attn = g.op("reshape", g.op("transpose", attn, perm=(0, 2, 1, 3)), shape=(batch * seq, d))
    attn = linear(g, attn, "attn.out", d, d, rng)
    w1 = g.add_input("norm1.weight", TensorType((d,)), "param", rng.uniform(0.5, 1.5, d).astype(np.float32))
    b1 = g.add_input("norm1.bias", TensorType((d,)), "param", rng.normal(0, 0.5, d).astype(np.float32))
    h = layer_norm(g, g.op("add", x2, attn), weight=w1, bias=b1)
    f = linear(g, relu(g, linear(g, h, "ff.0", d, ff, rng)), "ff.2", ff, d, rng)
    w2 = g.add_input("norm2.weight", TensorType((d,)), "param", rng.uniform(0.5, 1.5, d).astype(np.float32))
    b2 = g.add_input("norm2.bias", TensorType((d,)), "param", rng.normal(0, 0.5, d).astype(np.float32))
    out = layer_norm(g, g.op("add", h, f), weight=w2, bias=b2)
    g.add_output(g.op("reshape", out, shape=(batch, seq, d)))
    return g


def conv2d(g: Graph, x: Value, name: str, c_out: int, rng, padding: int = 1) -> Value:
    """3x3 convolution as im2col + matmul + bias, NCHW, PyTorch parameter names and shapes."""
    n, c, h, w = x.shape
    weight = _param(g, f"{name}.weight", (c_out, c, 3, 3), rng, scale=1 / math.sqrt(c * 9))
    bias = _param(g, f"{name}.bias", (c_out,), rng)
    cols = g.op("im2col", x, kernel=(3, 3), padding=(padding, padding))
    wm = g.op("reshape", weight, shape=(c_out, c * 9))
    y = g.op("add", g.op("matmul", wm, cols), g.op("reshape", bias, shape=(c_out, 1)))
    oh, ow = h + 2 * padding - 2, w + 2 * padding - 2
    return g.op("reshape", y, shape=(n, c_out, oh, ow))


def max_pool2(g: Graph, x: Value) -> Value:
    """2x2 max pooling (stride 2) with reshape, transpose and a trailing-axes max."""
    n, c, h, w = x.shape
    t = g.op("reshape", x, shape=(n, c, h // 2, 2, w // 2, 2))
    t = g.op("transpose", t, perm=(0, 1, 2, 4, 3, 5))
    return g.op("max", t, axes=(4, 5))


def batch_norm_eval(g: Graph, x: Value, name: str, rng, eps: float = 1e-5) -> Value:
    """Eval-mode BatchNorm2d: (x - mean) * rsqrt(var + eps) * weight + bias, per channel."""
    c = x.shape[1]
    mean = g.add_input(
        f"{name}.running_mean", TensorType((c,)), "const", rng.normal(0, 0.5, c).astype(np.float32)
    )
    var = g.add_input(
        f"{name}.running_var", TensorType((c,)), "const", rng.uniform(0.5, 2, c).astype(np.float32)
    )
    weight = g.add_input(
        f"{name}.weight", TensorType((c,)), "param", rng.uniform(0.5, 1.5, c).astype(np.float32)
    )
    bias = g.add_input(f"{name}.bias", TensorType((c,)), "param", rng.normal(0, 0.5, c).astype(np.float32))

    def per_channel(v: Value) -> Value:
        return g.op("reshape", v, shape=(1, c, 1, 1))

    inv = g.op("rsqrt", g.op("add", per_channel(var), const(g, eps)))
    y = g.op("mul", g.op("sub", x, per_channel(mean)), inv)
    return g.op("add", g.op("mul", y, per_channel(weight)), per_channel(bias))


def conv_bn_graph(n: int = 2, c_in: int = 3, size: int = 8, c_out: int = 4, seed: int = 0) -> Graph:
    """Conv2d(3x3, padding 1) followed by BatchNorm2d in eval mode and ReLU."""
    rng = np.random.default_rng(seed)
    g = Graph("conv_bn")
    x = g.add_input("x", TensorType((n, c_in, size, size)))
    y = batch_norm_eval(g, conv2d(g, x, "conv", c_out, rng), "bn", rng)
    g.add_output(relu(g, y))
    return g


def cnn_graph(batch: int = 4, size: int = 16, seed: int = 0) -> Graph:
    """conv3x3(3->8)-ReLU-maxpool2-conv3x3(8->16)-ReLU-maxpool2-Linear(->10), like cnn_train's forward."""
    rng = np.random.default_rng(seed)
    g = Graph("cnn")
    x = g.add_input("x", TensorType((batch, 3, size, size)))
    h = max_pool2(g, relu(g, conv2d(g, x, "conv1", 8, rng)))
    h = max_pool2(g, relu(g, conv2d(g, h, "conv2", 16, rng)))
    flat = g.op("reshape", h, shape=(batch, 16 * (size // 4) ** 2))
    g.add_output(linear(g, flat, "fc", 16 * (size // 4) ** 2, 10, rng))
    return g


# ---------------------------------------------------------------------------- random graphs
UNARY_SAFE = ("neg", "abs", "tanh", "sin", "cos", "erf", "sign")
UNARY_POSITIVE = ("sqrt", "log", "rsqrt", "reciprocal")  # applied to abs(x) + 1
BINARY = ("add", "sub", "mul", "maximum", "minimum")
SPECIAL_SCALARS = (0.0, 1.0, -1.0, 2.0, 0.5)


def _compatible(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        broadcast_shapes(a, b)
        return True
    except Exception:
        return False


@st.composite
def graphs(draw, max_ops: int = 10, matmul: bool = True, extended: bool = True) -> Graph:
    """A random well-typed graph of primitives whose values stay finite on inputs in [0.5, 1.5).

    Ops: safe pointwise, broadcasting binaries (operands from earlier values, new inputs of
    broadcast-compatible shapes, or special scalar consts), where/compare, reductions over random
    axes, reshape, transpose, broadcast_to, matmul, slices (views and strided), pads, concats,
    gathers (constant or data indices), integer arithmetic (i32/i64 between casts) and
    rng_uniform draws. Values are reused, so many have several readers. Outputs are the last
    value and up to two earlier ones. ``extended=False`` keeps to the original f32 op set.
    """
    g = Graph("random")
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    dims = [draw(st.integers(1, 4)) for _ in range(3)]
    rank = draw(st.integers(1, 3))
    base = tuple(dims[3 - rank :])
    pool: list[Value] = [g.add_input("x", TensorType(base))]
    counter = [0]

    def new_input(shape: tuple[int, ...]) -> Value:
        counter[0] += 1
        kind = draw(st.sampled_from(["data", "param", "const"]))
        value = None if kind == "data" else rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return g.add_input(f"in{counter[0]}", TensorType(shape), kind, value)

    def pick() -> Value:
        recent = pool[-4:]
        return draw(st.sampled_from(recent if draw(st.booleans()) else pool))

    def partner(x: Value) -> Value:
        choice = draw(st.integers(0, 3))
        if choice == 0:
            same = [v for v in pool if _compatible(v.shape, x.shape)]
            return draw(st.sampled_from(same))
        if choice == 1:
            return const(g, draw(st.sampled_from(SPECIAL_SCALARS)))
        if choice == 2 and x.shape:
            k = draw(st.integers(0, len(x.shape)))
            shape = tuple(1 if draw(st.booleans()) else d for d in x.shape[k:])
            return new_input(shape)
        return new_input(x.shape)

    def positive(x: Value) -> Value:
        return g.op("add", g.op("abs", x), const(g, 1.0))

    n_ops = draw(st.integers(1, max_ops))
    for _ in range(n_ops):
        x = pick()
        kind = draw(
            st.sampled_from(
                ["unary", "unary", "positive", "binary", "binary", "binary", "div", "pow", "where"]
                + ["reduce", "reduce", "reshape", "transpose", "broadcast_to"]
                + (["matmul"] if matmul else [])
                + (["slice", "pad", "concat", "gather", "int", "rng"] if extended else [])
            )
        )
        if kind == "unary":
            y = g.op(draw(st.sampled_from(UNARY_SAFE)), x)
        elif kind == "positive":
            y = g.op(draw(st.sampled_from(UNARY_POSITIVE)), positive(x))
        elif kind == "binary":
            y = g.op(draw(st.sampled_from(BINARY)), x, partner(x))
            if y.type.numel > 256:
                continue
        elif kind == "div":
            y = g.op("div", x, positive(partner(x)))
            if y.type.numel > 256:
                continue
        elif kind == "pow":
            y = g.op("pow", g.op("tanh", x), const(g, draw(st.sampled_from((1.0, 2.0, 3.0)))))
        elif kind == "where":
            other = partner(x)
            y = g.op("where", g.op("gt", x, other), x, other)
            if y.type.numel > 256:
                continue
        elif kind == "reduce" and x.shape:
            axes = draw(
                st.lists(st.integers(0, len(x.shape) - 1), min_size=1, max_size=len(x.shape), unique=True)
            )
            op = draw(st.sampled_from(["sum", "max", "min"]))
            y = g.op(op, x, axes=tuple(sorted(axes)), keepdims=draw(st.booleans()))
        elif kind == "reshape":
            n = x.type.numel
            shapes = [(n,), x.shape]
            shapes += [(a, n // a) for a in range(1, n + 1) if n % a == 0][:3]
            y = g.op("reshape", x, shape=draw(st.sampled_from(shapes)))
        elif kind == "transpose" and len(x.shape) >= 2:
            perm = draw(st.permutations(range(len(x.shape))))
            y = g.op("transpose", x, perm=tuple(perm))
        elif kind == "broadcast_to":
            y = g.op("broadcast_to", x, shape=(draw(st.integers(1, 3)), *x.shape))
            if y.type.numel > 256:
                continue
        elif kind == "matmul" and len(x.shape) >= 2:
            k = x.shape[-1]
            if draw(st.booleans()):
                w = new_input((k, draw(st.integers(1, 4))))
                y = g.op("matmul", x, w)
            else:
                perm = (*range(len(x.shape) - 2), len(x.shape) - 1, len(x.shape) - 2)
                y = g.op("matmul", x, g.op("transpose", x, perm=perm))
            y = g.op("mul", y, const(g, 0.25))
        elif kind == "slice" and x.shape:
            starts, stops, steps = [], [], []
            for d in x.shape:
                a = draw(st.integers(0, d - 1))
                starts.append(a)
                stops.append(draw(st.integers(a + 1, d)))
                steps.append(draw(st.sampled_from((1, 1, 2))))
            y = g.op("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
        elif kind == "pad" and x.shape:
            pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in x.shape)
            y = g.op("pad", x, pads=pads, value=draw(st.sampled_from((0.0, -1.0, 0.5))))
            if y.type.numel > 256:
                continue
        elif kind == "concat" and x.shape:
            axis = draw(st.integers(0, len(x.shape) - 1))
            others = [v for v in pool if v.dtype == x.dtype and len(v.shape) == len(x.shape)]
            others = [
                v
                for v in others
                if all(a == b for i, (a, b) in enumerate(zip(v.shape, x.shape)) if i != axis)
            ]
            y = g.op("concat", x, *draw(st.lists(st.sampled_from(others), min_size=1, max_size=2)), axis=axis)
            if y.type.numel > 256:
                continue
        elif kind == "gather" and x.shape:
            axis = draw(st.integers(0, len(x.shape) - 1))
            size = x.shape[axis]
            idx_shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
            dtype = draw(st.sampled_from(["i64", "i32"]))
            if size >= 4 and draw(st.booleans()):  # data indices: make_feeds draws them in [0, 4)
                counter[0] += 1
                idx = g.add_input(f"in{counter[0]}", TensorType(idx_shape, dtype))
            else:
                counter[0] += 1
                arr = rng.integers(0, size, idx_shape).astype(TensorType(idx_shape, dtype).np_dtype)
                idx = g.add_input(f"in{counter[0]}", TensorType(idx_shape, dtype), "const", arr)
            y = g.op("gather", x, idx, axis=axis)
            if y.type.numel > 256:
                continue
        elif kind == "int":
            dtype = draw(st.sampled_from(["i32", "i64"]))
            i = g.op("cast", g.op("mul", x, const(g, 4.0)), dtype=dtype)
            op = draw(st.sampled_from(["add", "sub", "mul", "maximum", "minimum"]))
            j = g.op(op, i, g.op("const", value=draw(st.integers(-3, 3)), dtype=dtype))
            j = g.op(draw(st.sampled_from(["neg", "abs"])), j) if draw(st.booleans()) else j
            y = g.op("cast", j, dtype="f32")
        elif kind == "rng":
            counter[0] += 1
            offset = g.add_input(f"in{counter[0]}", TensorType((), "i64"), "const", np.array(seed % 7))
            draw_ = g.op("rng_uniform", offset, shape=x.shape, seed=draw(st.integers(0, 3)))
            y = g.op("add", x, draw_)
        else:
            y = g.op("neg", x)
        pool.append(y)
    outs = {pool[-1]}
    for v in draw(st.lists(st.sampled_from(pool), max_size=2)):
        outs.add(v)
    for v in sorted(outs, key=pool.index):
        g.add_output(v)
    return g


def run_in_arena(graph: Graph, plan: MemoryPlan, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``graph`` the way a runtime would: every arena value is a view into one byte array.

    Data inputs are copied in, views planned as aliases are skipped (their bytes are already
    there), every other node runs its reference kernel over the views. A plan that lets a live
    value be overwritten gives wrong outputs here, which ``execute`` then exposes.
    """
    from graphc.kernels.reference import compile_node

    arena = np.zeros(max(plan.arena_bytes, 1), dtype=np.uint8)
    arrays: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        if graph.kinds[v.name] != "data":
            arrays[v.name] = graph.initializers[v.name]
    values = {v.name: v for v in graph.data_inputs}
    values.update({v.name: v for n in graph.nodes for v in n.outputs})
    for name, buf in plan.buffers.items():
        t = values[name].type
        arrays[name] = arena[buf.offset : buf.offset + t.nbytes].view(t.np_dtype).reshape(t.shape)
    for v in graph.data_inputs:
        np.copyto(arrays[v.name], feeds[v.name])
    for node in graph.nodes:
        if plan.is_view(node):  # a reshape or slice planned over its operand's bytes
            continue
        fn = compile_node(node)
        with np.errstate(all="ignore"):
            fn(*(arrays[v.name] for v in node.inputs), *(arrays[v.name] for v in node.outputs))
    return [np.array(arrays[v.name]) for v in graph.outputs]
