"""``optimizer.step()`` in eager mode: the optimizer's own update graph, run over ``param.grad``.

The update is built by the same :meth:`Optimizer.append_update` that ``compile_train`` appends
to a training graph, on a small graph of its own: one ``param`` input per parameter that has a
gradient (its initializer is the parameter's memory), one ``data`` input per gradient and the
``optim.lr`` input. It runs with the NumPy reference kernels and its results are written into the
parameters and the optimizer's state arrays in place. The graph is built once and rebuilt only
when the set of parameters with gradients or a hyper-parameter other than the rate changes.
"""

from __future__ import annotations

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
        from graphc.kernels.reference import execute

        from .optimizer import LR_INPUT

        feeds: dict[str, np.ndarray] = {LR_INPUT: lr}
        for i, p in self.live:
            g = np.asarray(p.grad)
            if g.shape != p.shape:
                raise GraphcError(f"optimizer step: parameter {i} has shape {p.shape}, its .grad {g.shape}")
            feeds[f"grad{i}"] = np.ascontiguousarray(g, dtype=p.dtype)
        results = execute(self.graph, feeds)
        for name, index in self.graph.updates.items():
            np.copyto(self.graph.initializers[name], results[index])
