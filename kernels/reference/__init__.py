"""NumPy reference kernels: one function per primitive, the semantic oracle for every test.

Each kernel takes the input arrays and the node's attributes and returns a list of outputs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.special

from graphc.ir import Graph, GraphcError, Node, from_numpy_dtype, to_numpy_dtype
from graphc.ir.ops import scatter_identity
from graphc.kernels import collectives
from graphc.kernels.scalar_ops import MASK32, UNIFORM_BITS, UNIFORM_SCALE, hash32_numpy
from graphc.kernels.windows import conv_window, depthwise_window, pool_fill, pool_window

from .control_flow import CONTROL_KERNELS

Kernel = Callable[[list[np.ndarray], dict], list[np.ndarray]]
KERNELS: dict[str, Kernel] = {}


def _unary(fn):
    return lambda xs, attrs: [np.asarray(fn(xs[0])).astype(xs[0].dtype, copy=False)]


def _binary(fn):
    return lambda xs, attrs: [np.asarray(fn(xs[0], xs[1]))]


_UNARY = {
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "tanh": np.tanh,
    "erf": scipy.special.erf,
    "abs": np.abs,
    "sign": np.sign,
    "sin": np.sin,
    "cos": np.cos,
    "reciprocal": lambda x: 1 / x,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,  # half to even
    "trunc": np.trunc,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "acosh": np.arccosh,
    "asinh": np.arcsinh,
    "atanh": np.arctanh,
    "bitwise_not": np.invert,
}
_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "pow": np.power,
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
    "bitwise_and": np.bitwise_and,
    "bitwise_or": np.bitwise_or,
    "bitwise_xor": np.bitwise_xor,
    # NumPy's shifts already give 0 (or -1) for counts outside [0, bits), as the op says.
    "left_shift": np.left_shift,
    "right_shift": np.right_shift,
}
for _name, _fn in _UNARY.items():
    KERNELS[_name] = _unary(_fn)
for _name, _fn in _BINARY.items():
    KERNELS[_name] = _binary(_fn)


def _register(name: str):
    def wrap(fn: Kernel) -> Kernel:
        KERNELS[name] = fn
        return fn

    return wrap


@_register("cast")
def _cast(xs, attrs):
    # out of range: inf (f16), NaN or saturation (float8/float4) or wrap-around (int4), as NumPy/ml_dtypes do
    with np.errstate(over="ignore", invalid="ignore"):
        return [xs[0].astype(to_numpy_dtype(attrs["dtype"]))]


@_register("where")
def _where(xs, attrs):
    return [np.where(xs[0], xs[1], xs[2])]


@_register("broadcast_to")
def _broadcast_to(xs, attrs):
    return [np.broadcast_to(xs[0], attrs["shape"]).copy()]


def _reduction(fn):
    def run(xs, attrs):
        x = xs[0]
        if fn in (np.sum, np.prod) and x.dtype == np.float16:  # accumulated in float32, rounded once
            out = fn(x, axis=tuple(attrs["axes"]), keepdims=attrs["keepdims"], dtype=np.float32)
        else:
            out = fn(x, axis=tuple(attrs["axes"]), keepdims=attrs["keepdims"])
        return [np.asarray(out).astype(x.dtype, copy=False)]

    return run


def accumulator(dtype: np.dtype) -> np.dtype:
    """The dtype a sum of ``dtype`` values accumulates in: float32 for float16 (rounded once at the
    end, as ONNX Runtime and the legalized backends do; NumPy would round after every add along a
    strided axis), else ``dtype`` itself."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


KERNELS["sum"] = _reduction(np.sum)
KERNELS["max"] = _reduction(np.max)
KERNELS["min"] = _reduction(np.min)
KERNELS["prod"] = _reduction(np.prod)  # integers: int64 products, wrapped back to the dtype


@_register("argmax")
def _argmax(xs, attrs):
    return [np.argmax(xs[0], axis=attrs["axis"], keepdims=attrs["keepdims"]).astype(np.int64)]


@_register("matmul")
def _matmul(xs, attrs):
    return [np.matmul(xs[0], xs[1])]


@_register("reshape")
def _reshape(xs, attrs):
    return [xs[0].reshape(attrs["shape"])]


@_register("transpose")
def _transpose(xs, attrs):
    return [np.ascontiguousarray(np.transpose(xs[0], attrs["perm"]))]


@_register("slice")
def _slice(xs, attrs):
    index = tuple(slice(a, b, c) for a, b, c in zip(attrs["starts"], attrs["stops"], attrs["steps"]))
    return [np.ascontiguousarray(xs[0][index])]


@_register("pad")
def _pad(xs, attrs):
    return [np.pad(xs[0], attrs["pads"], constant_values=attrs["value"])]


@_register("concat")
def _concat(xs, attrs):
    return [np.concatenate(xs, axis=attrs["axis"])]


@_register("gather")
def _gather(xs, attrs):
    x, idx = xs
    size = x.shape[attrs["axis"]]
    bad = (idx < 0) | (idx >= size)
    if bad.any():
        value = int(idx[bad].reshape(-1)[0])
        raise GraphcError(f"gather: index {value} out of range [0, {size}) on axis {attrs['axis']}")
    return [np.take(x, idx, axis=attrs["axis"])]


@_register("scatter_add")
def _scatter_add(xs, attrs):
    idx, updates = xs
    out = np.zeros(attrs["shape"], dtype=accumulator(updates.dtype))
    np.add.at(out, (slice(None),) * attrs["axis"] + (idx,), updates)
    return [out.astype(updates.dtype, copy=False)]


_SCATTER_UFUNCS = {"mul": np.multiply, "max": np.maximum, "min": np.minimum}


@_register("scatter_reduce")
def _scatter_reduce(xs, attrs):
    idx, updates = xs
    axis, shape, reduction = attrs["axis"], attrs["shape"], attrs["reduction"]
    size = shape[axis]
    bad = (idx < -size) | (idx >= size)
    if bad.any():
        value = int(idx[bad].reshape(-1)[0])
        raise GraphcError(f"scatter_reduce: index {value} out of range for size {size} on axis {axis}")
    out = np.full(shape, scatter_identity(reduction, updates.dtype), dtype=updates.dtype)
    ufunc = _SCATTER_UFUNCS[reduction]
    if updates.dtype == np.bool_ and reduction == "mul":
        ufunc = np.logical_and
    ufunc.at(out, (slice(None),) * axis + (idx,), updates)
    return [out]


@_register("im2col")
def _im2col(xs, attrs):
    x = xs[0]
    n, c, h, w = x.shape
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = conv_window(attrs, h, w)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw]
    return [cols.reshape(n, c * kh * kw, oh * ow)]


@_register("col2im")
def _col2im(xs, attrs):
    n, c, h, w = attrs["image_shape"]
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = conv_window(attrs, h, w)
    cols = xs[0].reshape(n, c, kh, kw, oh, ow)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=accumulator(xs[0].dtype))
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw] += cols[:, :, i, j]
    return [np.ascontiguousarray(xp[:, :, ph : ph + h, pw : pw + w]).astype(xs[0].dtype, copy=False)]


@_register("depthwise_conv2d")
def _depthwise_conv2d(xs, attrs):
    x, w = xs
    n, c = x.shape[:2]
    win = depthwise_window(attrs, x.shape, w.shape)
    (cols,) = _im2col([x], {**attrs, "kernel": (win.kh, win.kw)})
    k = win.kh * win.kw
    acc = accumulator(x.dtype)
    y = np.einsum("nckl,ck->ncl", cols.reshape(n, c, k, -1).astype(acc), w.reshape(c, k).astype(acc))
    return [y.astype(x.dtype, copy=False).reshape(n, c, win.oh, win.ow)]


def _pool_windows(x: np.ndarray, attrs: dict) -> tuple[np.ndarray, int, int]:
    """[N, C, kh*kw, oh, ow] windows of an NCHW input already padded (row-major window order)."""
    n, c, h, w = x.shape
    win = pool_window({**attrs, "padding": (0, 0, 0, 0)}, h, w)
    cols_attrs = {"kernel": (win.kh, win.kw), "stride": (win.sh, win.sw), "padding": (0, 0)}
    (cols,) = _im2col([x], {**cols_attrs, "dilation": (win.dh, win.dw)})
    return cols.reshape(n, c, win.kh * win.kw, win.oh, win.ow), win.oh, win.ow


def _pool_padded(x: np.ndarray, attrs: dict) -> np.ndarray:
    """``x`` padded by the pool's (top, left, bottom, right) cells of -inf (an integer's minimum)."""
    top, left, bottom, right = attrs.get("padding", (0, 0, 0, 0))
    if not any((top, left, bottom, right)):
        return x
    low = pool_fill(from_numpy_dtype(x.dtype))
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=low)


def _first_max(win: np.ndarray) -> np.ndarray:
    """Index along axis 2 of each window's first maximal element, NaN counting as the maximum."""
    nan = np.isnan(win) if win.dtype.kind == "f" else np.zeros(win.shape, bool)
    first_nan = np.argmax(nan, axis=2)
    return np.where(nan.any(axis=2), first_nan, np.argmax(win, axis=2))


@_register("max_pool2d")
def _max_pool2d(xs, attrs):
    win, _, _ = _pool_windows(_pool_padded(xs[0], attrs), attrs)
    return [np.take_along_axis(win, _first_max(win)[:, :, None], axis=2)[:, :, 0]]


@_register("max_pool2d_grad")
def _max_pool2d_grad(xs, attrs):
    x, dy = xs
    n, c, h0, w0 = x.shape
    x = _pool_padded(x, attrs)  # dy routed to a padding cell is dropped with the padding
    h, w = x.shape[2:]
    win, oh, ow = _pool_windows(x, attrs)
    k = _first_max(win)
    (_, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
    iy = np.arange(oh)[:, None] * sh + (k // kw) * dh  # [N, C, oh, ow] input row of each window's max
    ix = np.arange(ow)[None, :] * sw + (k % kw) * dw
    dx = np.zeros((n, c, h * w), dtype=dy.dtype)
    flat = (iy * w + ix).reshape(n, c, -1)
    for b in range(n):
        for ch in range(c):
            np.add.at(dx[b, ch], flat[b, ch], dy[b, ch].reshape(-1))
    top, left = attrs.get("padding", (0, 0, 0, 0))[:2]
    return [np.ascontiguousarray(dx.reshape(n, c, h, w)[:, :, top : top + h0, left : left + w0])]


@_register("const")
def _const(xs, attrs):
    return [np.array(attrs["value"], dtype=to_numpy_dtype(attrs["dtype"]))]


hash32 = hash32_numpy  # lowbias32 (kernels.scalar_ops.HASH32_STEPS): CPU and CUDA render the same steps


def rng_key(seed: int, offset: int) -> np.uint32:
    """The per-call key of rng_uniform: a hash of the seed and the (step) offset."""
    lo, hi = np.uint32(offset & MASK32), np.uint32((offset >> 32) & MASK32)
    return hash32(np.uint32(seed & MASK32) ^ hash32(lo ^ hash32(hi)))


@_register("rng_uniform")
def _rng_uniform(xs, attrs):
    key = rng_key(attrs["seed"], int(xs[0]))
    count = int(np.prod(attrs["shape"], dtype=np.int64))
    bits = hash32(np.arange(count, dtype=np.uint32) ^ key)
    # The top 24 bits make a float32-exact value in [0, 1).
    u = (bits >> np.uint32(32 - UNIFORM_BITS)).astype(np.float64) * UNIFORM_SCALE
    return [u.astype(to_numpy_dtype(attrs["dtype"])).reshape(attrs["shape"])]


# ---------------------------------------------------------------- quantization (ONNX semantics)
def _quant_rounded(x: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """round_half_even(clamp(x / scale, lo - zero, hi - zero)) in float64 (NaN -> lo - zero)."""
    info = np.iinfo(zero.dtype)
    q = np.divide(x, scale, dtype=x.dtype)  # in x's dtype, as ONNX Runtime divides
    z = zero.astype(np.int64)
    lo, hi = (info.min - z).astype(x.dtype), (info.max - z).astype(x.dtype)
    q = np.where(q > lo, q, lo)
    q = np.where(q < hi, q, hi)
    return np.rint(q.astype(np.float64))


@_register("quantize")
def _quantize(xs, attrs):
    x, scale, zero = xs
    return [(_quant_rounded(x, scale, zero).astype(np.int64) + zero.astype(np.int64)).astype(zero.dtype)]


@_register("dequantize")
def _dequantize(xs, attrs):
    q, scale, zero = xs
    return [(q.astype(np.int64) - zero.astype(np.int64)).astype(scale.dtype) * scale]


@_register("fake_quantize")
def _fake_quantize(xs, attrs):
    x, scale, zero = xs
    return [_quant_rounded(x, scale, zero).astype(x.dtype) * scale]


@_register("qmatmul")
def _qmatmul(xs, attrs):
    return [np.matmul(xs[0].astype(np.int64), xs[1].astype(np.int64).T).astype(np.int32)]  # a @ b.T


def _int8_epilogue(acc: np.ndarray, params: list[np.ndarray], relu: bool, trailing: int) -> list[np.ndarray]:
    """qlinear's epilogue (ir/ops/quantized.py) over an i32 product, ``trailing`` axes after its
    channel axis."""
    shift, scale, bias = (p.reshape(p.shape + (1,) * trailing) for p in params[:3])
    y = (acc - shift).astype(scale.dtype) * scale + bias  # i32 subtract, then float ops
    if relu:
        y = np.where(y <= 0, np.zeros((), y.dtype), y)
    return _quantize([y, *params[3:]], {}) if len(params) == 5 else [y]


@_register("qlinear")
def _qlinear(xs, attrs):
    (acc,) = _qmatmul(xs[:2], attrs)
    return _int8_epilogue(acc, xs[2:], attrs["relu"], 0)


@_register("qconv2d")
def _qconv2d(xs, attrs):
    x, w, x_zero = xs[:3]
    z = x_zero.astype(np.int64)
    o, kh, kw, c = w.shape
    # im2col of x - z pads with 0, i.e. x with its zero point; the weight to im2col's (c, i, j) order.
    (cols,) = _im2col([x.astype(np.int64) - z], {**attrs, "kernel": (kh, kw)})
    w2 = w.astype(np.int64).transpose(0, 3, 1, 2).reshape(o, c * kh * kw)
    acc = np.einsum("ok,nkl->nol", w2, cols + z).astype(np.int32)
    return _int8_epilogue(acc, xs[3:], attrs["relu"], 1)


@_register("allreduce_start")
def _allreduce_start(xs, attrs):
    # Blocking: the whole sum happens here (with the deadline); the wait only averages.
    buf = np.concatenate([x.reshape(-1) for x in xs])
    collectives.sum_blocking(buf, attrs["bucket"])
    return [buf]


@_register("allreduce_wait")
def _allreduce_wait(xs, attrs):
    outs = [np.empty(s, xs[0].dtype) for s in attrs["shapes"]]
    collectives.unpack_average(xs[0], outs, collectives.world_size())
    return outs


def _needs_bodies(xs, attrs):
    raise GraphcError("control-flow ops run through run_node (their bodies are not attributes)")


# cond / while_loop / scan: run_node dispatches them to kernels/reference/control_flow.py.
KERNELS.update(dict.fromkeys(CONTROL_KERNELS, _needs_bodies))


def run_node(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    """Run one node on NumPy arrays with the reference kernels (fused nodes run their body)."""
    if node.op == "fused":
        feeds = {v.name: a for v, a in zip(node.subgraph.data_inputs, args)}
        return execute(node.subgraph, feeds)
    if node.op in CONTROL_KERNELS:  # cond / while_loop / scan run their bodies (control_flow.py)
        outs = CONTROL_KERNELS[node.op](node, args)
        # reshape: ascontiguousarray makes a 0-d carry (a scan's scalar slice) 1-d
        return [
            np.ascontiguousarray(o, dtype=v.type.np_dtype).reshape(v.shape)
            for o, v in zip(outs, node.outputs)
        ]
    try:
        kernel = KERNELS[node.op]
    except KeyError:
        raise GraphcError(f"no reference kernel for op {node.op!r}") from None
    with np.errstate(all="ignore"):
        outs = kernel(args, node.attrs)
    return [
        np.ascontiguousarray(o, dtype=v.type.np_dtype).reshape(v.shape) for o, v in zip(outs, node.outputs)
    ]


def execute(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Evaluate ``graph``: data inputs from ``feeds``, other inputs from feeds or initializers."""
    env: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        if v.name in feeds:
            arr = np.asarray(feeds[v.name])
        elif v.name in graph.initializers:
            arr = graph.initializers[v.name]
        else:
            raise GraphcError(f"graph {graph.name}: no value for input %{v.name}")
        if arr.shape != v.shape or arr.dtype != v.type.np_dtype:
            raise GraphcError(
                f"graph {graph.name}: input %{v.name} expects {v.type}, got {arr.dtype}{list(arr.shape)}"
            )
        env[v.name] = arr
    for node in graph.nodes:
        for v, arr in zip(node.outputs, run_node(node, [env[i.name] for i in node.inputs])):
            env[v.name] = arr
    return [env[v.name] for v in graph.outputs]


def compile_node(node: Node, in_place: dict[int, int] | None = None):
    """A kernel with the backend calling convention: ``fn(*inputs, *outputs)`` fills outputs.

    ``in_place`` is the CPU backend's aliasing hint; NumPy computes into fresh arrays anyway.
    """
    n_in = len(node.inputs)

    def run(*arrays: np.ndarray) -> None:
        results = run_node(node, list(arrays[:n_in]))
        for out, result in zip(arrays[n_in:], results):
            out[...] = result

    return run


@_register("stop_gradient")
def _stop_gradient(xs, attrs):
    return [xs[0].copy()]
