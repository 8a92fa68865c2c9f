"""Adam and AdamW: torch.optim.Adam / AdamW's rules, bias correction from the step count."""

from __future__ import annotations

from typing import Any

from graphc.ir import GraphcError, TensorType, Value

from .optimizer import Optimizer, _Builder, split_params


class Adam(Optimizer):
    """Adam (Kingma & Ba), torch.optim.Adam's formulas and defaults (amsgrad optional).

    Per parameter p with gradient g, at step t (counted from 1):
        g = g + weight_decay * p                  (Adam; AdamW decays p instead: p *= 1 - lr * wd)
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        vmax = max(vmax, v)                       (amsgrad)
        p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    _decoupled = False

    def __init__(
        self,
        params: Any = None,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        params, lr = split_params(params, lr, 1e-3)
        if eps < 0.0:
            raise GraphcError(f"{type(self).__name__}: invalid epsilon {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise GraphcError(f"{type(self).__name__}: invalid betas {betas}")
        if weight_decay < 0.0:
            raise GraphcError(f"{type(self).__name__}: invalid weight_decay {weight_decay}")
        super().__init__(
            dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad), params
        )

    def _build(self, b: _Builder, lr: Value, pairs: list[tuple[Value, Value]]):
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        eps, weight_decay, amsgrad = group["eps"], group["weight_decay"], group["amsgrad"]
        states: dict[str, Value] = {}
        # One step counter for all parameters (every parameter gets a gradient each step).
        step = self._state_input(b, "step", TensorType((), "i64"))
        new_step = b.add(step, b.const(1, "i64"))
        states[step.name] = new_step
        # torch computes these scalars in Python doubles and rounds them to float32 in the kernels.
        t = b.cast(new_step, dtype="f64")
        lr64 = b.cast(lr, dtype="f64")
        one = b.const(1.0, "f64")
        bias1 = b.sub(one, b.pow(b.const(beta1, "f64"), t))
        bias2 = b.sub(one, b.pow(b.const(beta2, "f64"), t))
        neg_step_size64 = b.neg(b.div(lr64, bias1))
        bias2_sqrt64 = b.sqrt(bias2)
        if self._decoupled and weight_decay != 0:
            decay64 = b.sub(one, b.mul(lr64, b.const(weight_decay, "f64")))

        def in_dtype(name: str, value64: Value, dt: str) -> Value:
            return value64 if dt == "f64" else b.scalar((name, dt), lambda: b.cast(value64, dtype=dt))

        new_params = []
        for param, grad in pairs:
            dt = param.dtype
            param_in = param
            if weight_decay != 0:
                if self._decoupled:
                    param_in = b.mul(param, in_dtype("decay", decay64, dt))
                else:
                    grad = b.add(grad, b.mul(param, b.const(weight_decay, dt)))
            m = self._state_input(b, f"exp_avg.{param.name}", param)
            v = self._state_input(b, f"exp_avg_sq.{param.name}", param)
            # lerp(m, g, 1 - beta1) as torch evaluates it for weights below 0.5
            new_m = b.add(m, b.mul(b.const(1.0 - beta1, dt), b.sub(grad, m)))
            # v * beta2 + ((1 - beta2) * g) * g: addcmul's order of operations
            new_v = b.add(b.mul(v, b.const(beta2, dt)), b.mul(b.mul(b.const(1.0 - beta2, dt), grad), grad))
            states[m.name], states[v.name] = new_m, new_v
            second = new_v
            if amsgrad:
                vmax = self._state_input(b, f"max_exp_avg_sq.{param.name}", param)
                second = b.maximum(vmax, new_v)
                states[vmax.name] = second
            denom = b.add(b.div(b.sqrt(second), in_dtype("bias2_sqrt", bias2_sqrt64, dt)), b.const(eps, dt))
            neg_step_size = in_dtype("neg_step_size", neg_step_size64, dt)
            # addcdiv(p, m, denom, value=-step_size) computes p + (value * m) / denom
            new_params.append(b.add(param_in, b.div(b.mul(neg_step_size, new_m), denom)))
        return new_params, states


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), torch.optim.AdamW's defaults."""

    _decoupled = True

    def __init__(
        self,
        params: Any = None,
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
