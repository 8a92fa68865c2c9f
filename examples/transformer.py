"""The benchmark transformer (transformer_infer): one post-norm encoder layer, d=256, 4 heads,
feed-forward 1024 with ReLU, attention written as matmuls + softmax; seq 128, batch 8.

``build(nn, F)`` is the one definition: with graphc's ``nn``/``functional`` it makes the graphc
layer, with ``torch.nn``/``torch.nn.functional`` its PyTorch twin (the same matmuls and softmax).
Parameter names follow torch.nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True):
self_attn.in_proj_weight/in_proj_bias, self_attn.out_proj.*, linear1.*, linear2.*, norm1.*,
norm2.*, so its state_dict loads into that layer too. ``model()`` is in eval mode (dropout off).
"""

import math

import numpy as np

from graphc import functional as F
from graphc import nn

D_MODEL, N_HEADS, D_FF, SEQ, BATCH = 256, 4, 1024, 128, 8


def build(nn, F, d_model=D_MODEL, n_heads=N_HEADS, d_ff=D_FF, dropout=0.1):
    """The encoder layer (train mode) in the library whose ``nn`` and functional ``F`` are given."""

    class SelfAttention(nn.Module):
        """Multi-head self-attention with a packed q/k/v projection (MultiheadAttention's names)."""

        def __init__(self):
            super().__init__()
            packed = nn.Linear(d_model, 3 * d_model)  # its parameters, under MultiheadAttention's names
            self.in_proj_weight = packed.weight
            self.in_proj_bias = packed.bias
            self.out_proj = nn.Linear(d_model, d_model)
            nn.init.xavier_uniform_(self.in_proj_weight)
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

        def forward(self, x):
            b, s, d = x.shape
            h = n_heads
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [b, s, 3d]
            qkv = qkv.reshape(b, s, 3, h, d // h).permute(2, 0, 3, 1, 4)  # [3, b, h, s, d/h]
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))  # [b, h, s, s]
            attn = F.softmax(scores, dim=-1) @ v  # [b, h, s, d/h]
            return self.out_proj(attn.transpose(1, 2).reshape(b, s, d))

    class EncoderLayer(nn.Module):
        """x = norm1(x + attn(x)); x = norm2(x + linear2(relu(linear1(x))))."""

        def __init__(self):
            super().__init__()
            self.self_attn = SelfAttention()
            self.linear1 = nn.Linear(d_model, d_ff)
            self.dropout = nn.Dropout(dropout)
            self.linear2 = nn.Linear(d_ff, d_model)
            self.norm1 = nn.LayerNorm(d_model)
            self.norm2 = nn.LayerNorm(d_model)
            self.dropout1 = nn.Dropout(dropout)
            self.dropout2 = nn.Dropout(dropout)

        def forward(self, x):
            x = self.norm1(x + self.dropout1(self.self_attn(x)))
            ff = self.linear2(self.dropout(F.relu(self.linear1(x))))
            return self.norm2(x + self.dropout2(ff))

    return EncoderLayer()


def EncoderLayer(d_model=D_MODEL, n_heads=N_HEADS, d_ff=D_FF, dropout=0.1):
    """graphc's encoder layer of another size (train mode): ``build`` with graphc's nn and F."""
    return build(nn, F, d_model, n_heads, d_ff, dropout)


def model():
    """The encoder layer, in eval mode."""
    return build(nn, F).eval()


def example_inputs():
    """x [8, 128, 256] float32."""
    return (np.random.default_rng(0).random((BATCH, SEQ, D_MODEL), dtype=np.float32),)


def torch_model():
    """The same layer in PyTorch, from the same code (eval mode)."""
    import torch

    return build(torch.nn, torch.nn.functional).eval()
