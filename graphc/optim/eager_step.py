"""``optimizer.step()`` in eager mode: the optimizer's own update graph, run over ``param.grad``.

The update is built by the same :meth:`Optimizer.append_update` that ``compile_train`` appends
to a training graph, on a small graph of its own: one ``param`` input per parameter that has a
gradient (its initializer is the parameter's memory), one ``data`` input per gradient and the
``optim.lr`` input. It runs with the NumPy reference kernels and its results are written into the
parameters and the optimizer's state arrays in place. The graph is built once and rebuilt only
when the set of parameters with gradients or a hyper-parameter other than the rate changes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc.ir import Graph, GraphcError, TensorType

if TYPE_CHECKING:
    from .optimizer import Optimizer

__all__ = ["EagerUpdate", "split_params"]


def split_params(params: Any, lr: float | None, default_lr: float) -> tuple[list[np.ndarray] | None, float]:
    """(parameters or None, learning rate) from an optimizer's first two arguments.

    ``SGD(model.parameters(), lr=0.1)`` and, as before, ``SGD(0.1)`` / ``SGD(lr=0.1)``.
    """
    if isinstance(params, (int, float)) and not isinstance(params, bool):
        if lr is not None:
            raise GraphcError(f"optimizer: got a learning rate twice ({params!r} and lr={lr!r})")
        return None, float(params)
    lr = default_lr if lr is None else lr
    if params is None:
        return None, lr
    if isinstance(params, np.ndarray) or not isinstance(params, Iterable):
        raise GraphcError(
            "optimizer: params must be an iterable of parameters (model.parameters()), "
            f"got {type(params).__name__}"
        )
    out: list[np.ndarray] = []
    seen: set[int] = set()
    for i, p in enumerate(params):
        if isinstance(p, dict):
            raise GraphcError(
                "optimizer: parameter groups (dicts) are not supported; pass model.parameters()"
            )
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
            raise GraphcError(f"optimizer: parameter {i} is not a float array (got {type(p).__name__})")
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    if not out:
        raise GraphcError("optimizer: got an empty parameter list")
    return out, lr


class EagerUpdate:
    """The update graph of one optimizer for one set of parameters with gradients."""

    def __init__(self, optimizer: Optimizer, live: list[tuple[int, np.ndarray]], key: tuple) -> None:
        self.key = key
        graph = Graph(f"{type(optimizer).__name__.lower()}_step")
        grads = {}
        for i, p in live:
            type_ = TensorType.of(np.asarray(p))
            name = graph.add_input(f"param{i}", type_, "param", p.view(np.ndarray)).name
            grads[name] = graph.add_input(f"grad{i}", type_, "data")
        optimizer.append_update(graph, grads)
        self.graph = graph
        self.live = live

    def run(self, lr: np.ndarray) -> None:
        """One step: read each ``param.grad``, write the new parameters and state in place."""
        from .optimizer import LR_INPUT

        feeds: dict[str, np.ndarray] = {LR_INPUT: lr}
        names = self._grad_names
        if names is None:
            names = self._grad_names = [f"grad{i}" for i, _ in self.live]
        for name, (i, p) in zip(names, self.live):
            g = p.grad
            if type(g) is not np.ndarray:
                g = np.asarray(g)
            if g.shape != p.shape:
                raise GraphcError(f"optimizer step: parameter {i} has shape {p.shape}, its .grad {g.shape}")
            feeds[name] = np.ascontiguousarray(g, dtype=p.dtype)
        if self._steps is None:
            self._steps = _compile(self.graph)
        if not self._steps:  # a node the step list cannot run (a fused or control-flow node)
            from graphc.kernels.reference import execute

            results = execute(self.graph, feeds)
        else:
            results = _run_steps(self.graph, self._steps, feeds)
        initializers = self.graph.initializers
        for name, index in self.graph.updates.items():
            np.copyto(initializers[name], results[index])

    _steps: list | None = None
    _grad_names: list[str] | None = None


def _compile(graph: Graph) -> list:
    """The graph's nodes as (kernel, attrs, input slots, [(output slot, dtype, shape)]) over slots
    (the inputs, then each node's outputs), with the reference kernels ``execute`` runs them with,
    then three entries for ``_run_steps`` (see the end); empty where a node needs ``execute``
    itself (a fused or control-flow node, no kernel)."""
    from graphc.eager_backward import _wraps
    from graphc.kernels import reference
    from graphc.kernels.reference import CONTROL_KERNELS, KERNELS

    slot = {v.name: i for i, v in enumerate(graph.inputs)}
    steps = []
    for node in graph.nodes:
        kernel = KERNELS.get(node.op)
        if node.op == "fused" or node.op in CONTROL_KERNELS or kernel is None:
            return []
        ins = [slot[v.name] for v in node.inputs]
        outs = []
        for v in node.outputs:
            slot[v.name] = len(slot)
            outs.append((slot[v.name], v.type.np_dtype, v.shape))
        fn = reference._BINARY.get(node.op)
        if len(ins) == 2 and len(outs) == 1 and _wraps(kernel, fn, reference._binary):
            kernel = functools.partial(_direct_binary, fn)  # np.asarray(fn(a, b)), one call less
        steps.append((kernel, node.attrs, ins, outs))
    # Then: each input's (name, shape, NumPy dtype, type), the number of node outputs, the output slots.
    steps.append([(v.name, v.shape, v.type.np_dtype, v.type) for v in graph.inputs])
    steps.append(sum(len(step[3]) for step in steps[:-1]))
    steps.append([slot[v.name] for v in graph.outputs])
    return steps


def _direct_binary(fn: Any, xs: list[np.ndarray], attrs: dict) -> list[Any]:
    """A binary reference kernel's call of ``fn`` (its result converted after, as by ``run_node``)."""
    return [fn(xs[0], xs[1])]


def _run_steps(graph: Graph, steps: list, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``kernels.reference.execute(graph, feeds)`` over the compiled steps: the same kernels, the
    same input checks and results (C-contiguous, of each output's type), one NumPy error state."""
    from graphc.eager_fast import _quiet_off, _quiet_on

    env: list[Any] = []
    initializers = graph.initializers
    for name, shape, dtype, type_ in steps[-3]:
        arr = feeds.get(name)
        if arr is None:
            arr = initializers.get(name)
            if arr is None:
                raise GraphcError(f"graph {graph.name}: no value for input %{name}")
        else:
            arr = np.asarray(arr)
        if arr.shape != shape or arr.dtype != dtype:
            raise GraphcError(
                f"graph {graph.name}: input %{name} expects {type_}, got {arr.dtype}{list(arr.shape)}"
            )
        env.append(arr)
    env.extend([None] * steps[-2])
    token = _quiet_on()
    try:
        for kernel, attrs, ins, outs in steps[:-3]:
            results = kernel([env[i] for i in ins], attrs)
            for (o, dt, shape), arr in zip(outs, results):
                env[o] = np.ascontiguousarray(arr, dtype=dt).reshape(shape)
    finally:
        _quiet_off(token)
    return [env[i] for i in steps[-1]]
