"""Control-flow models the CPU and CUDA tests share, each with its NumPy oracle."""

from __future__ import annotations

import numpy as np

from graphc import control_flow as cf


def nested_loops(x):
    """A scan whose body runs a while_loop (halve while |v|_1 > 1) and a cond on its result."""

    def body(c, xt):
        halved = cf.while_loop(lambda v: v.abs().sum() > 1.0, lambda v: v / 2, xt)
        c = cf.cond(halved.sum() > 0, lambda a, b: a + b, lambda a, b: a - b, c, halved)
        return c, halved

    return cf.scan(body, x[0] * 0, x)


def nested_loops_numpy(x: np.ndarray) -> list[np.ndarray]:
    """``nested_loops`` as plain NumPy loops: [the final carry, the stacked halved rows]."""
    c, ys = np.zeros(x.shape[1], np.float32), []
    for t in range(x.shape[0]):
        v = x[t].copy()
        while np.abs(v).sum() > 1.0:
            v = v / 2
        c = c + v if v.sum() > 0 else c - v
        ys.append(v)
    return [c, np.stack(ys)]
