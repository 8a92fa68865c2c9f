"""The main job on a built-in example: trace examples/mlp.py, compile it, run it, train it a little."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mlp import example_inputs, model  # noqa: E402

import graphc  # noqa: E402
from graphc import functional as F  # noqa: E402


def main() -> None:
    """Print the traced and optimized IR of the MLP, its output, and a few training losses."""
    net = model()
    (x,) = example_inputs()
    print("=== traced IR of examples/mlp.py")
    print(graphc.trace(net, x))
    plan = graphc.compile(net, x)
    print("\n=== optimized, fused and scheduled IR")
    print(plan.graph)
    print(plan.memory_report())
    y = plan(x)
    print(f"\n=== output: {y.dtype}{list(y.shape)}, first rows")
    print(np.array2string(y[:3], precision=4, suppress_small=True))

    labels = np.random.default_rng(1).integers(0, 10, size=x.shape[0])
    step = graphc.compile_train(net, F.cross_entropy, graphc.optim.SGD(lr=0.1), x, labels)
    losses = [step(x, labels) for _ in range(5)]
    print("\n=== 5 SGD steps on one batch, loss:", " ".join(f"{float(v):.4f}" for v in losses))


if __name__ == "__main__":
    main()
