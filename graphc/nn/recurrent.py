"""Recurrent layers with PyTorch's parameter names, shapes, gate order and defaults, built on scan.

``RNN``, ``LSTM`` and ``GRU`` (num_layers, bias, batch_first, dropout between layers,
bidirectional) and ``RNNCell``, ``LSTMCell``, ``GRUCell``. A PyTorch ``state_dict`` loads
unchanged. Each layer and direction is one ``graphc.scan`` whose body is a single step: the input
projection of every step is one 2-D matmul over all T * B rows before the scan (so is its weight
gradient after the backward scan), the body does ``h @ W_hh^T`` and the gates (PyTorch's order:
LSTM i, f, g, o; GRU r, z, n).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from graphc import functional as F
from graphc.control_flow import scan
from graphc.ir import GraphcError

from . import init
from .layers import _check_dtype
from .module import Module, Parameter

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _step(mode: str, hidden: int, xw: Any, h: Any, c: Any, w_hh_t: Any, b_hh: Any) -> tuple[Any, Any]:
    """One recurrent step given the projected input ``xw`` (x @ W_ih^T + b_ih); returns (h, c)."""
    hw = h @ w_hh_t
    if b_hh is not None:
        hw = hw + b_hh
    if mode == "LSTM":
        gates = xw + hw
        i = F.sigmoid(gates[..., 0:hidden])
        f = F.sigmoid(gates[..., hidden : 2 * hidden])
        g = F.tanh(gates[..., 2 * hidden : 3 * hidden])
        o = F.sigmoid(gates[..., 3 * hidden : 4 * hidden])
        c = f * c + i * g
        return o * F.tanh(c), c
    if mode == "GRU":
        r = F.sigmoid(xw[..., 0:hidden] + hw[..., 0:hidden])
        z = F.sigmoid(xw[..., hidden : 2 * hidden] + hw[..., hidden : 2 * hidden])
        n = F.tanh(xw[..., 2 * hidden :] + r * hw[..., 2 * hidden :])
        return (1 - z) * n + z * h, None
    pre = xw + hw
    return (F.tanh(pre) if mode == "RNN_TANH" else F.relu(pre)), None


def _scan_step(mode: str, hidden: int, w_hh: Any, b_hh: Any, carry: Any, xw_t: Any) -> tuple[Any, Any]:
    """The scan body of one layer and direction: ``(carry, x) -> (carry, h)``. The body reads
    ``W_hh`` as it is, transposed here (a view): transposed outside, the loop would capture a copy
    of it, made by a transpose kernel at every call (1 MiB for an LSTM of 256 units)."""
    lstm = mode == "LSTM"
    h, c = carry if lstm else (carry, None)
    h, c = _step(mode, hidden, xw_t, h, c, w_hh.T, b_hh)
    return ((h, c) if lstm else h), h


def _input_projection(x: Any, w_ih: Any, b_ih: Any) -> Any:
    """Every step's input projection ``x @ W_ih^T + b_ih`` of ``x`` [T, B, features] as one 2-D
    matmul over the T * B rows (then viewed as [T, B, gates]): its gradient ``W_ih`` is then one
    GEMM over all the rows too, not a batched GEMM of T products and a sum over them."""
    steps, batch = x.shape[0], x.shape[1]
    xw = F.linear(x.reshape(steps * batch, x.shape[2]), w_ih, b_ih)
    return xw.reshape(steps, batch, xw.shape[1])


def _init_uniform(module: Module, hidden_size: int) -> None:
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0.0
    for p in module.parameters():
        init.uniform_(p, -bound, bound)


class _RNNBase(Module):
    """The multi-layer, optionally bidirectional recurrent layer of one ``mode``."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if proj_size:
            raise GraphcError(f"{type(self).__name__}: proj_size is not supported")
        if not 0.0 <= float(dropout) <= 1.0:
            raise GraphcError(f"{type(self).__name__}: dropout must be in [0, 1], got {dropout}")
        if int(num_layers) < 1 or int(hidden_size) < 1:
            raise GraphcError(f"{type(self).__name__}: num_layers and hidden_size must be positive")
        dt = _check_dtype(dtype)
        self.mode, self.input_size, self.hidden_size = mode, int(input_size), int(hidden_size)
        self.num_layers, self.bias, self.batch_first = int(num_layers), bool(bias), bool(batch_first)
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bool(bidirectional), 0
        gate_size = _GATES[mode] * self.hidden_size
        dirs = 2 if bidirectional else 1
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else self.hidden_size * dirs
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                setattr(self, "weight_ih" + sfx, Parameter(np.empty((gate_size, layer_in), dt), dtype=dt))
                setattr(
                    self, "weight_hh" + sfx, Parameter(np.empty((gate_size, self.hidden_size), dt), dtype=dt)
                )
                if bias:
                    setattr(self, "bias_ih" + sfx, Parameter(np.empty(gate_size, dt), dtype=dt))
                    setattr(self, "bias_hh" + sfx, Parameter(np.empty(gate_size, dt), dtype=dt))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: every weight and bias U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        _init_uniform(self, self.hidden_size)

    def _weights(self, layer: int, d: int) -> tuple[Any, Any, Any, Any]:
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        get = lambda name: getattr(self, name + sfx) if self.bias or not name.startswith("bias") else None  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def forward(self, input: Any, hx: Any = None) -> Any:
        """``output, h_n`` (LSTM: ``output, (h_n, c_n)``) with PyTorch's shapes."""
        lstm = self.mode == "LSTM"
        batched = input.ndim == 3
        if input.ndim not in (2, 3):
            raise GraphcError(
                f"{type(self).__name__}: input must be 2-D or 3-D, got shape {tuple(input.shape)}"
            )
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)  # [T, B, features]
        batch = x.shape[1]
        dirs = 2 if self.bidirectional else 1
        h0, c0 = (hx if hx is not None else (None, None)) if lstm else (hx, None)
        if h0 is not None and not batched:
            h0, c0 = h0.unsqueeze(1), (c0.unsqueeze(1) if c0 is not None else None)
        zeros = x.new_zeros((batch, self.hidden_size))
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                h = h0[k] if h0 is not None else zeros
                c = (c0[k] if c0 is not None else zeros) if lstm else None
                xw = _input_projection(x, w_ih, b_ih)
                body = functools.partial(_scan_step, self.mode, self.hidden_size, w_hh, b_hh)

                final, ys = scan(body, (h, c) if lstm else h, xw, reverse=bool(d))
                outs.append(ys)
                h_n.append(final[0] if lstm else final)
                if lstm:
                    c_n.append(final[1])
            x = outs[0] if dirs == 1 else F.cat(outs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        output = x.transpose(0, 1) if batched and self.batch_first else x
        hn = F.stack(h_n, dim=0)
        cn = F.stack(c_n, dim=0) if lstm else None
        if not batched:
            output, hn = output.squeeze(1), hn.squeeze(1)
            cn = cn.squeeze(1) if cn is not None else None
        return (output, (hn, cn)) if lstm else (output, hn)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text


class RNN(_RNNBase):
    """Elman RNN: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu: ``nonlinearity='relu'``)."""

    def __init__(self, *args: Any, nonlinearity: str = "tanh", **kwargs: Any) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise GraphcError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", *args, **kwargs)
        self.nonlinearity = nonlinearity


class LSTM(_RNNBase):
    """LSTM with PyTorch's gate order (i, f, g, o); returns ``output, (h_n, c_n)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("LSTM", *args, **kwargs)


class GRU(_RNNBase):
    """GRU with PyTorch's gate order (r, z, n) and n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("GRU", *args, **kwargs)


class _CellBase(Module):
    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dt = _check_dtype(dtype)
        self.mode, self.input_size, self.hidden_size, self.bias = (
            mode,
            int(input_size),
            int(hidden_size),
            bool(bias),
        )
        gate_size = _GATES[mode] * self.hidden_size
        self.weight_ih = Parameter(np.empty((gate_size, self.input_size), dt), dtype=dt)
        self.weight_hh = Parameter(np.empty((gate_size, self.hidden_size), dt), dtype=dt)
        if bias:
            self.bias_ih = Parameter(np.empty(gate_size, dt), dtype=dt)
            self.bias_hh = Parameter(np.empty(gate_size, dt), dtype=dt)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        _init_uniform(self, self.hidden_size)

    def forward(self, input: Any, hx: Any = None) -> Any:
        """One step: ``h'`` (LSTMCell: ``(h', c')``)."""
        batched = input.ndim == 2
        x = input if batched else input.unsqueeze(0)
        lstm = self.mode == "LSTM"
        if hx is None:
            zeros = x.new_zeros((x.shape[0], self.hidden_size))
            hx = (zeros, zeros) if lstm else zeros
        h, c = hx if lstm else (hx, None)
        if not batched:
            h, c = h.unsqueeze(0), (c.unsqueeze(0) if c is not None else None)
        xw = F.linear(x, self.weight_ih, self.bias_ih)
        h, c = _step(self.mode, self.hidden_size, xw, h, c, self.weight_hh.T, self.bias_hh)
        if not batched:
            h, c = h.squeeze(0), (c.squeeze(0) if c is not None else None)
        return (h, c) if lstm else h

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_CellBase):
    """One Elman RNN step (``nonlinearity`` tanh or relu)."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", **kw: Any
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise GraphcError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(
            "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, bias, **kw
        )
        self.nonlinearity = nonlinearity


class LSTMCell(_CellBase):
    """One LSTM step; returns ``(h', c')``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kw: Any) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, **kw)


class GRUCell(_CellBase):
    """One GRU step."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kw: Any) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, **kw)
