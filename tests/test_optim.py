"""graphc.optim: update rules appended to a graph follow torch.optim (and a NumPy restatement)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphc import optim
from graphc.ir import Graph, GraphcError, TensorType, verify
from graphc.kernels.reference import execute
from graphc.optim import lr_scheduler

SHAPES = {"w": (4, 3), "b": (3,)}
STEPS = 50

CONFIGS = [
    ("sgd", optim.SGD, dict(lr=0.1)),
    ("sgd_momentum", optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("sgd_dampening", optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("sgd_nesterov", optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd_weight_decay", optim.SGD, dict(lr=0.05, momentum=0.5, weight_decay=0.01)),
    ("adam", optim.Adam, dict(lr=1e-2)),
    ("adam_weight_decay", optim.Adam, dict(lr=1e-2, weight_decay=0.05)),
    ("adam_amsgrad", optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), amsgrad=True)),
    ("adamw", optim.AdamW, dict(lr=1e-2)),
    ("adamw_strong_decay", optim.AdamW, dict(lr=1e-2, weight_decay=0.3, eps=1e-6)),
]


def _initial():
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}


def _grad(params: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
    """A gradient that depends on the parameters (a quadratic pull) plus step-dependent noise."""
    rng = np.random.default_rng(1000 + t)
    return {
        k: (0.5 * p - 0.2 + 0.1 * rng.standard_normal(p.shape)).astype(np.float32) for k, p in params.items()
    }


def _lrs(base: float) -> list[float]:
    # A changing rate exercises the lr input (a schedule never recompiles).
    return [base * (0.97**t) for t in range(STEPS)]


def _graphc_run(cls, kwargs) -> dict[str, np.ndarray]:
    """Append the optimizer to a graph whose gradients are data inputs; run it with write-back."""
    g = Graph("opt")
    params = _initial()
    for k, arr in params.items():
        g.add_input(k, TensorType.of(arr), "param", value=arr)
    grads = {k: g.add_input(f"grad_{k}", TensorType(s)) for k, s in SHAPES.items()}
    opt = cls(**kwargs)
    opt.append_update(g, grads)
    verify(g)
    for t, lr in enumerate(_lrs(kwargs["lr"])):
        opt.lr = lr
        feeds = {f"grad_{k}": v for k, v in _grad(params, t).items()}
        feeds[optim.LR_INPUT] = opt.lr_array()
        outs = execute(g, feeds)
        for name, index in g.updates.items():
            np.copyto(g.initializers[name], outs[index])
    # The params are the caller's own arrays: the updates landed in them.
    assert all(g.initializers[k] is params[k] for k in params)
    return params


def _numpy_run(name: str, kwargs) -> dict[str, np.ndarray]:
    """torch.optim's formulas, restated in NumPy float32 step by step."""
    params = _initial()
    f = np.float32
    lr0 = kwargs["lr"]
    momentum = kwargs.get("momentum", 0.0)
    dampening = kwargs.get("dampening", 0.0)
    nesterov = kwargs.get("nesterov", False)
    default_wd = 1e-2 if name.startswith("adamw") else 0.0
    wd = kwargs.get("weight_decay", default_wd)
    beta1, beta2 = kwargs.get("betas", (0.9, 0.999))
    eps = kwargs.get("eps", 1e-8)
    amsgrad = kwargs.get("amsgrad", False)
    state: dict[str, dict[str, np.ndarray]] = {k: {} for k in params}
    for t, lr in enumerate(_lrs(lr0)):
        grads = _grad(params, t)
        for k, p in params.items():
            g, s = grads[k], state[k]
            if name.startswith("sgd"):
                if wd:
                    g = g + f(wd) * p
                if momentum:
                    if "buf" not in s:
                        s["buf"] = g.copy()
                    else:
                        s["buf"] = s["buf"] * f(momentum) + f(1 - dampening) * g
                    g = g + f(momentum) * s["buf"] if nesterov else s["buf"]
                params[k] = p - f(lr) * g
            else:
                step = t + 1
                if name.startswith("adamw"):
                    p = p * f(1 - lr * wd)
                elif wd:
                    g = g + f(wd) * p
                m = s.get("m", np.zeros_like(p))
                v = s.get("v", np.zeros_like(p))
                s["m"] = m + f(1 - beta1) * (g - m)
                s["v"] = v * f(beta2) + (f(1 - beta2) * g) * g
                second = s["v"]
                if amsgrad:
                    s["vmax"] = second = np.maximum(s.get("vmax", np.zeros_like(p)), s["v"])
                bc1, bc2 = 1 - beta1**step, 1 - beta2**step
                denom = np.sqrt(second) / f(math.sqrt(bc2)) + f(eps)
                params[k] = p + (f(-lr / bc1) * s["m"]) / denom
    return params


def _torch_run(cls_name: str, kwargs) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    init = _initial()
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    opt = getattr(torch.optim, cls_name)(list(tparams.values()), **kwargs)
    for t, lr in enumerate(_lrs(kwargs["lr"])):
        for group in opt.param_groups:
            group["lr"] = lr
        current = {k: v.detach().numpy().copy() for k, v in tparams.items()}
        for k, gk in _grad(current, t).items():
            tparams[k].grad = torch.tensor(gk)
        opt.step()
    return {k: v.detach().numpy().copy() for k, v in tparams.items()}


def _close(a: dict, b: dict, rtol: float) -> None:
    for k in a:
        # relative to the parameter's scale, so elements passing near zero do not blow up
        scale = max(1.0, float(np.abs(b[k]).max()))
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=rtol * scale, err_msg=k)


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_numpy_formulas(name, cls, kwargs):
    _close(_graphc_run(cls, kwargs), _numpy_run(name, kwargs), rtol=1e-5)


@pytest.mark.parametrize("name,cls,kwargs", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_torch_trajectory(name, cls, kwargs):
    pytest.importorskip("torch")
    ours = _graphc_run(cls, kwargs)
    theirs = _torch_run(cls.__name__, kwargs)
    _close(ours, theirs, rtol=1e-4)


def test_state_is_held_by_the_optimizer_and_named():
    g = Graph("opt")
    g.add_input("w", TensorType((2,)), "param", value=np.zeros(2, np.float32))
    gw = g.add_input("gw", TensorType((2,)))
    opt = optim.Adam(lr=0.1, amsgrad=True)
    opt.append_update(g, {"w": gw})
    assert set(opt.state) == {"optim.step", "optim.exp_avg.w", "optim.exp_avg_sq.w", "optim.max_exp_avg_sq.w"}
    for name, arr in opt.state.items():
        assert g.kinds[name] == "state"
        assert g.initializers[name] is arr
        assert name in g.updates
    assert g.kinds[optim.LR_INPUT] == "data" and g.value(optim.LR_INPUT).type == TensorType((), "f32")
    assert opt.state["optim.step"].dtype == np.int64
    # The step counter counts.
    outs = execute(g, {"gw": np.ones(2, np.float32), optim.LR_INPUT: opt.lr_array()})
    assert outs[g.updates["optim.step"]] == 1


def test_state_dict_round_trip_copies_in_place():
    g = Graph("opt")
    g.add_input("w", TensorType((2,)), "param", value=np.zeros(2, np.float32))
    opt = optim.SGD(lr=0.1, momentum=0.9)
    opt.append_update(g, {"w": g.add_input("gw", TensorType((2,)))})
    buf = opt.state["optim.momentum_buffer.w"]
    saved = {k: v.copy() for k, v in opt.state_dict()["state"].items()}
    saved["optim.momentum_buffer.w"][:] = 3.0
    opt2 = optim.SGD(lr=0.5)
    opt.load_state_dict({"type": "SGD", "param_groups": [dict(lr=0.2, momentum=0.9)], "state": saved})
    assert opt.state["optim.momentum_buffer.w"] is buf and buf.tolist() == [3.0, 3.0]
    assert opt.lr == 0.2
    with pytest.raises(GraphcError, match="Adam"):
        opt2.load_state_dict({"type": "Adam", "param_groups": [], "state": {}})


def test_recompile_reuses_state_arrays():
    opt = optim.SGD(lr=0.1, momentum=0.9)
    arrays = []
    for _ in range(2):
        g = Graph("opt")
        g.add_input("w", TensorType((2,)), "param", value=np.zeros(2, np.float32))
        opt.append_update(g, {"w": g.add_input("gw", TensorType((2,)))})
        arrays.append(g.initializers["optim.momentum_buffer.w"])
    assert arrays[0] is arrays[1]


def test_bad_arguments():
    with pytest.raises(GraphcError, match="Nesterov"):
        optim.SGD(lr=0.1, nesterov=True)
    with pytest.raises(GraphcError, match="learning rate"):
        optim.Adam(lr=-1.0)
    with pytest.raises(GraphcError, match="betas"):
        optim.AdamW(betas=(1.0, 0.9))
    g = Graph("opt")
    g.add_input("w", TensorType((2,)), "param", value=np.zeros(2, np.float32))
    with pytest.raises(GraphcError, match="not a parameter"):
        optim.SGD(lr=0.1).append_update(g, {"x": g.add_input("gx", TensorType((2,)))})


def test_defaults_match_torch():
    torch = pytest.importorskip("torch")
    p = [torch.zeros(1, requires_grad=True)]
    for ours, theirs in [
        (optim.SGD(), torch.optim.SGD(p)),
        (optim.Adam(), torch.optim.Adam(p)),
        (optim.AdamW(), torch.optim.AdamW(p)),
    ]:
        for key, value in ours.defaults.items():
            assert theirs.defaults[key] == value, (type(ours).__name__, key)


# ---------------------------------------------------------------- schedulers
EPOCHS = 40


def _our_lrs(make, base=0.1):
    opt = optim.SGD(lr=base)
    sched = make(opt)
    out = []
    for _ in range(EPOCHS):
        out.append(opt.lr)
        sched.step()
    assert sched.get_last_lr() == [opt.lr]
    return out


SCHEDULES = {
    "step": (
        lambda o: lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
        lambda b: b * 0.5 ** (np.arange(EPOCHS) // 7),
    ),
    "multistep": (lambda o: lr_scheduler.MultiStepLR(o, [5, 12, 30], gamma=0.3), None),
    "exponential": (
        lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
        lambda b: b * 0.9 ** np.arange(EPOCHS),
    ),
    "cosine": (
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=15, eta_min=0.001),
        lambda b: 0.001 + (b - 0.001) * (1 + np.cos(np.pi * np.arange(EPOCHS) / 15)) / 2,
    ),
    "linear": (
        lambda o: lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=10),
        lambda b: b * (0.1 + 0.9 * np.minimum(np.arange(EPOCHS), 10) / 10),
    ),
    "linear_default": (lambda o: lr_scheduler.LinearLR(o), None),
}


@pytest.mark.parametrize("name", [n for n, (_, closed) in SCHEDULES.items() if closed is not None])
def test_scheduler_closed_forms(name):
    make, closed = SCHEDULES[name]
    np.testing.assert_allclose(_our_lrs(make), closed(0.1), rtol=1e-12)


def _torch_lrs(name: str, base=0.1):
    torch = pytest.importorskip("torch")
    S = torch.optim.lr_scheduler
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    makers = {
        "step": lambda o: S.StepLR(o, step_size=7, gamma=0.5),
        "multistep": lambda o: S.MultiStepLR(o, [5, 12, 30], gamma=0.3),
        "exponential": lambda o: S.ExponentialLR(o, gamma=0.9),
        "cosine": lambda o: S.CosineAnnealingLR(o, T_max=15, eta_min=0.001),
        "linear": lambda o: S.LinearLR(o, start_factor=0.1, total_iters=10),
        "linear_default": lambda o: S.LinearLR(o),
        "sequential": lambda o: S.SequentialLR(
            o, [S.LinearLR(o, start_factor=0.1, total_iters=5), S.CosineAnnealingLR(o, T_max=20)], [5]
        ),
    }
    sched = makers[name](opt)
    out = []
    for _ in range(EPOCHS):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("name", [*SCHEDULES, "sequential"])
def test_scheduler_matches_torch(name):
    pytest.importorskip("torch")
    if name == "sequential":

        def make(o):
            warm = lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=5)
            return lr_scheduler.SequentialLR(o, [warm, lr_scheduler.CosineAnnealingLR(o, T_max=20)], [5])

    else:
        make = SCHEDULES[name][0]
    np.testing.assert_allclose(_our_lrs(make), _torch_lrs(name), rtol=1e-9, atol=1e-15)


def test_scheduler_state_round_trip():
    opt = optim.Adam(lr=0.01)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        sched.step()
    state = sched.state_dict()
    opt2 = optim.Adam(lr=0.01)
    sched2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
    sched2.load_state_dict(state)
    assert opt2.lr == opt.lr
    sched.step()
    sched2.step()
    assert opt2.lr == opt.lr and sched2.last_epoch == 5


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW])
def test_float64_parameters(cls):
    """Updates are built in each parameter's own dtype; the f32 lr is cast to it."""
    g = Graph("opt")
    w = np.array([1.0, -2.0, 3.0])
    g.add_input("w", TensorType.of(w), "param", value=w)
    kwargs = dict(lr=0.1, momentum=0.9, dampening=0.1) if cls is optim.SGD else dict(lr=0.1)
    opt = cls(**kwargs)
    opt.append_update(g, {"w": g.add_input("gw", TensorType((3,), "f64"))})
    verify(g)
    outs = execute(g, {"gw": np.ones(3), optim.LR_INPUT: opt.lr_array()})
    new = outs[g.updates["w"]]
    assert new.dtype == np.float64
    if cls is optim.SGD:
        np.testing.assert_allclose(new, w - np.float64(np.float32(0.1)))
    else:
        assert np.all(new < w)
