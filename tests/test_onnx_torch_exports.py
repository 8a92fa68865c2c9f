"""Import what PyTorch's exporter writes for transformer and CNN blocks at opsets 14 to 20.

(14, not 13: PyTorch exports HardSwish from opset 14.)
"""

import io
import math
import warnings

import numpy as np
import pytest

pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import graphc  # noqa: E402
import graphc.onnx  # noqa: E402


class Block(torch.nn.Module):
    """Pre-norm attention block written with matmuls (shape arithmetic from x.shape), GELU MLP."""

    def __init__(self, d=16, heads=2):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.fc1, self.fc2 = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        mask = torch.ones(t, t).tril() == 0
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        h = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.out(h)
        x = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))
        return x[:, -1].clamp(-3, 3)


class Cnn(torch.nn.Module):
    """Grouped and depthwise convs, batch norm, pools, upsampling, a classifier."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c3 = torch.nn.Conv2d(8, 12, 1, groups=4)
        self.up = torch.nn.ConvTranspose2d(12, 6, 2, stride=2)
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x):
        h = torch.relu(self.bn(self.c1(x)))
        h = torch.nn.functional.hardswish(self.c3(self.c2(h)))
        h = torch.nn.functional.max_pool2d(h, 3, stride=2, padding=1)
        h = torch.nn.functional.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
        h = torch.nn.functional.avg_pool2d(self.up(h), 2)
        return torch.log_softmax(self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1)), -1)


def _export(model, x, opset):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), buf, opset_version=opset, dynamo=False)
        except Exception as err:  # the TorchScript exporter is gone in this torch
            pytest.skip(f"torch.onnx.export(dynamo=False) failed: {type(err).__name__}")
    return buf.getvalue()


@pytest.mark.parametrize("opset", [14, 17, 20])
@pytest.mark.parametrize("make,shape", [(Block, (2, 6, 16)), (Cnn, (2, 3, 16, 16))])
def test_torch_export_imports(tmp_path, make, shape, opset):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = model(x).numpy()
    path = tmp_path / "m.onnx"
    path.write_bytes(_export(model, x, opset))
    module = graphc.onnx.load(path)
    got = graphc.compile(module, x.numpy())(x.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
