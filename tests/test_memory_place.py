"""The memory planner's placement: array-based best fit gives the offsets of the plain loop."""

import numpy as np
import pytest

from graphc.passes.memory_plan import _place


def _reference_place(order, start, end, size):
    """Best fit, one root at a time, against every placed root live at a same step (the plain
    statement: lowest waste first, the lowest offset of equals, else above them all)."""
    placed, offsets, top = [], {}, 0
    for r in order:
        need = size[r]
        busy = sorted((o, o + s) for a, b, o, s in placed if a <= end[r] and start[r] <= b and s > 0)
        best, best_waste, cursor = None, None, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= need and (best_waste is None or gap - need < best_waste):
                best, best_waste = cursor, gap - need
            cursor = max(cursor, hi)
        offset = best if best is not None else cursor
        offsets[r] = offset
        placed.append((start[r], end[r], offset, need))
        top = max(top, offset + need)
    return offsets, top


@pytest.mark.parametrize("seed", range(40))
def test_place_matches_the_plain_best_fit_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 80))
    roots = [f"v{i}" for i in range(n)]
    start = {r: int(rng.integers(-1, 40)) for r in roots}
    end = {r: start[r] + int(rng.integers(0, 20)) for r in roots}
    size = {r: 64 * int(rng.choice([0, 1, 1, 2, 3, 8])) for r in roots}
    order = [roots[i] for i in rng.permutation(n)]
    assert _place(order, start, end, size) == _reference_place(order, start, end, size)


def test_place_fills_the_tightest_gap():
    # a, b, c live over steps 0-10; h1 and h2 only at step 0, so they leave a 64-byte gap
    # (between a and b) and a 128-byte one (between b and c) for the roots of step 5.
    start = {"a": 0, "h1": 0, "b": 0, "h2": 0, "c": 0, "small": 5, "mid": 5}
    end = {"a": 10, "h1": 0, "b": 10, "h2": 0, "c": 10, "small": 5, "mid": 5}
    size = {"a": 64, "h1": 64, "b": 64, "h2": 128, "c": 64, "small": 64, "mid": 128}
    offsets, top = _place(["a", "h1", "b", "h2", "c", "mid", "small"], start, end, size)
    assert [offsets[r] for r in ("a", "h1", "b", "h2", "c")] == [0, 64, 128, 192, 320]
    assert offsets["mid"] == 192 and offsets["small"] == 64 and top == 384
