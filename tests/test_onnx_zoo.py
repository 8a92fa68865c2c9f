"""The nine light model-zoo networks the onnx wheel ships: import, compile, compare.

Shipped weights are all 0.02, so the shipped outputs are nearly constant; the same nine with
seeded random weights (graphc.onnx.zoo.light_model(seed=...)) are compared with ONNX Runtime.
Tolerance for both: rtol 1e-3, atol 1e-5 (the outputs are softmax probabilities, or for
DenseNet-121 pooled features, at batch 1).
"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc.onnx.zoo import LIGHT_MODELS, light_input, light_model, light_output  # noqa: E402

RTOL, ATOL = 1e-3, 1e-5
# The largest compile the most kernels; they still run at batch 1 in the whole suite's budget.
HEAVY = {"densenet121", "inception_v2", "resnet50", "vgg19"}
# The shipped-output check runs each compiled plan on the NumPy reference kernels; the check against
# ONNX Runtime runs the benchmark's three networks on the CPU kernels (the others' op mix is theirs:
# convolutions, pools, LRN, concat, batch norm), the rest on the reference kernels, to keep the
# suite's compile budget (every CPU kernel is checked against its reference kernel elsewhere).
CPU_MODELS = {"resnet50", "inception_v1", "squeezenet"}


def _marks(name):
    return [pytest.mark.slow] if name in HEAVY else []


CASES = [pytest.param(n, marks=_marks(n)) for n in LIGHT_MODELS]


def _run_graphc(model, x, freeze, backend):
    plan = graphc.compile(graphc.onnx.load(model), x, freeze=freeze, backend=backend)
    return plan(x)


@pytest.mark.parametrize("name", CASES)
def test_light_model_matches_shipped_output(name):
    model = light_model(name)
    x = light_input(model)
    assert x.shape[0] == 1
    # SqueezeNet's shipped output is the softmax of 1000 EQUAL logits (~9.5e9, where a float32 ulp
    # is 1024): one ulp between two of them and the output is no longer uniform. The reference
    # kernels' GEMM is OpenBLAS's, whose rounding of a row depends on its tile and thread count
    # (with OpenBLAS on 1 thread the logits differ; a test before this one may leave it there);
    # graphc's own CPU GEMM rounds every output alike on any thread count, so the benchmark's
    # networks, whose CPU kernels the next test compiles anyway, run on it.
    got = _run_graphc(model, x, False, "cpu" if name in CPU_MODELS else "reference")
    np.testing.assert_allclose(got, light_output(name), rtol=RTOL, atol=ATOL)


def test_squeezenet_shipped_output_on_one_or_two_blas_threads():
    """The shipped SqueezeNet on graphc's CPU kernels is uniform whatever OpenBLAS's thread count."""
    from threadpoolctl import threadpool_limits

    model = light_model("squeezenet")
    x = light_input(model)
    plan = graphc.compile(graphc.onnx.load(model), x, backend="cpu")
    for threads in (1, 2):
        with threadpool_limits(threads):
            np.testing.assert_allclose(plan(x), light_output("squeezenet"), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", CASES)
def test_light_model_random_weights_match_onnxruntime(name):
    model = light_model(name, seed=7)
    x = light_input(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = sess.run(None, {sess.get_inputs()[0].name: x})
    got = _run_graphc(model, x, False, "cpu" if name in CPU_MODELS else "reference")
    assert np.std(expected) > 1e-4  # the random weights make the output depend on them
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_random_weights_are_parameters():
    module = graphc.onnx.load(light_model("squeezenet", seed=1))
    assert len(dict(module.named_parameters())) == 52
