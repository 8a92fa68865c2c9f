"""examples/char_lstm.py --quick: loss falls compiled and eager, from the same first loss; the compiled
sampler (a Python for loop converted to one scan) draws the same characters as running it eagerly."""

import importlib.util
import io
import pathlib

import numpy as np
import pytest

import graphc
from graphc.autograph import converted

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "char_lstm.py"


def _load():
    spec = importlib.util.spec_from_file_location("example_char_lstm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # compiles a training step and a sampler (about 30 s with a cold kernel cache)
def test_char_lstm_quick_trains_both_ways_and_samples():
    module = _load()
    out = io.StringIO()
    result = module.main(["--quick"], out=out)
    compiled, eager = result["compiled"], result["eager"]
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-5)  # same weights, same batch
    assert compiled[-1] < compiled[0] - 0.1 and eager[-1] < eager[0] - 0.1
    np.testing.assert_allclose(compiled, eager, rtol=2e-3)  # the two trainings follow each other

    text = out.getvalue()
    assert "compiled: loss" in text and "eager: loss" in text and "sample" in text
    sampler, (prompt, noise) = result["sampler"], result["inputs"]
    assert len(result["sample"]) == prompt.shape[1] + noise.shape[0]
    with converted(sampler) as m:
        assert graphc.trace(m, prompt, noise).op_counts().get("scan", 0) >= 2  # the LSTM's and the for's
    eager_ids = np.asarray(sampler(prompt, noise))  # the same forward, run eagerly as a Python loop
    np.testing.assert_array_equal(result["ids"], eager_ids[:, 0])
