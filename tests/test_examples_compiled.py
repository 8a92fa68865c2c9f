"""Every example, compiled for the CPU, gives the reference executor's answer; its plans are tight."""

import importlib.util
import pathlib

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import passes
from graphc.kernels.reference import execute

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
NAMES = ["mlp", "my_sequential", "nest_mlp", "cnn", "transformer"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_cpu_plan_matches_reference(name):
    module = load(name)
    model, inputs = module.model(), module.example_inputs()
    graph = graphc.trace(model, *inputs)
    expected = execute(graph, {v.name: a for v, a in zip(graph.data_inputs, inputs)})
    plan = graphc.compile(model, *inputs)
    got = plan(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=2e-5)
    passes.check_memory_plan(plan.graph, plan.memory_plan)
    mp = plan.memory_plan
    assert mp.arena_bytes <= 1.10 * mp.lower_bound, plan.memory_report()


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_training_plan_memory_is_tight(name):
    module = load(name)
    model, (x,) = module.model(), module.example_inputs()
    labels = np.arange(x.shape[0], dtype=np.int64) % 10
    step = graphc.compile_train(model, F.cross_entropy, graphc.optim.SGD(lr=0.01, momentum=0.9), x, labels)
    plan = step.plan
    passes.check_memory_plan(plan.graph, plan.memory_plan)
    mp = plan.memory_plan
    assert mp.arena_bytes <= 1.10 * mp.lower_bound, plan.memory_report()
    assert mp.arena_bytes < mp.naive_bytes  # updated parameters are outputs: they live to the end
