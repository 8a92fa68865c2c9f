"""Which outputs of a step lie exactly on one of its inputs' bytes: the runtime's in-place rule.

A plan (runtime/plan.py) and a control-flow body's sub-plan (kernels/cpu/control_flow.py) both
ask it of the arena arrays they bind, and hand the answer to ``compile_node`` as its hint.
"""

from __future__ import annotations

import numpy as np


def in_place_outputs(arrays: list[np.ndarray], n_in: int) -> dict[int, int]:
    """Output index -> input index for outputs on exactly an input's bytes (same shape and dtype)."""

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and a.dtype == b.dtype and a.ctypes.data == b.ctypes.data and a.size > 0

    found = {}
    for k, out in enumerate(arrays[n_in:]):
        j = next((j for j, x in enumerate(arrays[:n_in]) if same(out, x)), None)
        if j is not None:
            found[k] = j
    return found
