"""ONNX LSTM, GRU and RNN (opsets 7+) as one graphc ``scan`` per direction.

What ``torch.onnx.export`` writes for torch.nn.LSTM/GRU/RNN. The equations, gate orders and
attribute rules are the ONNX spec's (onnx/defs/rnn/defs.cc), checked against ONNX Runtime:

- LSTM gates in ONNX's order i, o, f, c (W [dirs, 4H, I], R [dirs, 4H, H], B [dirs, 8H] = Wb then
  Rb, peepholes P [dirs, 3H] = Pi, Po, Pf); ``input_forget=1`` couples the gates (f = 1 - i).
- GRU gates z, r, h; ``linear_before_reset`` 0: h~ = g(x Wh^T + (r * H) Rh^T + Rbh + Wbh), 1:
  h~ = g(x Wh^T + r * (H Rh^T + Rbh) + Wbh) (PyTorch's GRU).
- RNN: H = f(x W^T + H R^T + Wb + Rb).

Each direction is ONE ``scan`` whose body is one time step, so any sequence length compiles once:
the input projection ``X @ W^T + biases`` of every step is one 2-D matmul over the T * B rows before
the scan, the body multiplies the hidden state by R^T and applies the gates. Reverse runs the scan
backwards; bidirectional stacks both along Y's num_directions axis. ``clip`` bounds the input of
the gate activations f and g (not h), as ONNX Runtime does. ``sequence_lens`` (absent, a constant
or a run-time input) masks each batch entry past its length: its state stops changing and Y is 0
there (the reverse direction of an entry of length L starts at step L - 1); a constant equal to
seq_length everywhere needs no mask. Attributes ``activations``, ``activation_alpha`` and
``activation_beta`` name activations as in the spec, alphas and betas consumed in order by the
activations that take them (ONNX Runtime's rule; more values than they take is an error), those
not given defaulting as the ONNX ops of those names (HardSigmoid 0.2, 0.5; LeakyRelu 0.01; Elu 1;
ThresholdedRelu 1; Affine 1, 0 (ONNX Runtime uses 0 for these last two); ScaledTanh has none: its
alpha and beta must be given). An entry of sequence length 0 gives Y 0 and final states 0.
16-bit floats are computed in float32 and rounded once. Gradients flow to W, R, B, P and the
initial states (imported models fine-tune with ``compile_train``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from graphc import functional as F
from graphc.control_flow import scan
from graphc.ir import to_numpy_dtype
from graphc.ir.types import FLOAT_DTYPES, HALF_DTYPES
from graphc.tensor import Tensor

from ..context import NodeContext
from ..registry import converter

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
_COMMON_ATTRS = {
    "activation_alpha",
    "activation_beta",
    "activations",
    "clip",
    "direction",
    "hidden_size",
    "layout",
}
_ATTRS = {
    "LSTM": _COMMON_ATTRS | {"input_forget"},
    "GRU": _COMMON_ATTRS | {"linear_before_reset"},
    "RNN": _COMMON_ATTRS,
}
_MAX_OUTPUTS = {"LSTM": 3, "GRU": 2, "RNN": 2}
_MAX_INPUTS = {"LSTM": 8, "GRU": 6, "RNN": 6}

Activation = Callable[[Tensor], Tensor]


def _softplus(x: Tensor) -> Tensor:
    """log(1 + exp(x)), computed stably."""
    return x.maximum(0.0) + (1.0 + (-x.abs()).exp()).log()


# lower-case name -> (takes alpha, takes beta, default alpha, default beta, builder(alpha, beta))
_ACTIVATIONS: dict[str, tuple[bool, bool, float, float, Callable[[float, float], Activation]]] = {
    "sigmoid": (False, False, 0.0, 0.0, lambda a, b: lambda x: x.sigmoid()),
    "tanh": (False, False, 0.0, 0.0, lambda a, b: lambda x: x.tanh()),
    "relu": (False, False, 0.0, 0.0, lambda a, b: lambda x: x.relu()),
    "hardsigmoid": (True, True, 0.2, 0.5, lambda a, b: lambda x: (x * a + b).clamp(0.0, 1.0)),
    "affine": (True, True, 1.0, 0.0, lambda a, b: lambda x: x * a + b),
    "leakyrelu": (True, False, 0.01, 0.0, lambda a, b: lambda x: F.where(x >= 0.0, x, x * a)),
    "thresholdedrelu": (True, False, 1.0, 0.0, lambda a, b: lambda x: F.where(x > a, x, 0.0)),
    "scaledtanh": (True, True, 1.0, 1.0, lambda a, b: lambda x: (x * b).tanh() * a),
    "elu": (
        True,
        False,
        1.0,
        0.0,
        lambda a, b: lambda x: F.where(x >= 0.0, x, (x.minimum(0.0).exp() - 1.0) * a),
    ),
    "softsign": (False, False, 0.0, 0.0, lambda a, b: lambda x: x / (x.abs() + 1.0)),
    "softplus": (False, False, 0.0, 0.0, lambda a, b: _softplus),
}


@converter("LSTM", "GRU", "RNN", since=7)
def recurrent(nc: NodeContext) -> list:
    """Y, Y_h (and LSTM's Y_c) of an ONNX LSTM, GRU or RNN node."""
    kind = nc.op_type
    spec = _Spec(nc, kind)
    outs = _run(nc, spec)
    return outs[: nc.n_outputs]


class _Spec:
    """The node's checked inputs and attributes, in the compute dtype, laid out as [T, B, ...]."""

    def __init__(self, nc: NodeContext, kind: str) -> None:
        self.kind = kind
        unknown = sorted(set(nc.attrs.names()) - _ATTRS[kind])
        if unknown:
            raise nc.fail(f"unknown attribute(s) {[u[:40] for u in unknown[:4]]} for {kind}")
        if len(nc) < 3 or len(nc) > _MAX_INPUTS[kind]:
            raise nc.fail(f"takes 3 to {_MAX_INPUTS[kind]} inputs, got {len(nc)}")
        if nc.n_outputs > _MAX_OUTPUTS[kind]:
            raise nc.fail(f"has {nc.n_outputs} outputs, {kind} has at most {_MAX_OUTPUTS[kind]}")
        direction = nc.attrs.string("direction", "forward", ("forward", "reverse", "bidirectional"))
        self.directions = [False, True] if direction == "bidirectional" else [direction == "reverse"]
        dirs = len(self.directions)
        if "layout" in nc.attrs and nc.opset < 14:
            raise nc.fail(f"attribute 'layout' exists from opset 14, the model's opset is {nc.opset}")
        self.layout = nc.attrs.int("layout", 0, 0, 1)
        self.clip = nc.attrs.float("clip", 0.0) if "clip" in nc.attrs else None
        if self.clip is not None and not self.clip > 0:
            raise nc.fail(f"attribute 'clip' must be positive, got {self.clip}")
        self.input_forget = bool(nc.attrs.int("input_forget", 0, 0, 1)) if kind == "LSTM" else False
        self.linear_before_reset = (
            bool(nc.attrs.int("linear_before_reset", 0, 0, 1)) if kind == "GRU" else False
        )

        x = nc.t(0)
        self.dtype = x.value.dtype
        if self.dtype not in FLOAT_DTYPES:
            raise nc.fail(f"input 0 (X) must be float, got {self.dtype}")
        if x.ndim != 3:
            raise nc.fail(f"input 0 (X) must be 3-D, got shape {list(x.shape)}")
        if self.layout:
            x = x.permute(1, 0, 2)  # [batch, seq, input] -> [seq, batch, input]
        steps, batch, features = (int(d) for d in x.shape)
        if steps == 0 or batch == 0:
            raise nc.fail(f"input 0 (X) has an empty axis: shape {list(nc.t(0).shape)}")
        self.steps, self.batch = steps, batch
        gates = _GATES[kind]
        w, r = self._float(nc, 1, "W"), self._float(nc, 2, "R")
        if w.ndim != 3 or r.ndim != 3:
            raise nc.fail(f"inputs 1 (W) and 2 (R) must be 3-D, got {list(w.shape)} and {list(r.shape)}")
        hidden = int(r.shape[2])
        if "hidden_size" in nc.attrs:
            given = nc.attrs.int("hidden_size", None, 1)
            if given != hidden:
                raise nc.fail(f"hidden_size={given} does not match input 2 (R) of shape {list(r.shape)}")
        if hidden < 1:
            raise nc.fail(f"input 2 (R) has hidden size 0: shape {list(r.shape)}")
        self.hidden = hidden
        self._expect(nc, w, (dirs, gates * hidden, features), "1 (W)", direction)
        self._expect(nc, r, (dirs, gates * hidden, hidden), "2 (R)", direction)
        self.w, self.r = w, r
        self.b = self._optional(nc, 3, "B", (dirs, 2 * gates * hidden), direction)
        self.mask = self._sequence_mask(nc)
        self.h0 = self._state(nc, 5, "initial_h", dirs, direction)
        self.c0 = self._state(nc, 6, "initial_c", dirs, direction) if kind == "LSTM" else None
        self.p = self._optional(nc, 7, "P", (dirs, 3 * hidden), direction) if kind == "LSTM" else None
        self.x = x if self.dtype not in HALF_DTYPES else x.to("f32")
        self.activations = _activations(nc, kind, dirs)

    def _float(self, nc: NodeContext, i: int, name: str) -> Tensor:
        """Input ``i`` in the compute dtype (float initializers are f32 parameters whatever their
        ONNX type, so any float input is cast to X's dtype, f32 for 16-bit X)."""
        t = nc.t(i)
        if t.value.dtype not in FLOAT_DTYPES:
            raise nc.fail(f"input {i} ({name}) must be float like X ({self.dtype}), got {t.value.dtype}")
        compute = "f32" if self.dtype in HALF_DTYPES else self.dtype
        return t if t.value.dtype == compute else t.to(compute)

    def _expect(self, nc: NodeContext, t: Tensor, shape: tuple, what: str, direction: str) -> None:
        if tuple(t.shape) != shape:
            raise nc.fail(
                f"input {what} must have shape {list(shape)} (direction={direction}, hidden_size="
                f"{self.hidden}, X's features), got {list(t.shape)}"
            )

    def _optional(self, nc: NodeContext, i: int, name: str, shape: tuple, direction: str) -> Tensor | None:
        if not nc.has(i):
            return None
        t = self._float(nc, i, name)
        self._expect(nc, t, shape, f"{i} ({name})", direction)
        return t

    def _state(self, nc: NodeContext, i: int, name: str, dirs: int, direction: str) -> Tensor | None:
        """An initial state as [dirs, batch, hidden] (given [batch, dirs, hidden] when layout=1)."""
        if not nc.has(i):
            return None
        t = self._float(nc, i, name)
        shape = (self.batch, dirs, self.hidden) if self.layout else (dirs, self.batch, self.hidden)
        self._expect(nc, t, shape, f"{i} ({name})", direction)
        return t.permute(1, 0, 2) if self.layout else t

    def _sequence_mask(self, nc: NodeContext) -> Tensor | None:
        """[T, B, 1] bool, true where step t is inside entry b's sequence; None when every entry is
        seq_length long (sequence_lens absent, or a constant equal to seq_length)."""
        if not nc.has(4):
            return None
        steps, batch = self.steps, self.batch
        if nc.is_static(4):
            lens = nc.static(4, "sequence_lens")
            if lens.dtype.kind not in "iu" or lens.shape != (batch,):
                raise nc.fail(
                    f"input 4 (sequence_lens) must be integers of shape [{batch}], got {lens.dtype}"
                    f"{list(lens.shape)}"
                )
            if np.any(lens < 0) or np.any(lens > steps):
                raise nc.fail(f"input 4 (sequence_lens) must lie in [0, {steps}], got {lens.tolist()[:8]}")
            if np.all(lens == steps):
                return None
            mask = np.arange(steps)[:, None, None] < lens.astype(np.int64)[None, :, None]
            return nc.tensor(mask, "sequence_mask")
        lens = nc.t(4)
        if lens.value.dtype not in ("i32", "i64") or tuple(lens.shape) != (batch,):
            raise nc.fail(
                f"input 4 (sequence_lens) must be int32 of shape [{batch}], got {lens.value.dtype}"
                f"{list(lens.shape)}"
            )
        positions = np.arange(steps, dtype=to_numpy_dtype(lens.value.dtype)).reshape(steps, 1, 1)
        return nc.op("lt", nc.tensor(positions, "sequence_steps"), lens.reshape(1, batch, 1))


def _activations(nc: NodeContext, kind: str, dirs: int) -> list[list[Activation]]:
    """The activation functions of each direction (f, g, h of LSTM; f, g of GRU; f of RNN)."""
    per_dir = len(_DEFAULT_ACTIVATIONS[kind])
    names = _strings(nc, "activations")
    if names is None:
        names = list(_DEFAULT_ACTIVATIONS[kind]) * dirs
    elif kind == "RNN" and dirs == 1 and len(names) == 2:
        names = names[:1]  # the spec's default ["Tanh", "Tanh"] written out: the second is unused
    if len(names) != per_dir * dirs:
        raise nc.fail(
            f"attribute 'activations' must name {per_dir * dirs} function(s) ({per_dir} per direction), "
            f"got {len(names)}"
        )
    alphas = nc.attrs.floats("activation_alpha") or []
    betas = nc.attrs.floats("activation_beta") or []
    ai = bi = 0
    funcs = []
    for name in names:
        entry = _ACTIVATIONS.get(name.lower())
        if entry is None:
            raise nc.fail(
                f"activation {name[:40]!r} is not supported (graphc has: Sigmoid, Tanh, Relu, HardSigmoid, "
                "Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, Elu, Softsign, Softplus)"
            )
        takes_alpha, takes_beta, alpha, beta, build = entry
        if name.lower() == "scaledtanh" and (ai >= len(alphas) or bi >= len(betas)):
            raise nc.fail("activation ScaledTanh needs its alpha and beta (it has no default values)")
        if takes_alpha and ai < len(alphas):
            alpha, ai = alphas[ai], ai + 1
        if takes_beta and bi < len(betas):
            beta, bi = betas[bi], bi + 1
        funcs.append(build(alpha, beta))
    if ai < len(alphas) or bi < len(betas):  # ambiguous: read in order, or one per activation?
        raise nc.fail(
            f"attributes 'activation_alpha'/'activation_beta' give {len(alphas)}/{len(betas)} value(s), "
            f"the activations {names[:6]} take {ai}/{bi} (one per activation that uses it, in order)"
        )
    return [funcs[d * per_dir : (d + 1) * per_dir] for d in range(dirs)]


def _strings(nc: NodeContext, name: str) -> list[str] | None:
    """A STRINGS attribute as text (None when absent)."""
    if name not in nc.attrs:
        return None
    attr = next(a for a in nc.node.attribute if a.name == name)
    if attr.type != 8:  # AttributeProto.STRINGS
        raise nc.fail(f"attribute {name!r} must be a list of strings")
    if len(attr.strings) > 16:
        raise nc.fail(f"attribute {name!r} has {len(attr.strings)} entries, at most 6 are meaningful")
    out = []
    for s in attr.strings:
        try:
            out.append(s[:64].decode("utf-8"))
        except UnicodeDecodeError:
            raise nc.fail(f"attribute {name!r} must be UTF-8 text") from None
    return out


def _run(nc: NodeContext, spec: _Spec) -> list[Tensor]:
    """Every direction's scan; the outputs Y, Y_h (, Y_c) in the node's layout and dtype."""
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(spec.directions):
        y, h, c = _direction(nc, spec, d, reverse)
        ys.append(y)
        hs.append(h)
        cs.append(c)
    y = F.stack(ys, 1)  # [T, dirs, B, H]
    y_h = F.stack(hs, 0)  # [dirs, B, H]
    outs = [y, y_h]
    if spec.kind == "LSTM":
        outs.append(F.stack(cs, 0))
    if spec.layout:
        outs = [outs[0].permute(2, 0, 1, 3), *(t.permute(1, 0, 2) for t in outs[1:])]
    if spec.dtype in HALF_DTYPES:
        outs = [t.to(spec.dtype) for t in outs]
    return outs


def _direction(nc: NodeContext, spec: _Spec, d: int, reverse: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """One direction as one scan: (Y [T, B, H], final H, final C or None)."""
    kind, hidden, steps, batch = spec.kind, spec.hidden, spec.steps, spec.batch
    g = _GATES[kind] * hidden
    w, r = spec.w[d], spec.r[d]  # [G*H, I], [G*H, H]
    wb = rb = None
    if spec.b is not None:
        wb, rb = spec.b[d][0:g], spec.b[d][g : 2 * g]
    # The input projection of every step, one matmul; the biases that do not need r go in it too.
    lbr = spec.linear_before_reset
    pre_bias = None if wb is None else (wb if kind == "GRU" and lbr else wb + rb)
    x = spec.x
    xw = F.linear(x.reshape(steps * batch, x.shape[2]), w, pre_bias).reshape(steps, batch, g)
    r_t = r.T  # [H, G*H]
    if kind == "GRU" and not lbr:
        r_zr_t, r_h_t = r[0 : 2 * hidden].T, r[2 * hidden :].T
    post_bias = rb if kind == "GRU" and lbr else None
    peep = None
    if spec.p is not None:
        p = spec.p[d]
        peep = (p[0:hidden], p[hidden : 2 * hidden], p[2 * hidden :])  # Pi, Po, Pf
    acts = spec.activations[d]
    clip = spec.clip

    def clipped(t: Tensor) -> Tensor:
        return t if clip is None else t.clamp(-clip, clip)

    def step(h: Tensor, c: Tensor | None, xw_t: Tensor) -> tuple[Tensor, Tensor | None]:
        if kind == "LSTM":
            f_act, g_act, h_act = acts
            gates = xw_t + h @ r_t
            gi, go = gates[:, 0:hidden], gates[:, hidden : 2 * hidden]
            gf, gc = gates[:, 2 * hidden : 3 * hidden], gates[:, 3 * hidden :]
            if peep is not None:
                gi, gf = gi + c * peep[0], gf + c * peep[2]
            i = f_act(clipped(gi))
            f = 1.0 - i if spec.input_forget else f_act(clipped(gf))
            c_new = f * c + i * g_act(clipped(gc))
            if peep is not None:
                go = go + c_new * peep[1]
            return f_act(clipped(go)) * h_act(c_new), c_new
        if kind == "GRU":
            f_act, g_act = acts
            if lbr:
                hr = h @ r_t + post_bias if post_bias is not None else h @ r_t
                z = f_act(clipped(xw_t[:, 0:hidden] + hr[:, 0:hidden]))
                rr = f_act(clipped(xw_t[:, hidden : 2 * hidden] + hr[:, hidden : 2 * hidden]))
                cand = g_act(clipped(xw_t[:, 2 * hidden :] + rr * hr[:, 2 * hidden :]))
            else:
                hr = h @ r_zr_t
                z = f_act(clipped(xw_t[:, 0:hidden] + hr[:, 0:hidden]))
                rr = f_act(clipped(xw_t[:, hidden : 2 * hidden] + hr[:, hidden:]))
                cand = g_act(clipped(xw_t[:, 2 * hidden :] + (rr * h) @ r_h_t))
            return (1.0 - z) * cand + z * h, None
        (f_act,) = acts
        return f_act(clipped(xw_t + h @ r_t)), None

    masked = spec.mask is not None

    def body(carry: Any, xs: Any) -> tuple:
        h, c = carry if kind == "LSTM" else (carry, None)
        xw_t = xs[0]
        h_new, c_new = step(h, c, xw_t)
        y = h_new
        if masked:
            inside = xs[1]  # [B, 1]
            h_new = F.where(inside, h_new, h)
            c_new = F.where(inside, c_new, c) if c is not None else None
            y = F.where(inside, y, 0.0)
        return ((h_new, c_new) if kind == "LSTM" else h_new), y

    zeros = np.zeros((batch, hidden), dtype=to_numpy_dtype(spec.x.value.dtype))
    h0 = spec.h0[d] if spec.h0 is not None else nc.tensor(zeros, "initial_h")
    init: Any = h0
    if kind == "LSTM":
        init = (h0, spec.c0[d] if spec.c0 is not None else nc.tensor(zeros, "initial_c"))
    xs = [xw, spec.mask] if masked else [xw]
    final, y = scan(body, init, xs, reverse=reverse)
    h_n, c_n = final if kind == "LSTM" else (final, None)
    if masked:  # an entry of length 0 ends in zero states, as in ONNX Runtime
        started = spec.mask[0]  # [B, 1]: length >= 1
        h_n = F.where(started, h_n, 0.0)
        c_n = F.where(started, c_n, 0.0) if c_n is not None else None
    return y, h_n, c_n
