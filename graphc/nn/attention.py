"""MultiheadAttention and the Transformer encoder/decoder layers, with PyTorch's parameter names.

``MultiheadAttention`` holds ``in_proj_weight`` [3E, E], ``in_proj_bias`` [3E] and ``out_proj``
(a Linear), initialized as PyTorch does (xavier_uniform in-projection, zero biases), so a
state_dict copied from torch loads unchanged. Its masks follow PyTorch: a bool ``attn_mask`` or
``key_padding_mask`` is True where attention is NOT allowed; a float mask is added to the scores.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from graphc import functional as F
from graphc.ir import GraphcError

from . import init
from .layers import Dropout, LayerNorm, Linear, _check_dtype
from .module import Module, ModuleList, Parameter


def _masked(scores: Any, mask: Any) -> Any:
    m = mask
    if getattr(m, "dtype", None) == np.bool_:
        return scores.masked_fill(m, -math.inf)
    return scores + m


class MultiheadAttention(Module):
    """Multi-head scaled dot-product attention (PyTorch's layout, names and defaults)."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise GraphcError(
                f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}"
            )
        if (
            add_bias_kv
            or add_zero_attn
            or (kdim or embed_dim) != embed_dim
            or (vdim or embed_dim) != embed_dim
        ):
            raise GraphcError(
                "MultiheadAttention: add_bias_kv, add_zero_attn and kdim/vdim != embed_dim are not supported"
            )
        dt = _check_dtype(dtype)
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = (
            embed_dim,
            num_heads,
            dropout,
            batch_first,
        )
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = Parameter(np.empty((3 * embed_dim, embed_dim), dtype=dt), dtype=dt)
        if bias:
            self.in_proj_bias = Parameter(np.zeros(3 * embed_dim), dtype=dt)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dt)
        init.xavier_uniform_(self.in_proj_weight)
        if bias:
            init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: Any,
        key: Any,
        value: Any,
        key_padding_mask: Any = None,
        need_weights: bool = True,
        attn_mask: Any = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Any, Any]:
        """(attention output, attention weights averaged over heads, or None)."""
        batched = query.ndim == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = (
                    key_padding_mask.reshape(1, -1)
                    if hasattr(key_padding_mask, "reshape")
                    else key_padding_mask
                )
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        e, h, d = self.embed_dim, self.num_heads, self.head_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(query, w[:e], None if b is None else b[:e])
        k = F.linear(key, w[e : 2 * e], None if b is None else b[e : 2 * e])
        v = F.linear(value, w[2 * e :], None if b is None else b[2 * e :])
        lq, n = q.shape[:2]
        ls = k.shape[0]
        q = q.reshape(lq, n, h, d).permute(1, 2, 0, 3)  # [N, H, L, D]
        k = k.reshape(ls, n, h, d).permute(1, 2, 0, 3)
        v = v.reshape(ls, n, h, d).permute(1, 2, 0, 3)
        scores = F.matmul(q * (1.0 / math.sqrt(d)), k.transpose(-2, -1))  # [N, H, L, S]
        if is_causal and attn_mask is None:
            attn_mask = np.triu(np.ones((lq, ls), dtype=bool), 1)
        if attn_mask is not None:
            m = attn_mask
            if m.ndim == 3:  # [N * H, L, S]
                m = m.reshape(n, h, lq, ls)
            scores = _masked(scores, m)
        if key_padding_mask is not None:
            kpm = key_padding_mask
            scores = _masked(scores, kpm.reshape(n, 1, 1, ls))
        weights = F.softmax(scores, -1)
        if self.dropout > 0:
            weights = F.dropout(weights, self.dropout, self.training)
        out = F.matmul(weights, v).permute(2, 0, 1, 3).reshape(lq, n, e)  # [L, N, E]
        out = self.out_proj(out)
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        attn = weights.mean(1) if average_attn_weights else weights
        return out, (attn.squeeze(0) if not batched else attn)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


def _activation(activation: Any) -> Any:
    if callable(activation):
        return activation
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise GraphcError(f"activation should be relu/gelu, not {activation!r}")


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward block, each with a residual and LayerNorm (PyTorch's)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Any = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout, bias=bias, batch_first=batch_first, dtype=dtype
        )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.activation = _activation(activation)

    def _sa(self, x: Any, mask: Any, padding: Any, causal: bool) -> Any:
        out = self.self_attn(
            x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False, is_causal=causal
        )
        return self.dropout1(out[0])

    def _ff(self, x: Any) -> Any:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self, src: Any, src_mask: Any = None, src_key_padding_mask: Any = None, is_causal: bool = False
    ) -> Any:
        """Encode."""
        x = src
        if self.norm_first:
            x = x + self._sa(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff(self.norm2(x))
        x = self.norm1(x + self._sa(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff(x))


class TransformerDecoderLayer(Module):
    """Self-attention, attention over memory and a feed-forward block (PyTorch's)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Any = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout, bias=bias, batch_first=batch_first, dtype=dtype
        )
        self.multihead_attn = MultiheadAttention(
            d_model, nhead, dropout, bias=bias, batch_first=batch_first, dtype=dtype
        )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1, self.dropout2, self.dropout3 = Dropout(dropout), Dropout(dropout), Dropout(dropout)
        self.activation = _activation(activation)

    def _sa(self, x: Any, mask: Any, padding: Any, causal: bool) -> Any:
        out = self.self_attn(
            x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False, is_causal=causal
        )
        return self.dropout1(out[0])

    def _mha(self, x: Any, mem: Any, mask: Any, padding: Any, causal: bool) -> Any:
        out = self.multihead_attn(
            x, mem, mem, attn_mask=mask, key_padding_mask=padding, need_weights=False, is_causal=causal
        )
        return self.dropout2(out[0])

    def _ff(self, x: Any) -> Any:
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self,
        tgt: Any,
        memory: Any,
        tgt_mask: Any = None,
        memory_mask: Any = None,
        tgt_key_padding_mask: Any = None,
        memory_key_padding_mask: Any = None,
        tgt_is_causal: bool = False,
        memory_is_causal: bool = False,
    ) -> Any:
        """Decode."""
        x = tgt
        if self.norm_first:
            x = x + self._sa(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            return x + self._ff(self.norm3(x))
        x = self.norm1(x + self._sa(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
        x = self.norm2(x + self._mha(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
        return self.norm3(x + self._ff(x))


class TransformerEncoder(Module):
    """``num_layers`` copies of an encoder layer (``layers.0``, ...) and an optional final norm."""

    def __init__(
        self, encoder_layer: Module, num_layers: int, norm: Module | None = None, **kwargs: Any
    ) -> None:
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self, src: Any, mask: Any = None, src_key_padding_mask: Any = None, is_causal: bool = False
    ) -> Any:
        """Encode through every layer."""
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        return self.norm(x) if self.norm is not None else x
