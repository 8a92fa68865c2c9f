"""The light model-zoo networks that the onnx wheel ships (onnx/backend/test/data/light/).

Each ``light_<name>.onnx`` makes its weights with ConstantOfShape nodes (every weight is 0.02) and
comes with its output for ``Runner.generate_dummy_data``'s input (arange / n). ``light_model(name,
seed=...)`` swaps those weights for seeded random initializers (He-scaled for conv and dense
weights, positive variances for batch norm), so outputs depend on the weights.
"""

from __future__ import annotations

import math
import os

import numpy as np

from graphc.ir import GraphcError

LIGHT_MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def light_dir() -> str:
    """The folder of the light models in the installed onnx package."""
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def _path(name: str, suffix: str) -> str:
    if name not in LIGHT_MODELS:
        raise GraphcError(f"unknown light model {name!r}; choose one of {list(LIGHT_MODELS)}")
    path = os.path.join(light_dir(), f"light_{name}{suffix}")
    if not os.path.isfile(path):
        raise GraphcError(f"{path} is missing: this onnx wheel does not ship the light models")
    return path


def _random_weight(rng: np.random.Generator, shape: tuple[int, ...], op: str, slot: int) -> np.ndarray:
    if op in ("Conv", "Gemm") and slot == 1:
        fan_in = math.prod(shape[1:]) if op == "Conv" else shape[-1]
        return rng.standard_normal(shape) * math.sqrt(2.0 / max(fan_in, 1))
    if op == "BatchNormalization" and slot in (1, 4) or op == "Mul":
        return rng.uniform(0.5, 1.5, shape)
    return rng.standard_normal(shape) * 0.1


def light_model(name: str, seed: int | None = None):
    """The light model as an onnx.ModelProto; with ``seed``, its weights are seeded random values."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(_path(name, ".onnx"))
    if seed is None:
        return model
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    users: dict[str, tuple[str, int]] = {}
    for node in model.graph.node:
        for i, name_in in enumerate(node.input):
            users.setdefault(name_in, (node.op_type, i))
    keep, dropped = [], set()
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            dropped.add(node.input[0])
            shape = tuple(int(d) for d in inits[node.input[0]])
            op, slot = users.get(node.output[0], ("", 0))
            value = _random_weight(rng, shape, op, slot).astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    still_used = {i for node in keep for i in node.input}
    kept = [t for t in model.graph.initializer if t.name not in dropped or t.name in still_used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    kept_inputs = [v for v in model.graph.input if v.name not in dropped or v.name in still_used]
    del model.graph.input[:]
    model.graph.input.extend(kept_inputs)
    return model


def light_input(model) -> np.ndarray:
    """onnx's runner input for a light model: arange(n) / n in the input's shape (batch 1)."""
    from onnx.backend.test.runner import Runner

    inits = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    vi = next(v for v in model.graph.input if v.name not in inits)
    return Runner.generate_dummy_data(vi)


def light_output(name: str) -> np.ndarray:
    """The shipped reference output of a light model for ``light_input``."""
    import onnx
    from onnx import numpy_helper

    return numpy_helper.to_array(onnx.load_tensor(_path(name, "_output_0.pb")))
