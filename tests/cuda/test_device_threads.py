"""The device plan from several Python threads (its lock: calls take turns, each correct) and
run-time index errors naming the user's source line, as runtime.Plan does (tests/test_threads.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import nn
from graphc.ir import GraphcError

pytestmark = pytest.mark.cudasim


def test_one_device_plan_called_from_four_threads_gives_one_threads_results() -> None:
    graphc.manual_seed(0)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((4, 8)).astype(np.float32) for _ in range(4)]
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5), nn.Softmax(-1))
    plan = graphc.compile(net, inputs[0], device="cuda")
    want = [plan(x) for x in inputs]
    assert len({w.tobytes() for w in want}) == len(want)
    errors: list[str] = []
    start = threading.Barrier(4)

    def work(t: int) -> None:
        start.wait()
        for c in range(6):
            i = (t + c) % len(inputs)
            if not np.array_equal(plan(inputs[i]), want[i]):
                errors.append(f"thread {t}, call {c}: input {i} gave another result")

    pool = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors[:5]


def _pick(table, idx):
    return F.embedding(idx, table)  # a bad index must be reported at this line


_PICK_LINE = _pick.__code__.co_firstlineno + 1


def test_an_index_error_on_the_device_names_the_users_line() -> None:
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    plan = graphc.compile(_pick, table, np.array([0, 1], np.int64), device="cuda")
    np.testing.assert_array_equal(plan(table, np.array([3, 1], np.int64)), table[[3, 1]])
    with pytest.raises(GraphcError) as caught:
        plan(table, np.array([0, 5], np.int64))
    message = str(caught.value)
    assert f"test_device_threads.py:{_PICK_LINE}" in message, message
    assert "gather: index" in message and "= gather)" in message, message
