"""ONNX transformer ops: Attention (opsets 23-25), RotaryEmbedding (23) and SwiGLU (28).

Attention becomes graphc's attention chain, ``softmax(q @ k^T * scale + bias) @ v`` (a matmul, a
row softmax, a matmul: the chain ``passes/attention.py`` stitches into one fused node), with the
ONNX extras around it: 3-D inputs split into heads, grouped-query attention (each key/value head
serves ``q_num_heads / kv_num_heads`` query heads: the query heads of a group are stacked as rows,
so no key or value is copied), the past/present key-value cache (a concat), softcap, the additive
bias from ``attn_mask`` (bool or numeric, its last axis padded to the total key length),
``is_causal`` and the opset-25 windows (aligned bottom-right: ``offset`` = the past length, or
``nonpad_kv_seqlen - q_len`` per batch), the padding mask of ``nonpad_kv_seqlen``, and the zero
row that a fully masked query row gives. A bias known while converting is folded to one constant
(and the fully-masked-row guard is dropped when no row is fully masked).

16-bit inputs are computed in float32 but rounded to their dtype where onnx's reference
implementation (the node tests' expected values, ``onnx/reference/ops/op_attention.py``) rounds:
it computes in the inputs' dtype, so every NumPy step rounds. Those points are Q and K each scaled
by sqrt(scale) (that factor itself rounded), their product (a float32 dot product rounded once),
each softcap step (divide, tanh, multiply, by the rounded softcap), the biased scores, and in the
softmax (when it runs in a 16-bit dtype) the shifted scores, their exp, the row sum and the
quotient; then the probabilities and the output. A bfloat16 row sum rounds after every addition
(ml_dtypes' reduction adds left to right in bfloat16; float16 sums in float32 and rounds once), up to
``_SEQUENTIAL_SUM_MAX`` keys; longer rows are summed in float32 and rounded once. float32 and
float64 inputs compute ``(q @ k^T) * scale`` and one softmax, unrounded.
"""

from __future__ import annotations

import math

import numpy as np

from graphc import functional as F
from graphc.ir.types import DTYPES, HALF_DTYPES
from graphc.tensor import Tensor

from ..context import Initializer, NodeContext
from ..registry import converter
from .elementwise import const_like
from .nn import float_t

# softmax_precision: the ONNX TensorProto data types it may name.
_PRECISION = {1: "f32", 10: "f16", 11: "f64", 16: "bf16"}
_WIDE = "f32"  # what 16-bit floats are computed in
# The longest bfloat16 softmax row summed with a rounding after every addition (one add node per key).
_SEQUENTIAL_SUM_MAX = 64


def _wide(nc: NodeContext, t: Tensor) -> Tensor:
    """``t`` in the dtype the op computes in: f32 for 16-bit floats."""
    return nc.op("cast", t, dtype=_WIDE) if t.value.dtype in HALF_DTYPES else t


def _to(nc: NodeContext, t: Tensor, dtype: str) -> Tensor:
    return t if t.value.dtype == dtype else nc.op("cast", t, dtype=dtype)


def _round(nc: NodeContext, t: Tensor, dtype: str) -> Tensor:
    """A float32 ``t`` rounded to the 16-bit ``dtype`` (and widened back); ``t`` for other dtypes."""
    if dtype not in HALF_DTYPES:
        return t
    return nc.op("cast", nc.op("cast", t, dtype=dtype), dtype=t.value.dtype)


def _rounded_value(value: float, dtype: str) -> float:
    """A Python float rounded to the 16-bit ``dtype``, as NumPy rounds a scalar meeting such an array."""
    return float(np.asarray(value, dtype=np.float64).astype(DTYPES[dtype]).astype(np.float64))


def _slice_last(nc: NodeContext, x: Tensor, start: int, stop: int, step: int = 1) -> Tensor:
    """``x[..., start:stop:step]``."""
    lead = tuple(x.shape[:-1])
    return nc.op(
        "slice",
        x,
        starts=(0,) * len(lead) + (start,),
        stops=lead + (stop,),
        steps=(1,) * len(lead) + (step,),
    )


def _static_or_tensor(nc: NodeContext, i: int) -> np.ndarray | Tensor:
    """Input ``i`` as an array when known while converting (constants, initializers), else a Tensor."""
    v = nc.inputs[i]
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, Initializer):
        return v.array
    return nc.t(i)


# ------------------------------------------------------------------ Attention
class _Shapes:
    """The sizes of one Attention node: batch, heads, lengths and head sizes."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, past: int) -> None:
        self.batch, self.q_heads, self.q_len, self.head = q.shape
        self.kv_heads, self.kv_len, self.v_head = k.shape[1], k.shape[2], v.shape[3]
        self.past = past
        self.total = past + self.kv_len  # keys attended: past + incoming
        self.group = self.q_heads // self.kv_heads  # query heads per key/value head


def _split_heads(nc: NodeContext, x: Tensor, heads: int, what: str) -> Tensor:
    """A 3-D [batch, seq, heads * size] input as [batch, heads, seq, size]."""
    b, s, hidden = x.shape
    if hidden % heads:
        raise nc.fail(f"{what}'s hidden size {hidden} is not a multiple of its {heads} heads")
    x = nc.op("reshape", x, shape=(b, s, heads, hidden // heads))
    return nc.op("transpose", x, perm=(0, 2, 1, 3))


def _heads_attr(nc: NodeContext, name: str) -> int | None:
    return nc.attrs.int(name, 0, 1, 1 << 20) if name in nc.attrs else None


def _qkv(nc: NodeContext) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Q, K, V as 4-D [batch, heads, seq, size] (3-D inputs split), and whether they were 3-D."""
    q, k, v = float_t(nc, 0), float_t(nc, 1), float_t(nc, 2)
    if k.value.dtype != q.value.dtype:
        raise nc.fail(f"Q and K must have one dtype, got {q.value.dtype} and {k.value.dtype}")
    if not q.ndim == k.ndim == v.ndim or q.ndim not in (3, 4):
        raise nc.fail(
            f"Q, K and V must all be 3-D or all 4-D, got {list(q.shape)}, {list(k.shape)}, {list(v.shape)}"
        )
    qh, kvh = _heads_attr(nc, "q_num_heads"), _heads_attr(nc, "kv_num_heads")
    if q.ndim == 3:
        if qh is None or kvh is None:
            raise nc.fail("3-D Q, K, V need the q_num_heads and kv_num_heads attributes")
        return (
            _split_heads(nc, q, qh, "Q"),
            _split_heads(nc, k, kvh, "K"),
            _split_heads(nc, v, kvh, "V"),
            True,
        )
    if nc.opset >= 25 and (qh is not None or kvh is not None):
        raise nc.fail("q_num_heads and kv_num_heads must not be given for 4-D inputs (opset 25)")
    if (qh is not None and qh != q.shape[1]) or (kvh is not None and kvh != k.shape[1]):
        raise nc.fail(
            f"q_num_heads/kv_num_heads ({qh}, {kvh}) differ from the inputs' heads "
            f"({q.shape[1]}, {k.shape[1]})"
        )
    return q, k, v, False


def _check_shapes(nc: NodeContext, q: Tensor, k: Tensor, v: Tensor) -> None:
    (b, hq, _, d), (bk, hk, lk, dk), (bv, hv, lv, _) = q.shape, k.shape, v.shape
    if not b == bk == bv:
        raise nc.fail(f"Q, K and V differ in batch size: {b}, {bk}, {bv}")
    if hk != hv or lk != lv:
        raise nc.fail(f"K {list(k.shape)} and V {list(v.shape)} differ in heads or sequence length")
    if dk != d:
        raise nc.fail(f"Q's head size {d} differs from K's {dk}")
    if hk == 0 or hq % hk:
        raise nc.fail(f"the {hq} query heads are not a multiple of the {hk} key/value heads")


def _cache(nc: NodeContext, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, int]:
    """The present key and value (past ++ incoming along the sequence axis) and the past length."""
    if nc.has(4) != nc.has(5):
        raise nc.fail("past_key and past_value must be given together")
    if not nc.has(4):
        return k, v, 0
    pk, pv = nc.t(4), nc.t(5)
    b, h, _, d = k.shape
    if pk.ndim != 4 or (pk.shape[0], pk.shape[1], pk.shape[3]) != (b, h, d):
        raise nc.fail(f"past_key must be [{b}, {h}, past, {d}], got {list(pk.shape)}")
    if pv.shape != (b, h, pk.shape[2], v.shape[3]):
        raise nc.fail(f"past_value must be [{b}, {h}, {pk.shape[2]}, {v.shape[3]}], got {list(pv.shape)}")
    pk, pv = _to(nc, pk, k.value.dtype), _to(nc, pv, v.value.dtype)
    return nc.op("concat", pk, k, axis=2), nc.op("concat", pv, v, axis=2), pk.shape[2]


def _mask(nc: NodeContext, dims: _Shapes, dtype: str) -> np.ndarray | Tensor | None:
    """attn_mask as a 4-D additive bias (bool: 0 where True, -inf where False), its last axis
    padded with -inf to the total key length; an array when known while converting."""
    if not nc.has(3):
        return None
    m = _static_or_tensor(nc, 3)
    shape = tuple(m.shape)
    full = (dims.batch, dims.q_heads, dims.q_len, dims.total)
    if not 1 <= len(shape) <= 4:
        raise nc.fail(f"attn_mask must have rank 1 to 4, got {list(shape)}")
    lead_ok = all(s in (1, f) for s, f in zip(shape[:-1][::-1], full[:-1][::-1]))
    if not lead_ok or shape[-1] > dims.total:
        raise nc.fail(
            f"attn_mask {list(shape)} does not broadcast to [batch, q_heads, q_len, total_len] {list(full)}"
        )
    pad = dims.total - shape[-1]
    shape4 = (1,) * (4 - len(shape)) + shape
    if isinstance(m, np.ndarray):
        bias = np.where(m, 0.0, -np.inf) if m.dtype == np.bool_ else m.astype(np.float64)
        bias = np.pad(bias, [(0, 0)] * (bias.ndim - 1) + [(0, pad)], constant_values=-np.inf)
        return bias.reshape(shape4[:-1] + (dims.total,))
    if m.value.dtype == "bool":
        zero = nc.ctx.const(0.0, dtype)
        bias = nc.op("where", m, zero, nc.ctx.const(-math.inf, dtype))
    else:
        bias = _to(nc, m, dtype)
    if pad:
        bias = nc.op("pad", bias, pads=((0, 0),) * (len(shape) - 1) + ((0, pad),), value=-math.inf)
    return nc.op("reshape", bias, shape=shape4[:-1] + (dims.total,))


def _nonpad(nc: NodeContext, dims: _Shapes) -> np.ndarray | Tensor | None:
    """nonpad_kv_seqlen (opset 24+): the valid key count of each batch entry, or None."""
    if not nc.has(6):
        return None
    if nc.opset < 24:
        raise nc.fail("nonpad_kv_seqlen is an input from opset 24 on")
    if dims.past:
        raise nc.fail("nonpad_kv_seqlen cannot be combined with past_key / past_value")
    n = _static_or_tensor(nc, 6)
    dtype = n.dtype if isinstance(n, np.ndarray) else DTYPES[n.value.dtype]
    if tuple(n.shape) != (dims.batch,) or dtype != np.int64:
        raise nc.fail(f"nonpad_kv_seqlen must be int64 [{dims.batch}], got {dtype}{list(n.shape)}")
    return n


def _keep(
    nc: NodeContext, dims: _Shapes, causal: bool, left: int, right: int, nonpad: np.ndarray | Tensor | None
) -> np.ndarray | Tensor | None:
    """Where query i may attend key j (causal frontier, windows, padding), [S, T] or [B, 1, S, T];
    None when every key may be attended. Query i sits at absolute position i + offset."""
    if not (causal or left >= 0 or right >= 0 or nonpad is not None):
        return None
    s, t = dims.q_len, dims.total
    i, j = np.arange(s).reshape(s, 1), np.arange(t).reshape(1, t)
    if not isinstance(nonpad, Tensor):
        if nonpad is None:
            diff = i + dims.past - j  # the query's position minus the key's
        else:
            diff = i + (nonpad.reshape(-1, 1, 1, 1) - s) - j
        keep = np.ones(diff.shape, dtype=bool)
        if causal:
            keep &= diff >= 0
        if left >= 0:
            keep &= diff <= left
        if right >= 0:
            keep &= diff >= -right
        if nonpad is not None:
            keep &= j < nonpad.reshape(-1, 1, 1, 1)
        return keep
    n = nc.op("reshape", nonpad, shape=(dims.batch, 1, 1, 1))
    keep = nc.op("lt", nc.tensor(j.astype(np.int64), "key_index"), n)  # padding: [B, 1, 1, T]
    if causal or left >= 0 or right >= 0:
        diff = nc.op("add", nc.tensor((i - s - j).astype(np.int64), "query_minus_key"), n)
        bounds = [("ge", 0)] if causal else []
        bounds += [("le", left)] if left >= 0 else []
        bounds += [("ge", -right)] if right >= 0 else []
        for cmp, bound in bounds:
            keep = nc.op("bitwise_and", keep, nc.op(cmp, diff, nc.ctx.const(bound, "i64")))
    return keep


def _grouped(nc: NodeContext, bias: np.ndarray | Tensor, dims: _Shapes) -> np.ndarray | Tensor:
    """A 4-D bias [b, h, S or 1, T] in the grouped layout of the scores [B, kv_heads, group * S, T]."""
    g, q_len = dims.group, dims.q_len
    if g == 1:
        return bias
    b, h, s, t = bias.shape
    if isinstance(bias, np.ndarray):
        bias = np.broadcast_to(bias, (b, h, q_len, t))
        # one row block per query head (the heads of a group are stacked as rows), or one block per group
        return bias.reshape(b, dims.kv_heads, g * q_len, t) if h != 1 else np.tile(bias, (1, 1, g, 1))
    if h != 1:
        if s != q_len:
            bias = nc.op("broadcast_to", bias, shape=(b, h, q_len, t))
        return nc.op("reshape", bias, shape=(b, dims.kv_heads, g * q_len, t))
    tiled = nc.op("broadcast_to", nc.op("reshape", bias, shape=(b, 1, 1, s, t)), shape=(b, 1, g, q_len, t))
    return nc.op("reshape", tiled, shape=(b, 1, g * q_len, t))


def _bias(
    nc: NodeContext, dims: _Shapes, dtype: str, causal: bool, left: int, right: int
) -> tuple[Tensor | None, Tensor | None]:
    """The additive bias of the scores in their grouped layout, and where a query row is fully
    masked (its output is then zero; its bias row is 0, not -inf, so that nothing is NaN), each None
    when it does nothing."""
    mask = _mask(nc, dims, dtype)
    keep = _keep(nc, dims, causal, left, right, _nonpad(nc, dims))
    np_dtype = DTYPES[dtype]
    if not isinstance(mask, Tensor) and not isinstance(keep, Tensor):  # known while converting
        if mask is None and keep is None:
            return None, None
        bias = np.zeros((1, 1, 1, 1)) if mask is None else mask
        if keep is not None:
            bias = np.where(keep, bias, -np.inf)
        bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
        bias = _grouped(nc, bias, dims)
        guard = np.all(np.isneginf(bias), axis=-1, keepdims=True)
        bias = np.where(guard, 0.0, bias)  # a fully masked row: finite scores, zeroed after the softmax
        bias_t = nc.tensor(bias.astype(np_dtype), "attn_bias") if np.any(bias) else None
        return bias_t, nc.tensor(guard, "masked_rows") if guard.any() else None
    if isinstance(mask, np.ndarray):
        mask = nc.tensor(mask.astype(np_dtype), "attn_mask")
    if isinstance(keep, np.ndarray):
        keep = nc.tensor(keep.reshape((1,) * (4 - keep.ndim) + keep.shape), "attn_keep")
    bias = mask
    if keep is not None:
        bias = nc.op(
            "where", keep, nc.ctx.const(0.0, dtype) if bias is None else bias, nc.ctx.const(-math.inf, dtype)
        )
    if bias.ndim < 4:
        bias = nc.op("reshape", bias, shape=(1,) * (4 - bias.ndim) + tuple(bias.shape))
    bias = _grouped(nc, bias, dims)
    row_max = nc.op("max", bias, axes=(3,), keepdims=True)
    guard = nc.op("eq", row_max, const_like(nc, -math.inf, row_max))
    # a fully masked row gets a zero bias: its softmax (zeroed after) stays finite, gradients too
    return nc.op("where", guard, const_like(nc, 0.0, bias), bias), guard


def _row_sum(nc: NodeContext, e: Tensor, dtype: str) -> Tensor:
    """The last-axis sum of ``e`` (float32, [..., T]) kept, rounded as onnx's reference sums in
    ``dtype``: bfloat16 after every addition, left to right (up to ``_SEQUENTIAL_SUM_MAX`` keys),
    float16 once."""
    keys = e.shape[-1]
    if dtype != "bf16" or keys > _SEQUENTIAL_SUM_MAX or keys == 0:
        return _round(nc, nc.op("sum", e, axes=(e.ndim - 1,), keepdims=True), dtype)
    total = _slice_last(nc, e, 0, 1)
    for j in range(1, keys):
        total = _round(nc, nc.op("add", total, _slice_last(nc, e, j, j + 1)), dtype)
    return total


def _softmax(nc: NodeContext, x: Tensor, dtype: str) -> Tensor:
    """The last-axis softmax of the float32 scores ``x`` computed as onnx's reference does in
    ``dtype``: a 16-bit dtype rounds the shifted scores, their exp, the row sum and the quotient;
    a wider one is one softmax in that dtype. Returned in float32."""
    if dtype not in HALF_DTYPES:
        return _to(nc, F.softmax(_to(nc, x, dtype), -1), x.value.dtype)
    x = _round(nc, x, dtype)
    shifted = _round(nc, nc.op("sub", x, nc.op("max", x, axes=(x.ndim - 1,), keepdims=True)), dtype)
    e = _round(nc, nc.op("exp", shifted), dtype)
    return _round(nc, nc.op("div", e, _row_sum(nc, e, dtype)), dtype)


def _scores(nc: NodeContext, q: Tensor, keys: Tensor, scale: float, dtype: str) -> Tensor:
    """``q @ keys * scale`` (keys transposed, both float32). For 16-bit ``dtype`` as onnx's reference:
    q and keys each times sqrt(scale) rounded to ``dtype``, each product rounded, the matmul rounded
    (a negative scale's sign goes on q, where the reference's square root would give NaN)."""
    work = q.value.dtype
    if dtype not in HALF_DTYPES:
        return nc.op("mul", F.matmul(q, keys), nc.ctx.const(scale, work))
    root = _rounded_value(math.sqrt(abs(scale)), dtype)
    q = _round(nc, nc.op("mul", q, nc.ctx.const(math.copysign(root, scale), work)), dtype)
    keys = _round(nc, nc.op("mul", keys, nc.ctx.const(root, work)), dtype)
    return _round(nc, F.matmul(q, keys), dtype)


def _softcap(nc: NodeContext, scores: Tensor, softcap: float, dtype: str) -> Tensor:
    """``softcap * tanh(scores / softcap)``; for 16-bit ``dtype`` each step rounded, by the rounded
    softcap, as onnx's reference computes it."""
    work = scores.value.dtype
    if dtype not in HALF_DTYPES:
        cap = nc.ctx.const(softcap, work)
        return nc.op("mul", nc.op("tanh", nc.op("mul", scores, nc.ctx.const(1.0 / softcap, work))), cap)
    cap = nc.ctx.const(_rounded_value(softcap, dtype), work)
    scaled = _round(nc, nc.op("div", scores, cap), dtype)
    return _round(nc, nc.op("mul", _round(nc, nc.op("tanh", scaled), dtype), cap), dtype)


@converter("Attention", since=23)
def attention(nc: NodeContext) -> list:
    """Scaled dot-product attention with ONNX's masks, cache, softcap and optional outputs."""
    causal = bool(nc.attrs.int("is_causal", 0, 0, 1))
    softcap = nc.attrs.float("softcap", 0.0)
    if softcap < 0:
        raise nc.fail(f"softcap must be >= 0 (0: none), got {softcap}")
    mode = nc.attrs.int("qk_matmul_output_mode", 0, 0, 3)
    precision = nc.attrs.int("softmax_precision", 0, 0, 1 << 10) if "softmax_precision" in nc.attrs else None
    if precision is not None and precision not in _PRECISION:
        raise nc.fail(
            f"softmax_precision must be one of {sorted(_PRECISION)} (a float type), got {precision}"
        )
    left = right = -1
    if nc.opset >= 25:
        left = nc.attrs.int("left_window_size", -1, -1)
        right = nc.attrs.int("right_window_size", -1, -1)
    if len(nc) > (7 if nc.opset >= 24 else 6):
        raise nc.fail(f"takes at most {7 if nc.opset >= 24 else 6} inputs, got {len(nc)}")

    q, k, v, three_d = _qkv(nc)
    _check_shapes(nc, q, k, v)
    dtype = q.value.dtype
    present_k, present_v, past = _cache(nc, k, v)
    dims = _Shapes(q, k, v, past)
    scale = nc.attrs.float("scale", 1.0 / math.sqrt(dims.head)) if dims.head else 1.0
    work = _WIDE if dtype in HALF_DTYPES else dtype
    b, hk, g, s, t = dims.batch, dims.kv_heads, dims.group, dims.q_len, dims.total

    # The query heads of a group share one key/value head: stacked as rows, [B, kv_heads, g * S, D].
    qg = nc.op("reshape", _to(nc, q, work), shape=(b, hk, g * s, dims.head))
    keys = nc.op("transpose", _to(nc, present_k, work), perm=(0, 1, 3, 2))
    scores = _scores(nc, qg, keys, scale, dtype)
    raw = scores
    if softcap > 0:
        scores = _softcap(nc, scores, softcap, dtype)
    capped = scores
    bias, masked_rows = _bias(nc, dims, work, causal, left, right)
    if bias is not None:
        scores = _round(nc, nc.op("add", scores, bias), dtype)
    biased = scores
    if dtype in HALF_DTYPES:  # rounded where onnx's reference rounds
        probs = _round(nc, _softmax(nc, scores, _PRECISION.get(precision, dtype)), dtype)
    else:
        soft = _PRECISION.get(precision, work)
        probs = _to(nc, F.softmax(_to(nc, scores, soft), -1), work)
    if masked_rows is not None:
        probs = nc.op("where", masked_rows, nc.ctx.const(0.0, work), probs)
    y = F.matmul(probs, _to(nc, present_v, work))  # [B, kv_heads, g * S, Dv]
    y = nc.op("reshape", y, shape=(b, dims.q_heads, s, dims.v_head))
    if three_d:
        y = nc.op("transpose", y, perm=(0, 2, 1, 3))
        y = nc.op("reshape", y, shape=(b, s, dims.q_heads * dims.v_head))
    outs: list = [_to(nc, y, dtype), present_k, present_v]
    if nc.n_outputs > 3:
        # mode 0 is the raw product even with softcap, as the spec and ONNX Runtime say (onnx's
        # reference evaluator gives the softcapped one)
        if mode == 2 and masked_rows is not None:  # the bias of a fully masked row is -inf after all
            biased = nc.op("where", masked_rows, nc.ctx.const(-math.inf, work), biased)
        qk = (raw, capped, biased, probs)[mode]
        outs.append(_to(nc, nc.op("reshape", qk, shape=(b, dims.q_heads, s, t)), dtype))
    return outs[: max(nc.n_outputs, 1)]


# ------------------------------------------------------------ RotaryEmbedding
def _rotary_tables(nc: NodeContext, x: Tensor, half: int, lead: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """cos and sin per (batch, position), [B, S, half] (gathered by position_ids when given)."""
    cos, sin = nc.t(1), nc.t(2)
    for name, c in (("cos_cache", cos), ("sin_cache", sin)):
        if c.value.dtype != x.value.dtype:
            raise nc.fail(f"{name} must have X's dtype {x.value.dtype}, got {c.value.dtype}")
    if cos.shape != sin.shape:
        raise nc.fail(f"cos_cache {list(cos.shape)} and sin_cache {list(sin.shape)} differ in shape")
    if nc.has(3):
        pos = nc.t(3)
        if pos.value.dtype != "i64" or tuple(pos.shape) != lead:
            raise nc.fail(f"position_ids must be int64 {list(lead)}, got {pos.value.dtype}{list(pos.shape)}")
        if cos.ndim != 2 or cos.shape[1] != half:
            raise nc.fail(
                f"with position_ids the caches must be [max_position + 1, {half}], got {list(cos.shape)}"
            )
        return nc.op("gather", cos, pos, axis=0), nc.op("gather", sin, pos, axis=0)
    if cos.ndim != 3 or cos.shape[0] not in (1, lead[0]) or tuple(cos.shape[1:]) != (lead[1], half):
        raise nc.fail(
            f"without position_ids the caches must be [{lead[0]}, {lead[1]}, {half}], got {list(cos.shape)}"
        )
    return cos, sin


@converter("RotaryEmbedding", since=23)
def rotary_embedding(nc: NodeContext) -> list:
    """RoPE: each pair (x1, x2) of the rotated part of every head becomes (c x1 - s x2, s x1 + c x2)."""
    x = float_t(nc, 0)
    dtype = x.value.dtype
    interleaved = bool(nc.attrs.int("interleaved", 0, 0, 1))
    heads = nc.attrs.int("num_heads", 0, 0, 1 << 20)
    if x.ndim == 4:  # [B, H, S, D]
        b, h, s, d = x.shape
        if heads and heads != h:
            raise nc.fail(f"num_heads {heads} differs from X's {h} heads")
        x4 = x
    elif x.ndim == 3:  # [B, S, H * D] -> [B, S, H, D]
        b, s, hidden = x.shape
        if not heads or hidden % heads:
            raise nc.fail(f"3-D X [{b}, {s}, {hidden}] needs num_heads dividing {hidden}, got {heads}")
        d = hidden // heads
        x4 = nc.op("reshape", x, shape=(b, s, heads, d))
    else:
        raise nc.fail(f"X must be 3-D or 4-D, got {list(x.shape)}")
    rot = nc.attrs.int("rotary_embedding_dim", 0, 0, 1 << 20) or d
    if rot % 2 or rot > d:
        raise nc.fail(f"the rotary dimension {rot} must be even and at most the head size {d}")
    half = rot // 2
    cos, sin = _rotary_tables(nc, x, half, (b, s))
    # [B, S, half] to broadcast over the heads axis: [B, 1, S, half] (4-D X) or [B, S, 1, half] (3-D X)
    table = (cos.shape[0], 1, s, half) if x.ndim == 4 else (cos.shape[0], s, 1, half)
    cos, sin = (nc.op("reshape", _wide(nc, c), shape=table) for c in (cos, sin))
    xw = _wide(nc, x4)
    if interleaved:
        x1, x2 = _slice_last(nc, xw, 0, rot, 2), _slice_last(nc, xw, 1, rot, 2)
    else:
        x1, x2 = _slice_last(nc, xw, 0, half), _slice_last(nc, xw, half, rot)
    real = nc.op("sub", nc.op("mul", cos, x1), nc.op("mul", sin, x2))
    imag = nc.op("add", nc.op("mul", sin, x1), nc.op("mul", cos, x2))
    if interleaved:  # (real, imag) pairs side by side
        pair = tuple(real.shape) + (1,)
        both = nc.op("concat", nc.op("reshape", real, shape=pair), nc.op("reshape", imag, shape=pair), axis=4)
        rotated = nc.op("reshape", both, shape=tuple(real.shape[:-1]) + (rot,))
    else:
        rotated = nc.op("concat", real, imag, axis=3)
    if rot < d:
        rotated = nc.op("concat", rotated, _slice_last(nc, xw, rot, d), axis=3)
    return [_to(nc, nc.op("reshape", rotated, shape=tuple(x.shape)), dtype)]


# --------------------------------------------------------------------- SwiGLU
@converter("SwiGLU", since=28)
def swiglu(nc: NodeContext) -> list:
    """Swish_alpha(A) * B = A * sigmoid(alpha * A) * B (A and B of one shape, no broadcasting)."""
    a, b = float_t(nc, 0), float_t(nc, 1)
    if a.value.dtype != b.value.dtype or a.shape != b.shape:
        raise nc.fail(
            f"A and B must have one dtype and shape, got {a.value.dtype}{list(a.shape)} "
            f"and {b.value.dtype}{list(b.shape)}"
        )
    alpha = nc.attrs.float("alpha", 1.0)
    aw, bw = _wide(nc, a), _wide(nc, b)
    gate = nc.op("mul", aw, nc.op("mul", aw, const_like(nc, alpha, aw)).sigmoid())
    return [_to(nc, nc.op("mul", gate, bw), a.value.dtype)]
