"""Shape and data-movement ONNX ops; on constant inputs they compute the result while converting."""

from __future__ import annotations

import math

import numpy as np

from graphc.ir import DTYPES
from graphc.ir.types import INT_DTYPES
from graphc.tensor import Tensor

from ..context import NodeContext
from ..lowbit_ops import ROUND_MODES, cast_array, onnx_cast
from ..proto import GRAPHC_TO_ONNX, MAX_ELEMENTS, MAX_RANK, graphc_dtype, to_array
from ..registry import converter

_NP = {name: dtype.type for name, dtype in DTYPES.items()}  # graphc dtype -> NumPy scalar type
# The most elements a value computed while converting may have (VGG-19's largest weight is ~1e8).
MAX_STATIC = 2**28


def check_static_size(nc: NodeContext, shape) -> None:
    """A GraphcError unless a constant of ``shape`` is small enough to compute while converting."""
    if len(shape) > MAX_RANK or math.prod(shape) > MAX_STATIC:
        raise nc.fail(f"a constant of shape {list(shape)[:8]} is too large (at most {MAX_STATIC} elements)")


def shape_of(v) -> tuple[int, ...]:
    """The shape of a Tensor, initializer or array."""
    if isinstance(v, Tensor):
        return tuple(v.shape)
    return tuple(np.shape(v.array if hasattr(v, "array") else v))


def _static_array(nc: NodeContext, i: int) -> np.ndarray | None:
    """Input ``i`` as an array when it is a constant (not a parameter), else None."""
    return nc.inputs[i] if nc.is_static(i) else None


@converter("Constant")
def constant(nc: NodeContext) -> list:
    """A constant from exactly one of its value attributes."""
    given = [n for n in nc.attrs.names() if n.startswith("value") or n == "sparse_value"]
    if len(given) != 1:
        raise nc.fail(f"needs exactly one value attribute, got {given}")
    name = given[0]
    if name == "value":
        return [nc.attrs.tensor("value")]
    if name == "value_float":
        return [np.array(nc.attrs.float("value_float", finite=False), dtype=np.float32)]
    if name == "value_floats":
        return [np.array(nc.attrs.floats("value_floats"), dtype=np.float32)]
    if name == "value_int":
        return [np.array(nc.attrs.int("value_int"), dtype=np.int64)]
    if name == "value_ints":
        return [np.array(nc.attrs.ints("value_ints"), dtype=np.int64)]
    raise nc.fail(f"attribute {name!r} is not supported")


@converter("Shape")
def shape(nc: NodeContext) -> list:
    """The (static) shape as an int64 constant; start/end slice it (opset 15)."""
    dims = shape_of(nc.inputs[0])
    rank = len(dims)
    start = nc.attrs.int("start", 0)
    end = nc.attrs.int("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return [np.array(dims[start:end], dtype=np.int64)]


@converter("Size")
def size(nc: NodeContext) -> list:
    """The (static) element count."""
    return [np.array(math.prod(shape_of(nc.inputs[0])), dtype=np.int64)]


def reshape_target(
    nc: NodeContext, old: tuple[int, ...], spec: list[int], allowzero: bool
) -> tuple[int, ...]:
    """ONNX Reshape's target shape: 0 copies the input's dim (unless allowzero), -1 is inferred."""
    if len(spec) > MAX_RANK:
        raise nc.fail(f"target shape has more than {MAX_RANK} axes")
    out = []
    for i, d in enumerate(spec):
        if d == 0 and not allowzero:
            if i >= len(old):
                raise nc.fail(f"shape entry {i} is 0 (copy) but the input has rank {len(old)}")
            d = old[i]
        out.append(d)
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise nc.fail(f"bad target shape {spec}")
    numel = math.prod(old)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or numel % known:
            raise nc.fail(f"cannot reshape {list(old)} to {spec}")
        out[out.index(-1)] = numel // known
    if math.prod(out) != numel:
        raise nc.fail(f"cannot reshape {list(old)} ({numel} elements) to {spec}")
    return tuple(out)


def reshape_value(nc: NodeContext, v, target: tuple[int, ...]):
    """Reshape a Tensor or a constant."""
    if isinstance(v, np.ndarray):
        return v.reshape(target)
    t = nc.tensor(v)
    return t if tuple(t.shape) == target else nc.op("reshape", t, shape=target)


@converter("Reshape")
def reshape(nc: NodeContext) -> list:
    """Reshape to a constant target shape."""
    if nc.opset < 5:
        spec = nc.attrs.ints("shape", lo=-1, hi=MAX_ELEMENTS)
        if spec is None:
            raise nc.fail("missing attribute 'shape'")
    else:
        spec = nc.static_ints(1, "shape", -1, MAX_ELEMENTS)
    allowzero = bool(nc.attrs.int("allowzero", 0, 0, 1))
    target = reshape_target(nc, shape_of(nc.inputs[0]), spec, allowzero)
    return [reshape_value(nc, nc.inputs[0], target)]


@converter("Flatten")
def flatten(nc: NodeContext) -> list:
    """2-D view: dims before ``axis`` times dims from it."""
    dims = shape_of(nc.inputs[0])
    axis = nc.attrs.int("axis", 1)
    if not -len(dims) <= axis <= len(dims):
        raise nc.fail(f"axis {axis} is out of range for rank {len(dims)}")
    axis = axis + len(dims) if axis < 0 else axis
    target = (math.prod(dims[:axis]), math.prod(dims[axis:]))
    return [reshape_value(nc, nc.inputs[0], target)]


@converter("Transpose")
def transpose(nc: NodeContext) -> list:
    """Permute axes (reverse when ``perm`` is absent)."""
    rank = len(shape_of(nc.inputs[0]))
    perm = nc.attrs.ints("perm", list(reversed(range(rank))), lo=-rank, hi=rank - 1)
    perm = [p % rank for p in perm] if rank else []
    if sorted(perm) != list(range(rank)):
        raise nc.fail(f"perm {perm} is not a permutation of {rank} axes")
    arr = _static_array(nc, 0)
    if arr is not None:
        return [np.array(arr.transpose(perm))]
    x = nc.t(0)
    return [x if perm == list(range(rank)) else nc.op("transpose", x, perm=tuple(perm))]


def _axes_arg(nc: NodeContext, attr_until: int, what: str = "axes") -> list[int] | None:
    if nc.opset < attr_until:
        return nc.attrs.ints("axes")
    return nc.static_ints(1, what) if nc.has(1) else None


@converter("Unsqueeze")
def unsqueeze(nc: NodeContext) -> list:
    """Insert size-1 axes."""
    old = shape_of(nc.inputs[0])
    axes = _axes_arg(nc, 13)
    if axes is None:
        raise nc.fail("needs axes")
    rank = len(old) + len(axes)
    norm = sorted(nc.axis(a, rank) for a in axes)
    if len(set(norm)) != len(norm):
        raise nc.fail(f"repeated axis in {axes}")
    dims = list(old)
    for a in norm:
        dims.insert(a, 1)
    return [reshape_value(nc, nc.inputs[0], tuple(dims))]


@converter("Squeeze")
def squeeze(nc: NodeContext) -> list:
    """Drop size-1 axes (all of them when no axes are given)."""
    old = shape_of(nc.inputs[0])
    axes = _axes_arg(nc, 13)
    if axes is None:
        drop = {i for i, d in enumerate(old) if d == 1}
    else:
        drop = {nc.axis(a, len(old)) for a in axes}
        if any(old[a] != 1 for a in drop):
            raise nc.fail(f"cannot squeeze axes {axes} of shape {list(old)}")
    return [reshape_value(nc, nc.inputs[0], tuple(d for i, d in enumerate(old) if i not in drop))]


@converter("Concat")
def concat(nc: NodeContext) -> list:
    """Join along ``axis``."""
    vals = [nc.inputs[i] for i in range(len(nc)) if nc.has(i)]
    rank = len(shape_of(vals[0]))
    axis = nc.axis(nc.attrs.int("axis"), rank)
    if nc.all_static():
        arrays = [nc.static(i) for i in range(len(nc)) if nc.has(i)]
        return [np.concatenate(arrays, axis=axis)]
    ts = [nc.tensor(v, "const") for v in vals if math.prod(shape_of(v)) > 0 or len(vals) == 1]
    dtype = next((t.value.dtype for t, v in zip(ts, vals) if isinstance(v, Tensor)), ts[0].value.dtype)
    ts = [t if t.value.dtype == dtype else nc.op("cast", t, dtype=dtype) for t in ts]
    return [ts[0] if len(ts) == 1 else nc.op("concat", *ts, axis=axis)]


def slice_axis(nc: NodeContext, v, axis: int, start: int, stop: int):
    """v[..., start:stop, ...] along one axis (a Tensor or a constant)."""
    dims = shape_of(v)
    if start == 0 and stop == dims[axis]:
        return v
    if isinstance(v, np.ndarray):
        index = [slice(None)] * len(dims)
        index[axis] = slice(start, stop)
        return np.array(v[tuple(index)])
    starts = [0] * len(dims)
    stops = list(dims)
    starts[axis], stops[axis] = start, stop
    return nc.op("slice", nc.tensor(v), starts=tuple(starts), stops=tuple(stops), steps=(1,) * len(dims))


@converter("Split")
def split(nc: NodeContext) -> list:
    """Split along ``axis`` into given sizes, or ``num_outputs``/the output count equal parts."""
    dims = shape_of(nc.inputs[0])
    axis = nc.axis(nc.attrs.int("axis", 0), len(dims))
    n = dims[axis]
    if nc.opset < 13:
        sizes = nc.attrs.ints("split", lo=0, hi=n)
    else:
        sizes = nc.static_ints(1, "split", 0, n) if nc.has(1) else None
    if sizes is None:
        parts = nc.attrs.int("num_outputs", nc.n_outputs, 1, max(n, 1)) if nc.opset >= 18 else nc.n_outputs
        if nc.opset >= 18 and "num_outputs" in nc.attrs:
            each = -(-n // parts)
            sizes = [min(each, n - i * each) for i in range(parts)]
        else:
            if n % parts:
                raise nc.fail(f"cannot split {n} into {parts} equal parts")
            sizes = [n // parts] * parts
    if sum(sizes) != n:
        raise nc.fail(f"split sizes {sizes} do not add up to {n}")
    out, start = [], 0
    for s in sizes:
        out.append(slice_axis(nc, nc.inputs[0], axis, start, start + s))
        start += s
    return out


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


@converter("Slice")
def slice_(nc: NodeContext) -> list:
    """ONNX Slice with constant starts/ends/axes/steps (negative steps gather)."""
    dims = shape_of(nc.inputs[0])
    rank = len(dims)
    if nc.opset < 10:
        starts = nc.attrs.ints("starts")
        ends = nc.attrs.ints("ends")
        axes = nc.attrs.ints("axes")
        steps = None
        if starts is None or ends is None:
            raise nc.fail("needs starts and ends")
    else:
        starts = nc.static_ints(1, "starts")
        ends = nc.static_ints(2, "ends")
        axes = nc.static_ints(3, "axes") if nc.has(3) else None
        steps = nc.static_ints(4, "steps") if nc.has(4) else None
    axes = list(range(len(starts))) if axes is None else [nc.axis(a, rank) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps) or len(set(axes)) != len(axes):
        raise nc.fail("starts, ends, axes and steps must have one entry per distinct axis")
    lo, hi, st = [0] * rank, list(dims), [1] * rank
    for s, e, a, step in zip(starts, ends, axes, steps):
        d = dims[a]
        if step == 0:
            raise nc.fail("step 0")
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if step > 0:
            lo[a], hi[a] = _clamp(s, 0, d), _clamp(e, 0, d)
        else:
            lo[a], hi[a] = _clamp(s, 0, d - 1), _clamp(e, -1, d - 1)
        st[a] = step
    arr = _static_array(nc, 0)
    index = tuple(slice(lo[a], None if (st[a] < 0 and hi[a] < 0) else hi[a], st[a]) for a in range(rank))
    if arr is not None:
        return [np.array(arr[index])]
    x = nc.t(0)
    for a in range(rank):
        if st[a] < 0:
            idx = np.arange(dims[a])[index[a]].astype(np.int64)
            x = nc.op("gather", x, nc.tensor(idx, "slice_index"), axis=a)
            lo[a], hi[a], st[a] = 0, len(idx), 1
    stops = [max(h, l) for l, h in zip(lo, hi)]
    if lo == [0] * rank and stops == list(x.shape) and st == [1] * rank:
        return [x]
    return [nc.op("slice", x, starts=tuple(lo), stops=tuple(stops), steps=tuple(st))]


@converter("Gather")
def gather(nc: NodeContext) -> list:
    """Take entries along ``axis`` (negative indices count from the end)."""
    dims = shape_of(nc.inputs[0])
    axis = nc.axis(nc.attrs.int("axis", 0), len(dims))
    n = dims[axis]
    if nc.is_static(1):
        idx = nc.static(1)
        if idx.dtype.kind not in "iu":
            raise nc.fail("indices must be integers")
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise nc.fail(f"an index is out of range for an axis of size {n}")
        idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
        arr = _static_array(nc, 0)
        if arr is not None:
            return [np.array(np.take(arr, idx, axis=axis))]
        return [nc.op("gather", nc.t(0), nc.tensor(idx, "gather_index"), axis=axis)]
    idx = nc.t(1)
    if idx.value.dtype not in ("i32", "i64"):
        raise nc.fail("indices must be integers")
    fixed = nc.op(
        "where",
        nc.op("lt", idx, nc.ctx.const(0, idx.value.dtype)),
        nc.op("add", idx, nc.ctx.const(n, idx.value.dtype)),
        idx,
    )
    return [nc.op("gather", nc.t(0), fixed, axis=axis)]


def broadcast_shape(nc: NodeContext, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy broadcasting of two shapes, or a GraphcError naming the node."""
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise nc.fail(f"shapes {list(a)} and {list(b)} do not broadcast") from None


@converter("Expand")
def expand(nc: NodeContext) -> list:
    """Broadcast to a constant shape."""
    dims = shape_of(nc.inputs[0])
    target = broadcast_shape(nc, dims, tuple(nc.static_ints(1, "shape", 0, MAX_ELEMENTS)))
    if math.prod(target) > MAX_ELEMENTS:
        raise nc.fail(f"result shape {list(target)} is too large")
    arr = _static_array(nc, 0)
    if arr is not None:
        check_static_size(nc, target)
        return [np.array(np.broadcast_to(arr, target))]
    x = nc.t(0)
    if len(target) > len(dims):
        x = nc.op("reshape", x, shape=(1,) * (len(target) - len(dims)) + dims)
    return [x if tuple(x.shape) == target else nc.op("broadcast_to", x, shape=target)]


@converter("Tile")
def tile(nc: NodeContext) -> list:
    """Repeat along each axis (concat of copies)."""
    dims = shape_of(nc.inputs[0])
    reps = nc.static_ints(1, "repeats", 0, MAX_ELEMENTS)
    if len(reps) != len(dims):
        raise nc.fail(f"repeats needs {len(dims)} entries")
    arr = _static_array(nc, 0)
    if arr is not None:
        check_static_size(nc, [d * r for d, r in zip(dims, reps)])
        return [np.tile(arr, reps)]
    x = nc.t(0)
    for a, r in enumerate(reps):
        if r != 1:
            # [.., 1, d, ..] broadcast to [.., r, d, ..] then merged: copies in order
            shp = list(x.shape)
            x = nc.op("reshape", x, shape=(*shp[:a], 1, *shp[a:]))
            x = nc.op("broadcast_to", x, shape=(*shp[:a], r, *shp[a:]))
            x = nc.op("reshape", x, shape=(*shp[:a], r * shp[a], *shp[a + 1 :]))
    return [x]


def _to_dtype(nc: NodeContext, elem: int) -> str:
    return graphc_dtype(elem, nc.where)


@converter("Cast")
def cast(nc: NodeContext) -> list:
    """Convert to the ``to`` element type."""
    dtype = _to_dtype(nc, nc.attrs.int("to", None, 0, 64))
    return [_cast_to(nc, dtype)]


def _cast_to(nc: NodeContext, dtype: str) -> object:
    """Input 0 converted to ``dtype``, saturating to a float8 type unless ``saturate=0`` (opset 19+),
    rounding to float8e8m0 as ``round_mode`` says (opset 24+: up, down or nearest)."""
    saturate = nc.attrs.int("saturate", 1, lo=0, hi=1) == 1
    round_mode = nc.attrs.string("round_mode", "up", ROUND_MODES)
    arr = _static_array(nc, 0)
    if arr is not None:
        return cast_array(arr, dtype, saturate, round_mode)
    return onnx_cast(nc, nc.t(0), dtype, saturate, round_mode)


@converter("CastLike")
def cast_like(nc: NodeContext) -> list:
    """Convert to the second input's element type."""
    target = nc.inputs[1]
    dtype = target.value.dtype if isinstance(target, Tensor) else None
    if dtype is None:
        arr = target.array if hasattr(target, "array") else target
        dtype = {v: k for k, v in _NP.items()}[arr.dtype.type]
    return [_cast_to(nc, dtype)]


@converter("Range")
def range_(nc: NodeContext) -> list:
    """arange(start, limit, delta) of constant scalars."""
    start, limit, delta = (nc.static(i, name) for i, name in enumerate(("start", "limit", "delta")))
    if any(a.size != 1 for a in (start, limit, delta)):
        raise nc.fail("start, limit and delta must be scalars")
    s, lim, d = (a.reshape(-1)[0] for a in (start, limit, delta))
    if d == 0:
        raise nc.fail("delta must not be 0")
    span = (float(lim) - float(s)) / float(d)
    if not math.isfinite(span):
        raise nc.fail("start, limit and delta must be finite")
    count = max(int(math.ceil(span)), 0)
    check_static_size(nc, (count,))
    return [(s + d * np.arange(count)).astype(start.dtype)]


@converter("ConstantOfShape")
def constant_of_shape(nc: NodeContext) -> list:
    """A constant of the given shape filled with ``value`` (0.0 by default)."""
    dims = nc.static_ints(0, "shape", 0, MAX_ELEMENTS)
    check_static_size(nc, dims)
    value = nc.attrs.tensor("value")
    if value is None:
        value = np.zeros(1, dtype=np.float32)
    if value.size != 1:
        raise nc.fail("value must hold one element")
    return [np.full(dims, value.reshape(-1)[0], dtype=value.dtype)]


@converter("Pad")
def pad(nc: NodeContext) -> list:
    """Constant padding (negative pads crop)."""
    dims = shape_of(nc.inputs[0])
    rank = len(dims)
    mode = nc.attrs.string("mode", "constant", ("constant", "reflect", "edge", "wrap"))
    if nc.opset < 11:
        pads = nc.attrs.ints("pads", lo=-MAX_ELEMENTS, hi=MAX_ELEMENTS)
        value = nc.attrs.float("value", 0.0, finite=False)
        axes = list(range(rank))
    else:
        pads = nc.static_ints(1, "pads", -MAX_ELEMENTS, MAX_ELEMENTS)
        value = nc.static_float(2, "constant_value", 0.0)
        axes = [nc.axis(a, rank) for a in nc.static_ints(3, "axes")] if nc.has(3) else list(range(rank))
    if pads is None or len(pads) != 2 * len(axes):
        raise nc.fail(f"pads needs {2 * len(axes)} entries")
    full = [(0, 0)] * rank
    for k, a in enumerate(axes):
        full[a] = (pads[k], pads[k + len(axes)])
    x = nc.t(0)
    crop = [(max(-lo, 0), dims[a] - max(-hi, 0)) for a, (lo, hi) in enumerate(full)]
    if any(c != (0, d) for c, d in zip(crop, dims)):
        if any(b < a for a, b in crop):
            raise nc.fail("negative pads remove more than the whole axis")
        x = nc.op(
            "slice", x, starts=tuple(c[0] for c in crop), stops=tuple(c[1] for c in crop), steps=(1,) * rank
        )
    grow = tuple((max(lo, 0), max(hi, 0)) for lo, hi in full)
    if mode != "constant":
        for a, (lo, hi) in enumerate(grow):
            if lo or hi:
                idx = pad_index(nc, mode, x.shape[a], lo, hi)
                x = nc.op("gather", x, nc.tensor(idx, "pad_index"), axis=a)
        return [x]
    if any(lo or hi for lo, hi in grow):
        if x.value.dtype == "bool" or x.value.dtype in INT_DTYPES:
            value = int(value)
        x = nc.op("pad", x, pads=grow, value=value)
    return [x]


def pad_index(nc: NodeContext, mode: str, n: int, lo: int, hi: int) -> np.ndarray:
    """Source positions of an axis of length n padded by (lo, hi) in reflect/edge/wrap mode."""
    if n == 0 or (mode == "reflect" and n == 1 and (lo or hi)):
        raise nc.fail(f"cannot pad an axis of length {n} in {mode!r} mode")
    check_static_size(nc, (n + lo + hi,))
    pos = np.arange(-lo, n + hi)
    if mode == "edge":
        return np.clip(pos, 0, n - 1).astype(np.int64)
    if mode == "wrap":
        return np.mod(pos, n).astype(np.int64)
    period = 2 * (n - 1)
    folded = np.mod(pos, period)
    return np.where(folded >= n, period - folded, folded).astype(np.int64)


@converter("Dropout")
def dropout(nc: NodeContext) -> list:
    """The input and an all-true mask: inference, or training with ratio 0 (no element dropped).

    Training with a ratio above 0 draws a random mask, which graphc does not do: a GraphcError.
    """
    if nc.has(2) and bool(nc.static(2, "training_mode").reshape(-1)[0]):
        ratio = float(nc.static(1, "ratio").reshape(-1)[0]) if nc.has(1) else 0.5
        if ratio != 0.0:
            raise nc.fail(
                f"training_mode=True with ratio {ratio} draws a random mask; graphc supports training "
                "dropout only with ratio 0 (the identity)"
            )
    out = [nc.inputs[0]]
    if nc.n_outputs > 1:
        out.append(np.ones(shape_of(nc.inputs[0]), dtype=np.bool_))
    return out


def onnx_elem_type(dtype: str) -> int:
    """The ONNX element type of a graphc dtype."""
    return GRAPHC_TO_ONNX[dtype]


__all__ = ["broadcast_shape", "onnx_elem_type", "reshape_value", "shape_of", "slice_axis", "to_array"]
