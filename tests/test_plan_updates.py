"""runtime.Plan's updates: written over the parameters by the step that computes them, where safe.

The oracle is the same plan with every update copied after the run (``memory_plan.written_over``
switched off),
and the NumPy reference backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc.compiler
import graphc.functional as F
import graphc.nn as nn
from graphc import optim
from graphc.ir import Graph, GraphcError, TensorType
from graphc.passes import memory_plan
from graphc.training import compile_train


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(12, 32)
        self.out = nn.Linear(32, 5)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((16, 12)).astype(np.float32), rng.integers(0, 5, 16).astype(np.int64)


def _train(optimizer, backend="cpu", copy_updates=False, monkeypatch=None, steps=4):
    nn.init.manual_seed(0)
    model = MLP()
    x, y = _batch()
    if copy_updates:
        monkeypatch.setattr(memory_plan, "written_over", lambda graph, nodes=None: {})
    arrays = dict(model.state_dict())
    step = compile_train(model, F.cross_entropy, optimizer(), x, y, backend=backend)
    if copy_updates:
        monkeypatch.undo()
    losses = [float(step(x, y)) for _ in range(steps)]
    assert all(np.shares_memory(arrays[k], v) for k, v in model.state_dict().items()), (
        "not the model's arrays"
    )
    return losses, {k: np.array(v) for k, v in model.state_dict().items()}, step


OPTIMIZERS = {
    "sgd": lambda: optim.SGD(lr=0.1),
    "momentum": lambda: optim.SGD(lr=0.1, momentum=0.9),
    "adam": lambda: optim.Adam(lr=1e-2),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_updates_written_in_place_give_the_copied_results_bit_for_bit(name, monkeypatch):
    losses, state, step = _train(OPTIMIZERS[name])
    plan = _plan_of(step)
    # The schedule puts memory first: most updates, not always all, are written in place.
    assert len(plan._direct) >= len(plan.graph.updates) // 2, sorted(plan._direct)
    copied_losses, copied_state, copied = _train(OPTIMIZERS[name], copy_updates=True, monkeypatch=monkeypatch)
    assert not _plan_of(copied)._direct
    assert losses == copied_losses
    for k in state:
        np.testing.assert_array_equal(state[k], copied_state[k], err_msg=k)
    ref_losses, ref_state, _ = _train(OPTIMIZERS[name], backend="reference")
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for k in state:
        np.testing.assert_allclose(state[k], ref_state[k], rtol=1e-4, atol=1e-6, err_msg=k)


def _plan_of(step):
    plan = getattr(step, "plan", step)
    return getattr(plan, "plan", plan)


def _graph_with_update(read_old_after: bool = False, gather: bool = False) -> Graph:
    """new p = p * 0.5 + x (an update of p); returns sum(x) and optionally old p, a gather of x."""
    g = Graph("update")
    x = g.add_input("x", TensorType((4,)))
    p = g.add_input("p", TensorType((4,)), "param", np.arange(4, dtype=np.float32))
    half = g.op("const", value=0.5, dtype="f32")
    g.add_output(g.op("sum", g.op("mul", x, x), axes=(0,)))
    if read_old_after:
        g.add_output(p)
    if gather:
        idx = g.add_input("idx", TensorType((2,), "i64"))
        g.add_output(g.op("gather", x, idx, axis=0))
    g.add_output(g.op("add", g.op("mul", p, half), x), updates="p")
    return g


def test_building_a_plan_changes_no_parameter():
    g = _graph_with_update()
    plan = graphc.compiler.compile_graph(g)  # the build runs every kernel once
    assert "p" in plan._direct
    np.testing.assert_array_equal(plan.parameters["p"], np.arange(4, dtype=np.float32))
    plan(np.ones(4, np.float32))
    np.testing.assert_array_equal(plan.parameters["p"], np.arange(4) * 0.5 + 1)


def test_a_returned_param_gives_its_value_before_the_update():
    g = _graph_with_update(read_old_after=True)
    plan = graphc.compiler.compile_graph(g)
    _, old = plan(np.ones(4, np.float32))
    np.testing.assert_array_equal(old, np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(plan.parameters["p"], np.arange(4) * 0.5 + 1)


def test_a_step_that_raises_changes_no_parameter():
    g = _graph_with_update(gather=True)
    plan = graphc.compiler.compile_graph(g)
    with pytest.raises(GraphcError, match="out of range"):
        plan(np.ones(4, np.float32), np.array([0, 9], np.int64))
    np.testing.assert_array_equal(plan.parameters["p"], np.arange(4, dtype=np.float32))
    plan(np.ones(4, np.float32), np.array([0, 3], np.int64))
    np.testing.assert_array_equal(plan.parameters["p"], np.arange(4) * 0.5 + 1)


def test_updates_written_over_their_inputs_take_no_arena_bytes():
    import dataclasses

    from graphc.passes import check_memory_plan

    _, _, step = _train(OPTIMIZERS["adam"])
    plan = _plan_of(step)
    mp = plan.memory_plan
    assert mp.written_over and not set(mp.written_over) & set(mp.buffers)
    check_memory_plan(plan.graph, mp)
    loss = plan.graph.outputs[0].name
    forged = dataclasses.replace(mp, written_over={**mp.written_over, loss: "hidden.weight"})
    with pytest.raises(GraphcError, match="cannot be written over"):
        check_memory_plan(plan.graph, forged)


def test_a_training_plan_file_keeps_its_in_place_updates(tmp_path):
    # Also the two things that kept training plans from loading: a multi-output fused node's
    # names (Adam's epilogue), and 0-d state (Adam's step count).
    from graphc.compiler import load_plan

    _, _, step = _train(OPTIMIZERS["adam"], steps=2)
    plan = _plan_of(step)
    plan.save(str(tmp_path / "step.gcp"))
    loaded = load_plan(str(tmp_path / "step.gcp"))
    assert loaded.memory_plan.written_over == plan.memory_plan.written_over
    assert set(loaded._direct) == set(plan._direct)
    assert loaded.parameters["optim.step"].shape == ()
    feeds = [np.asarray(a) for a in (*_batch(1), np.float32(1e-2))]
    feeds = [f.astype(v.type.np_dtype) for f, v in zip(feeds, plan.graph.data_inputs)]
    assert float(loaded(*feeds)) == float(plan(*feeds))
    for k, v in plan.parameters.items():
        np.testing.assert_array_equal(loaded.parameters[k], v, err_msg=k)
