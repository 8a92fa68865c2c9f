"""graphc.onnx.export and `graphc export`: every example and benchmark model, run by ONNX Runtime."""

import glob
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402
from graphc import functional as F  # noqa: E402
from graphc import nn  # noqa: E402
from graphc.cli import main as cli_main  # noqa: E402
from graphc.ir import GraphcError  # noqa: E402
from graphc.modelfile import load_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model_files():
    files = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))) + sorted(
        glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
    )
    out = []
    for path in files:
        text = open(path).read()
        if "def model(" in text and "def example_inputs(" in text:
            out.append(os.path.relpath(path, ROOT))
    return out


def ort_outputs(proto, inputs):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert len(sess.get_inputs()) == len(inputs)
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), inputs)})


def graphc_outputs(model, inputs):
    # The exporter's subject is the graph: its NumPy reference kernels run it without compiling the
    # models' kernels (the CPU kernels are checked against the reference kernels in their own tests).
    out = graphc.compile(model, *inputs, backend="reference")(*inputs)
    return list(out) if isinstance(out, tuple) else [out]


MODEL_FILES = _model_files()


def test_every_example_and_benchmark_is_listed():
    names = {os.path.basename(p) for p in MODEL_FILES}
    assert {"mlp.py", "cnn.py", "transformer.py", "transformer_infer.py", "cnn_train.py"} <= names


@pytest.mark.parametrize("path", MODEL_FILES)
def test_export_matches_graphc(path):
    model, inputs = load_model(os.path.join(ROOT, path))
    proto = graphc.onnx.export(model, *inputs)  # onnx.checker runs inside export
    onnx.checker.check_model(proto)
    expected = graphc_outputs(model, inputs)
    got = ort_outputs(proto, inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2, ceil_mode=True)
        h = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False)
        return F.log_softmax(self.fc(h.flatten(1)), -1), h.argmax(1)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_export_opsets_and_round_trip(rng, tmp_path, opset):
    model = _Net().eval()
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    path = tmp_path / "net.onnx"
    proto = graphc.onnx.export(model, x, path=path, opset=opset)
    assert proto.opset_import[0].version == opset
    expected = graphc_outputs(model, [x])
    for g, e in zip(ort_outputs(onnx.load(path), [x]), expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    again = graphc.onnx.load(path)  # graphc's own export imports back
    for g, e in zip(graphc_outputs(again, [x]), expected):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_export_of_training_only_ops_is_an_error(rng):
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))  # training mode: random dropout
    with pytest.raises(GraphcError, match="rng_uniform"):
        graphc.onnx.export(model, rng.standard_normal((2, 4)).astype(np.float32))


def test_export_bad_opset(rng):
    with pytest.raises(GraphcError, match="opset must be"):
        graphc.onnx.export(nn.Linear(2, 2), np.ones((1, 2), np.float32), opset=7)


def test_cli_export_then_compile_dump_run(tmp_path, capsys):
    onnx_path = str(tmp_path / "mlp.onnx")
    assert cli_main(["export", os.path.join(ROOT, "examples", "mlp.py"), "-o", onnx_path]) == 0
    assert "wrote" in capsys.readouterr().out
    plan_path = str(tmp_path / "mlp.gcp")
    assert cli_main(["compile", onnx_path, "-o", plan_path]) == 0
    assert cli_main(["dump", onnx_path, "--stage", "traced"]) == 0
    assert "matmul" in capsys.readouterr().out
    _, inputs = load_model(onnx_path)
    (expected,) = ort_outputs(onnx.load(onnx_path), inputs)
    np.testing.assert_allclose(graphc.load_plan(plan_path)(*inputs), expected, rtol=1e-4, atol=1e-5)


def test_cli_export_error_is_reported(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "missing.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_model_file_loader_takes_onnx(tmp_path):
    from graphc.modelfile import load_model_file

    path = tmp_path / "lin.onnx"
    graphc.onnx.export(nn.Linear(3, 2), np.ones((4, 3), np.float32), path=path)
    w = load_model_file(str(path))
    assert w.name == "lin" and w.kind == "infer" and "ONNX" in w.what
    (x,) = w.inputs()
    assert x.shape == (4, 3) and x.dtype == np.float32
    assert isinstance(w.model(), graphc.onnx.OnnxModule)


FUSED_MODELS = ["examples/transformer.py", "examples/cnn.py", "benchmarks/fusion_chain_infer.py"]


@pytest.mark.parametrize("path", FUSED_MODELS)
def test_optimized_graph_with_fused_nodes_exports(path):
    from graphc import passes

    model, inputs = load_model(os.path.join(ROOT, path))
    graph = passes.optimize(graphc.trace(model, *inputs), freeze=True)
    assert graph.op_counts().get("fused", 0) > 0
    proto = graphc.onnx.to_onnx(graph)
    assert not any(n.op_type.lower() == "fused" for n in proto.graph.node)
    (got,) = ort_outputs(proto, inputs)
    np.testing.assert_allclose(got, graphc_outputs(model, inputs)[0], rtol=1e-4, atol=1e-5)
