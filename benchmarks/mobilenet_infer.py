"""mobilenet_infer: MobileNetV2 (torchvision's architecture, width 1.0) on 1x3x224x224, eval, frozen.

The model is written once, by hand, as a function of the library (``build(nn)``), following
torchvision/models/mobilenetv2.py (``_make_divisible``, ``Conv2dNormActivation`` as ConvBNReLU,
``InvertedResidual`` with depthwise 3x3 convolutions, ReLU6, dropout before the classifier), so
``build(graphc.nn)`` and ``build(torch.nn)`` are the same network with the same state_dict keys
(torchvision itself is not a dependency). Inference is frozen: BatchNorm folds into the convs.
"""

import numpy as np

from graphc import nn

WHAT = "MobileNetV2 1.0 (torchvision's blocks: depthwise convs, ReLU6, BatchNorm folded), 224x224"
BATCH = 1
FREEZE = True
TARGETS = [("time / torch eager", "<= 1")]

# t (expansion), c (channels), n (repeats), s (first stride): torchvision's settings
SETTINGS = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def build(nn, num_classes: int = 1000, width_mult: float = 1.0):
    """MobileNetV2 with the library ``nn`` (graphc.nn or torch.nn)."""

    class ConvBNReLU(nn.Sequential):
        def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, groups=1):
            padding = (kernel_size - 1) // 2
            super().__init__(
                nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, groups=groups, bias=False),
                nn.BatchNorm2d(out_planes),
                nn.ReLU6(inplace=True),
            )

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride, expand_ratio):
            super().__init__()
            hidden_dim = int(round(inp * expand_ratio))
            self.use_res_connect = stride == 1 and inp == oup
            layers = []
            if expand_ratio != 1:
                layers.append(ConvBNReLU(inp, hidden_dim, kernel_size=1))
            layers.extend(
                [
                    ConvBNReLU(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
                    nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                    nn.BatchNorm2d(oup),
                ]
            )
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            if self.use_res_connect:
                return x + self.conv(x)
            return self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            input_channel = _make_divisible(32 * width_mult, 8)
            self.last_channel = _make_divisible(1280 * max(1.0, width_mult), 8)
            features = [ConvBNReLU(3, input_channel, stride=2)]
            for t, c, n, s in SETTINGS:
                output_channel = _make_divisible(c * width_mult, 8)
                for i in range(n):
                    features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                    input_channel = output_channel
            features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))
            # He init over fan_in, so that with untrained (identity) BatchNorm statistics the
            # activations keep their scale through the 52 layers (torchvision's fan_out init, or
            # the default, makes them vanish, and every engine would agree on ~0)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
            x = x.flatten(1)
            return self.classifier(x)

    return MobileNetV2()


def model():
    """The graphc MobileNetV2, eval mode."""
    return build(nn).eval()


def torch_model():
    """The same network in PyTorch, eval mode."""
    import torch

    return build(torch.nn).eval()


def example_inputs():
    """An image batch [1, 3, 224, 224] float32, standard normal."""
    return (np.random.default_rng(0).standard_normal((BATCH, 3, 224, 224), dtype=np.float32),)
