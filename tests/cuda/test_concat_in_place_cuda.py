"""Concat in place on the device executor: the concat's operands written at their places in its
result by their own kernels, the concat itself skipped, results equal to the reference."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import Graph, TensorType
from graphc.kernels.reference import execute
from graphc.passes import check_memory_plan, plan_memory
from graphc.runtime import build_device_plan

pytestmark = pytest.mark.cudasim


def test_device_plan_runs_a_concat_in_place() -> None:
    g = Graph("branches")
    x = g.add_input("x", TensorType((1, 32, 2, 2)))
    a = g.op("exp", x)
    b = g.op("tanh", g.op("slice", x, starts=(0, 16, 0, 0), stops=(1, 32, 2, 2), steps=(1, 1, 1, 1)))
    inner = g.op("concat", a, b, axis=1)
    y = g.op("concat", inner, g.op("neg", x), axis=1)
    g.add_output(g.op("add", y, y))
    g.add_output(g.op("mul", a, a))  # an operand read after the concats
    memory_plan = plan_memory(g)
    check_memory_plan(g, memory_plan)
    concats = [n for n in g.nodes if n.op == "concat"]
    assert all(memory_plan.is_view(n) for n in concats)
    plan = build_device_plan(g, memory_plan)
    data = np.random.default_rng(0).standard_normal((1, 32, 2, 2)).astype(np.float32)
    for _ in range(2):
        got = plan(data)
    for w, r in zip(execute(g, {"x": data}), got):
        np.testing.assert_allclose(r, w, rtol=1e-5, atol=1e-6)
