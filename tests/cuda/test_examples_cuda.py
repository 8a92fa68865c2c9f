"""The examples on the CUDA backend (simulator): each matches the reference executor.

The simulator runs one Python thread per CUDA thread, so every example runs at its own layer
sizes on a small input: a batch of 2; examples/cnn.py (5.6 MFLOP an image) on one image and
examples/transformer.py (d=256, 4 heads, ff 1024) on one sequence of 4 tokens, about 45 s each.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

import graphc
from graphc.kernels.reference import execute

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"cuda_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_case(name: str):
    rng = np.random.default_rng(0)
    module = load(name)
    model = module.model()
    if name == "transformer":
        return model, (rng.standard_normal((1, 4, module.D_MODEL)).astype(np.float32),)
    (x,) = module.example_inputs()
    return model, (x[:1] if name == "cnn" else x[:2],)


@pytest.mark.parametrize(
    "name",
    [  # the CNN first: the worker then holds this file's other tests, not another file, meanwhile
        pytest.param("cnn", marks=pytest.mark.slow),
        "mlp",
        "my_sequential",
        "nest_mlp",
    ],
)
def test_example_on_cuda_matches_reference(name):
    """The transformer runs in tests/cuda/test_example_transformer_cuda.py: with ``--dist loadfile``
    a file is one worker's, and the two longest simulator runs then go to different workers."""
    check_example(name)


def check_example(name: str) -> None:
    """Run example ``name`` on the CUDA backend (simulator) and compare with the reference executor."""
    model, inputs = small_case(name)
    graph = graphc.trace(model, *inputs)
    expected = execute(graph, {v.name: a for v, a in zip(graph.data_inputs, inputs)})[0]
    got = graphc.compile(model, *inputs, device="cuda")(*inputs)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
