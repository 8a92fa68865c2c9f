"""SGD with momentum, dampening, Nesterov momentum and weight decay: torch.optim.SGD's rule."""

from __future__ import annotations

from typing import Any

from graphc.ir import GraphcError, TensorType, Value

from .optimizer import Optimizer, _Builder, split_params


class SGD(Optimizer):
    """Stochastic gradient descent, torch.optim.SGD's formulas and defaults.

    ``SGD(model.parameters(), lr=0.1)`` as in PyTorch (``step()``/``zero_grad()`` in eager mode,
    and ``compile_train`` takes it too); ``SGD(lr=0.1)`` without parameters for ``compile_train``.

    Per parameter p with gradient g:
        g = g + weight_decay * p
        buf = g                                   (first step)
        buf = momentum * buf + (1 - dampening) * g (later steps)
        g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    """

    def __init__(
        self,
        params: Any = None,
        lr: float | None = None,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if momentum < 0.0:
            raise GraphcError(f"SGD: invalid momentum {momentum}")
        if weight_decay < 0.0:
            raise GraphcError(f"SGD: invalid weight_decay {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise GraphcError("SGD: Nesterov momentum requires a momentum and zero dampening")
        params, lr = split_params(params, lr, 1e-3)
        super().__init__(
            dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov),
            params,
        )

    def _build(self, b: _Builder, lr: Value, pairs: list[tuple[Value, Value]]):
        group = self.param_groups[0]
        momentum, dampening = group["momentum"], group["dampening"]
        weight_decay, nesterov = group["weight_decay"], group["nesterov"]
        states: dict[str, Value] = {}
        first = None
        coefs: dict[str, Value] = {}  # the first-step factor, one per parameter dtype
        if momentum != 0 and dampening != 0:
            # torch starts the buffer as a copy of the gradient, undamped; with a zero buffer,
            # momentum * 0 + 1 * g is that copy exactly, so the first step only swaps the factor.
            step = self._state_input(b, "step", TensorType((), "i64"))
            first = b.eq(step, b.const(0, "i64"))
            states[step.name] = b.add(step, b.const(1, "i64"))
        new_params = []
        for param, grad in pairs:
            dt = param.dtype
            d_p = grad
            if weight_decay != 0:
                d_p = b.add(d_p, b.mul(param, b.const(weight_decay, dt)))
            if momentum != 0:
                buf = self._state_input(b, f"momentum_buffer.{param.name}", param)
                if first is None:
                    new_buf = b.add(b.mul(buf, b.const(momentum, dt)), d_p)
                else:
                    if dt not in coefs:
                        coefs[dt] = b.where(first, b.const(1.0, dt), b.const(1.0 - dampening, dt))
                    coef = coefs[dt]
                    new_buf = b.add(b.mul(buf, b.const(momentum, dt)), b.mul(d_p, coef))
                states[buf.name] = new_buf
                d_p = b.add(d_p, b.mul(new_buf, b.const(momentum, dt))) if nesterov else new_buf
            new_params.append(b.sub(param, b.mul(b.lr_as(lr, dt), d_p)))
        return new_params, states
