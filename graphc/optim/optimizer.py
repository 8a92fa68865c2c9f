"""The optimizer base class: update rules that append themselves to a training graph as nodes.

An optimizer never runs on its own. ``graphc.compile_train`` traces the loss, appends the backward
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

from collections.abc import Mapping

import numpy as np

from graphc.ir import Graph, GraphcError, TensorType, Value

LR_INPUT = "optim.lr"


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

    def __init__(self, defaults: dict) -> None:
        if defaults.get("lr", 0.0) < 0.0:
            raise GraphcError(f"{type(self).__name__}: invalid learning rate {defaults['lr']}")
        self.defaults = dict(defaults)
        # One group, as torch's param_groups[0]: schedulers read and write its "lr".
        self.param_groups: list[dict] = [dict(defaults)]
        # state input name -> its persistent array (shared with every plan built from it)
        self.state: dict[str, np.ndarray] = {}

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

    def load_state_dict(self, state: dict) -> None:
        """Restore hyper-parameters and state; arrays are copied into existing ones in place."""
        if state.get("type", type(self).__name__) != type(self).__name__:
            raise GraphcError(f"optimizer state is for {state['type']}, not {type(self).__name__}")
        self.param_groups = [dict(g) for g in state["param_groups"]]
        for name, arr in state["state"].items():
            arr = np.asarray(arr)
            mine = self.state.get(name)
            # In place, so compiled plans that bound the old array see the restored values.
            if mine is not None and mine.shape == arr.shape and mine.dtype == arr.dtype:
                np.copyto(mine, arr)
            else:
                self.state[name] = np.array(arr, copy=True)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.param_groups[0].items() if k != "initial_lr")
        return f"{type(self).__name__}({args})"
