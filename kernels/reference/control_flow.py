"""Reference (NumPy) semantics of cond, while_loop and scan: run the bodies with ``execute``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphc.ir import Graph, GraphcError, Node

# A while_loop that runs this many iterations is taken to be stuck (a GraphcError, not a hang).
MAX_TRIPS = 10_000_000


def _run(body: Graph, args: list[np.ndarray]) -> list[np.ndarray]:
    from . import execute

    return execute(body, {v.name: a for v, a in zip(body.data_inputs, args)})


def run_cond(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    """The taken branch on the operands."""
    return _run(node.bodies[0] if bool(args[0]) else node.bodies[1], args[1:])


def run_while(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    """The body while the cond body says so."""
    k = node.attrs["n_carry"]
    carry, consts = list(args[:k]), list(args[k:])
    trips = 0
    while bool(_run(node.bodies[0], carry + consts)[0]):
        carry = _run(node.bodies[1], carry + consts)
        trips += 1
        if trips > MAX_TRIPS:
            raise GraphcError(f"while_loop ran {MAX_TRIPS} iterations without its condition turning false")
    return carry


def run_scan(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    """The body over the leading axis of the xs; ys stacked in slice order."""
    k, n_xs, length = node.attrs["n_carry"], node.attrs["n_xs"], node.attrs["length"]
    carry, xs, consts = list(args[:k]), args[k : k + n_xs], list(args[k + n_xs :])
    ys = [np.empty(v.shape, v.type.np_dtype) for v in node.outputs[k:]]
    steps = range(length - 1, -1, -1) if node.attrs["reverse"] else range(length)
    for i in steps:
        outs = _run(node.bodies[0], carry + [x[i] for x in xs] + consts)
        carry = outs[:k]
        for y, out in zip(ys, outs[k:]):
            y[i] = out
    return carry + ys


CONTROL_KERNELS: dict[str, Callable[[Node, list[np.ndarray]], list[np.ndarray]]] = {
    "cond": run_cond,
    "while_loop": run_while,
    "scan": run_scan,
}
