"""The optimizer base class: update rules that append themselves to a training graph as nodes.

Built with the parameters (``SGD(model.parameters(), lr=0.1)``), an optimizer also runs in eager
mode: ``step()`` runs that same update rule over each ``param.grad`` (optim/eager_step.py) and
``zero_grad()`` clears them. ``graphc.compile_train`` traces the loss, appends the backward
graph, then calls :meth:`Optimizer.append_update`, which adds

- one ``data`` input, ``optim.lr`` (f32[]), fed on every call, so a learning-rate schedule changes
  the rate without recompiling;
- ``state`` inputs for the optimizer's buffers (momentum, exp_avg, ...), whose initializers are
  arrays the optimizer itself holds (``optimizer.state``), so checkpoints can read them and the
  runtime writes the new values straight back into them;
- the update nodes, and graph outputs registered in ``graph.updates`` for every new parameter and
  state value.

The formulas are torch.optim's, operation for operation (same order of float32 roundings where it
matters), so a graphc run follows a PyTorch run's trajectory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from graphc.ir import Graph, GraphcError, TensorType, Value
from graphc.safecast import check_fits, copy_into

from .eager_step import EagerUpdate, split_params

__all__ = ["LR_INPUT", "Optimizer", "split_params"]

LR_INPUT = "optim.lr"
# Hyper-parameters read on every call; every other one is a constant of a compiled update.
LIVE_HYPER_PARAMETERS = ("lr", "initial_lr")


class _Builder:
    """Small helpers to append scalar-heavy update math to a graph (constants are shared)."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self._consts: dict[tuple[float, str], Value] = {}
        self._scalars: dict[tuple, Value] = {}

    def const(self, value: float, dtype: str = "f32") -> Value:
        key = (float(value) if dtype in ("f32", "f64") else int(value), dtype)
        if key not in self._consts:
            self._consts[key] = self.g.op("const", value=key[0], dtype=dtype)
        return self._consts[key]

    def scalar(self, key: tuple, make) -> Value:
        """A value built once per graph under ``key`` (scalars shared by every parameter)."""
        if key not in self._scalars:
            self._scalars[key] = make()
        return self._scalars[key]

    def lr_as(self, lr: Value, dtype: str) -> Value:
        """The f32 learning rate in a parameter's dtype."""
        return (
            lr
            if lr.dtype == dtype
            else self.scalar(("lr", dtype), lambda: self.g.op("cast", lr, dtype=dtype))
        )

    def __getattr__(self, op: str):
        # b.add(x, y) appends an `add` node and returns its output.
        def apply(*inputs: Value, **attrs: object) -> Value:
            return self.g.op(op, *inputs, **attrs)

        return apply


class Optimizer:
    """Base class: hyper-parameters in ``param_groups[0]``, state arrays in ``state``."""

    def __init__(self, defaults: dict, params: list[np.ndarray] | None = None) -> None:
        if defaults.get("lr", 0.0) < 0.0:
            raise GraphcError(f"{type(self).__name__}: invalid learning rate {defaults['lr']}")
        self.defaults = dict(defaults)
        # One group, as torch's param_groups[0]: schedulers read and write its "lr".
        self.param_groups: list[dict] = [dict(defaults)]
        # state input name -> its persistent array (shared with every plan built from it)
        self.state: dict[str, np.ndarray] = {}
        # The hyper-parameters the latest compiled update was built with (None: never compiled).
        self._built_with: dict | None = None
        # The parameters given to the constructor (eager step()/zero_grad()), None if not given.
        self.params: list[np.ndarray] | None = params
        self._eager_update: EagerUpdate | None = None

    # ------------------------------------------------------------ eager mode
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients of the parameters (``.grad = None``, or zeros), as torch."""
        for p in self._eager_params("zero_grad"):
            if set_to_none:
                p.grad = None  # type: ignore[attr-defined]
            elif getattr(p, "grad", None) is not None:
                p.grad[...] = 0  # type: ignore[attr-defined]

    def step(self, closure: Any = None) -> Any:
        """Update every parameter that has a ``.grad`` in place (eager mode); returns closure()'s loss.

        The update is this optimizer's own rule (:meth:`append_update`), the one compiled train
        steps run, so eager and compiled training follow the same trajectory.
        """
        loss = closure() if closure is not None else None
        live = [
            (i, p) for i, p in enumerate(self._eager_params("step")) if getattr(p, "grad", None) is not None
        ]
        if not live:
            return loss
        hyper = tuple((k, v) for k, v in self.param_groups[0].items() if k not in LIVE_HYPER_PARAMETERS)
        key = (tuple(i for i, _ in live), hyper)
        if self._eager_update is None or self._eager_update.key != key:
            self._eager_update = EagerUpdate(self, live, key)
        self._eager_update.run(self.lr_array())
        return loss

    def _eager_params(self, what: str) -> list[np.ndarray]:
        if self.params is None:
            raise GraphcError(
                f"{type(self).__name__}.{what}() needs the parameters: build the optimizer with them, "
                f"{type(self).__name__}(model.parameters(), lr=...)"
            )
        return self.params

    # ------------------------------------------------------------ hyper-parameters
    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        return float(self.param_groups[0]["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = float(value)

    def lr_array(self) -> np.ndarray:
        """The learning rate as the f32[] array fed to the ``optim.lr`` input."""
        return np.array(self.lr, dtype=np.float32)

    # ------------------------------------------------------------ graph building
    def append_update(self, graph: Graph, grads: Mapping[str, Value]) -> None:
        """Append the update of every parameter named in ``grads`` (param name -> gradient value)."""
        if LR_INPUT in graph.kinds:
            raise GraphcError(f"graph {graph.name} already has an optimizer update ({LR_INPUT} exists)")
        b = _Builder(graph)
        lr = graph.add_input(LR_INPUT, TensorType((), "f32"), "data")
        values = {v.name: v for v in graph.inputs}
        pairs = []
        for name, grad in grads.items():
            param = values.get(name)
            if param is None or graph.kinds[name] != "param":
                raise GraphcError(f"{type(self).__name__}: %{name} is not a parameter of graph {graph.name}")
            if grad.type != param.type:
                raise GraphcError(f"gradient of %{name} is {grad.type}, parameter is {param.type}")
            pairs.append((param, grad))
        new_params, new_states = self._build(b, lr, pairs)
        self._built_with = {k: v for k, v in self.param_groups[0].items() if k not in LIVE_HYPER_PARAMETERS}
        for param, new in zip((p for p, _ in pairs), new_params):
            graph.add_output(new, updates=param.name)
        for name, new in new_states.items():
            graph.add_output(new, updates=name)

    def _state_input(self, b: _Builder, kind: str, like: Value | TensorType, fill: float = 0.0) -> Value:
        """A state input ``optim.<kind>`` (zeros of the type) backed by an array this optimizer holds."""
        type_ = like if isinstance(like, TensorType) else like.type
        name = f"optim.{kind}"
        arr = self.state.get(name)
        # Reuse an existing array (a recompile or a loaded checkpoint continues from it).
        if arr is None or arr.shape != type_.shape or arr.dtype != type_.np_dtype:
            arr = np.full(type_.shape, fill, dtype=type_.np_dtype)
            self.state[name] = arr
        return b.g.add_input(name, type_, "state", value=arr)

    def _build(
        self, b: _Builder, lr: Value, pairs: list[tuple[Value, Value]]
    ) -> tuple[list[Value], dict[str, Value]]:
        """Return the new parameter values (in order) and new state values by state input name."""
        raise NotImplementedError

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Hyper-parameters and state arrays (the arrays themselves, not copies)."""
        return {
            "type": type(self).__name__,
            "param_groups": [dict(g) for g in self.param_groups],
            "state": dict(self.state),
        }

    def check_state_dict(self, state: Any, where: str = "optimizer state") -> dict:
        """Validate ``state`` (as :meth:`state_dict` gives it) against this optimizer; change nothing.

        Returns it normalized (tuples for lists, arrays for the state). Raises GraphcError naming
        the first bad field under ``where``: a wrong type, an out-of-range hyper-parameter, one
        that differs from what a compiled update was built with (only ``lr`` and ``initial_lr``
        are read on every call), or a state array that does not fit the existing one.
        """
        if not isinstance(state, dict):
            raise GraphcError(f"{where}: expected a dict, got {type(state).__name__}")
        for key in ("type", "param_groups", "state"):
            if key not in state:
                raise GraphcError(f"{where}: no {key!r}")
        if state["type"] != type(self).__name__:
            raise GraphcError(f"{where}: is for {state['type']!r:.80}, not {type(self).__name__}")
        groups = state["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.param_groups):
            raise GraphcError(
                f"{where}: param_groups must be a list of {len(self.param_groups)} dict(s), "
                f"got {groups!r:.80}"
            )
        checked_groups = [
            self._check_group(saved, mine, f"{where}.param_groups[{i}]")
            for i, (saved, mine) in enumerate(zip(groups, self.param_groups))
        ]
        arrays = state["state"]
        if not isinstance(arrays, dict):
            raise GraphcError(f"{where}: state must be a dict of arrays, got {type(arrays).__name__}")
        checked: dict[str, np.ndarray] = {}
        for name, arr in arrays.items():
            at = f"{where} array {name!r}"
            if not isinstance(arr, np.ndarray):
                raise GraphcError(f"{at}: expected an array, got {type(arr).__name__}")
            mine = self.state.get(name)
            if mine is not None:
                check_fits(arr, mine, at)
            elif self._built_with is not None:
                raise GraphcError(f"{at}: the compiled update has no such state")
            elif arr.dtype.kind not in "biuf":
                raise GraphcError(f"{at}: dtype {arr.dtype} is not a numeric dtype")
            checked[name] = arr
        if self._built_with is not None:
            missing = sorted(set(self.state) - set(checked))
            if missing:
                raise GraphcError(f"{where}: lacks the state array(s) {', '.join(map(repr, missing))}")
        return {"type": state["type"], "param_groups": checked_groups, "state": checked}

    def _check_group(self, saved: Any, mine: dict, where: str) -> dict:
        if not isinstance(saved, dict):
            raise GraphcError(f"{where}: expected a dict, got {type(saved).__name__}")
        extra = sorted(set(saved) - set(mine) - {"initial_lr"})
        if extra:
            raise GraphcError(f"{where}: unexpected key(s) {', '.join(map(repr, extra))}")
        group = dict(mine)  # a key the saved group lacks keeps its current value
        for key, value in saved.items():
            group[key] = _check_hyper(value, mine.get(key, mine["lr"]), f"{where}.{key}")
        # The constructor's own range checks (invalid betas, negative momentum, ...).
        try:
            type(self)(**{k: v for k, v in group.items() if k != "initial_lr"})
        except GraphcError as err:
            raise GraphcError(f"{where}: {err}") from None
        except TypeError:
            pass  # a subclass whose constructor takes other arguments: the type checks stand
        if self._built_with is not None:
            for key, built in self._built_with.items():
                if key in group and group[key] != built:
                    raise GraphcError(
                        f"{where}.{key} is {group[key]!r}, but the compiled update was built with {built!r}"
                    )
        return group

    def load_state_dict(self, state: dict) -> None:
        """Restore hyper-parameters and state, all or nothing; arrays are copied in place.

        Validated first (:meth:`check_state_dict`): on any error nothing changes. Existing state
        arrays, which compiled plans hold, are written into, never replaced.
        """
        checked = self.check_state_dict(state)
        self.param_groups = [dict(g) for g in checked["param_groups"]]
        for name, arr in checked["state"].items():
            mine = self.state.get(name)
            if mine is not None:
                copy_into(mine, arr)
            else:
                self.state[name] = np.array(arr, copy=True)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.param_groups[0].items() if k != "initial_lr")
        return f"{type(self).__name__}({args})"


def _check_hyper(value: Any, like: Any, where: str) -> Any:
    """``value`` as a hyper-parameter of the same type as ``like`` (numbers finite and >= 0)."""
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise GraphcError(f"{where}: expected true/false, got {value!r:.80}")
        return value
    if isinstance(like, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(like):
            raise GraphcError(f"{where}: expected {len(like)} numbers, got {value!r:.80}")
        return tuple(_check_hyper(v, w, f"{where}[{i}]") for i, (v, w) in enumerate(zip(value, like)))
    if isinstance(like, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphcError(f"{where}: expected a number, got {value!r:.80}")
        if value < 0 or value > 1e300 or not math.isfinite(value):  # compared first: a huge int
            raise GraphcError(f"{where}: {value!r} is not a finite number >= 0")
        return type(like)(value) if isinstance(like, float) else value
    if value is not None and type(value) is not type(like):
        raise GraphcError(f"{where}: expected {type(like).__name__}, got {value!r:.80}")
    return value
