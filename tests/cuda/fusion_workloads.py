"""The real workloads' fused nodes, as fusion makes them, for the CUDA backend's tests.

``WORKLOADS`` names every example (examples/*.py with ``model()`` and ``example_inputs()``) in
inference, examples/mlp.py and examples/cnn.py as training steps (cross-entropy, SGD with momentum
and Adam), and every benchmark workload (benchmarks/*.py with ``model()``: a training step where
the file names a LOSS and an OPTIMIZER). ``workload_graph(name)`` traces and optimizes it at its
own sizes: generating CUDA source needs no GPU and no numba, so the kernel-count checks look at
the real shapes. Only building the graphs runs here (a few seconds in all).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from graphc import functional as F
from graphc import optim, passes
from graphc.ir import Graph, Node
from graphc.modelfile import import_file
from graphc.tracing import trace

ROOT = Path(__file__).resolve().parents[2]
TRAINED = ("mlp", "cnn")
OPTIMIZERS = {"SGD momentum": lambda: optim.SGD(lr=0.1, momentum=0.9), "Adam": lambda: optim.Adam(lr=1e-3)}


def _defines(path: Path, *names: str) -> bool:
    text = path.read_text()
    return all(f"\ndef {n}(" in text for n in names)


def _workloads() -> list[str]:
    out = []
    for path in sorted((ROOT / "examples").glob("*.py")):
        if _defines(path, "model", "example_inputs"):
            out.append(f"examples/{path.name}")
            if path.stem in TRAINED:
                out += [f"examples/{path.name} train {opt}" for opt in OPTIMIZERS]
    benches = sorted((ROOT / "benchmarks").glob("*.py"))
    out += [f"benchmarks/{p.name}" for p in benches if _defines(p, "model")]
    return out


WORKLOADS = _workloads()


def _labels(module, batch: int) -> np.ndarray:
    if hasattr(module, "example_labels"):
        return module.example_labels()
    return (np.arange(batch) % 10).astype(np.int64)


@functools.cache
def workload_graph(name: str) -> Graph:
    """The optimized, scheduled graph of a workload of ``WORKLOADS`` (traced at its own sizes)."""
    file, _, train = name.partition(" train ")
    module = import_file(ROOT / file)
    inputs = module.example_inputs()
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    if train or hasattr(module, "LOSS"):
        from graphc.training import compile_train

        if train:
            loss, optimizer = F.cross_entropy, OPTIMIZERS[train]()
        else:
            loss, (kind, kwargs) = getattr(F, module.LOSS), module.OPTIMIZER
            optimizer = getattr(optim, kind)(**kwargs)
        labels = _labels(module, inputs[0].shape[0])
        step = compile_train(module.model(), loss, optimizer, *inputs, labels, backend="reference")
        return step.plan.graph
    return passes.schedule(passes.optimize(trace(module.model(), *inputs)))


def fused_nodes(graph: Graph) -> list[Node]:
    """The graph's fused nodes, in order."""
    return [n for n in graph.nodes if n.op == "fused"]


def launches(source: str) -> int:
    """How many kernel launches a generated module's ``launch`` function makes."""
    host = source.split("\ndef launch(", 1)[1]
    return len(re.findall(r"^\s+\w+\[", host, re.MULTILINE))


def shape_free(source: str) -> str:
    """A generated source with every number replaced: kernels equal under it differ only in sizes,
    shapes and strides baked in as constants (type and PTX checks need one of each)."""
    return re.sub(r"\d+", "N", source)
