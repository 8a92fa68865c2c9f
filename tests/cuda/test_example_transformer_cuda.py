"""examples/transformer.py on the CUDA backend (simulator) against the reference executor: one
sequence of 4 tokens at the example's layer sizes (~50 s in the simulator, so in a file of its own)."""

import pytest
from test_examples_cuda import check_example


@pytest.mark.slow
def test_transformer_example_on_cuda_matches_reference():
    check_example("transformer")
