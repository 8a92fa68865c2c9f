"""Compile time against graph size: the passes must grow like the graph, not faster.

An MLP of N blocks (Linear, LayerNorm, GELU), for inference and for a training step with Adam,
goes through every stage ``graphc.compile`` / ``compile_train`` run before building kernels
(trace, autodiff, the optimizer's update, each pass of ``optimize``, ``schedule`` and
``plan_memory``); no kernel is built, so numba's compile time is excluded. For each graph the
table gives its node count (the joint graph before optimization), the seconds spent in those
stages, the seconds per node and the per-stage breakdown. Near-linear passes keep the seconds
per node roughly flat from the smallest graph to the largest.

    python benchmarks/compile_scaling.py [--blocks 10 40 160 640] [--json FILE] [--mode train infer]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import graphc.functional as F
import graphc.nn as nn
from graphc import optim, passes
from graphc.ir import Graph
from graphc.passes import autodiff
from graphc.passes.manager import gc_paused
from graphc.tracing import trace
from graphc.training import _keep_outputs

WIDTH, BATCH, CLASSES = 32, 16, 10


class Blocks(nn.Module):
    """``n`` blocks of Linear, LayerNorm and GELU, then a Linear head."""

    def __init__(self, n: int, width: int = WIDTH, classes: int = CLASSES) -> None:
        super().__init__()
        layers = [m for _ in range(n) for m in (nn.Linear(width, width), nn.LayerNorm(width), nn.GELU())]
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(width, classes)

    def forward(self, x: Any) -> Any:
        """The logits of ``x``."""
        return self.head(self.blocks(x))


def _timed(stages: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    result = fn()
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0
    return result


def _back_end(graph: Graph, stages: dict[str, float]) -> None:
    """optimize (per pass, from the PassManager's records), schedule and plan_memory."""
    # As passes.optimize runs it (no change tracking), with each pass's time recorded.
    manager = passes.PassManager(passes.default_pipeline(False), track_changes=False)
    with gc_paused():  # as passes.optimize copies the graph and runs the passes
        optimized = _timed(stages, "copy", graph.copy)
        t0 = time.perf_counter()
        optimized = manager.run(optimized)
        wall = time.perf_counter() - t0
    for record in manager.records:
        stages[record.name] = stages.get(record.name, 0.0) + record.seconds
    # The manager's own work between passes is compile time too.
    stages["manager"] = wall - sum(record.seconds for record in manager.records)
    scheduled = _timed(stages, "schedule", lambda: passes.schedule(optimized))
    _timed(stages, "plan_memory", lambda: passes.plan_memory(scheduled))


def measure(blocks: int, mode: str) -> dict[str, Any]:
    """Compile an MLP of ``blocks`` blocks (``mode`` "train" or "infer"); return the timings."""
    nn.init.manual_seed(0)
    model = Blocks(blocks)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
    y = rng.integers(0, CLASSES, BATCH).astype(np.int64)
    stages: dict[str, float] = {}
    cpu0 = time.process_time()
    if mode == "infer":
        model.eval()
        graph = _timed(stages, "trace", lambda: trace(model, x))
    else:
        model.train()

        def body(inp: Any, target: Any) -> Any:
            return F.cross_entropy(model(inp), target)

        graph = _timed(
            stages,
            "trace",
            lambda: trace(body, x, y, name="train", module=model, input_names=["x", "target"]),
        )
        wrt = [v.name for v in graph.inputs_of_kind("param")]
        graph, grad_index = _timed(stages, "autodiff", lambda: autodiff.grad(graph, loss_index=0, wrt=wrt))
        grads = {name: graph.outputs[i] for name, i in grad_index.items()}
        _timed(stages, "optimizer", lambda: optim.Adam(lr=1e-3).append_update(graph, grads))
        _keep_outputs(graph, [0])
    nodes = len(graph.nodes)
    _back_end(graph, stages)
    cpu = time.process_time() - cpu0
    total = sum(stages.values())
    return {
        "blocks": blocks,
        "mode": mode,
        "nodes": nodes,
        "seconds": total,
        "cpu_seconds": cpu,
        "seconds_per_node": total / nodes,
        "stages": stages,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    """The results as a text table: one row per graph, the slowest stages last."""
    lines = [
        f"{'mode':<6}{'blocks':>7}{'nodes':>8}{'seconds':>10}{'cpu s':>8}{'us/node':>10}  slowest stages (ms)"
    ]
    for r in results:
        top = sorted(r["stages"].items(), key=lambda kv: -kv[1])[:6]
        parts = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in top)
        lines.append(
            f"{r['mode']:<6}{r['blocks']:>7}{r['nodes']:>8}{r['seconds']:>10.2f}{r['cpu_seconds']:>8.2f}"
            f"{r['seconds_per_node'] * 1e6:>10.0f}  {parts}"
        )
    for mode in sorted({r["mode"] for r in results}):
        rates = [r["seconds_per_node"] for r in results if r["mode"] == mode]
        lines.append(f"{mode}: seconds per node, largest / smallest graph = {rates[-1] / rates[0]:.2f}")
    return "\n".join(lines)


def breakdown(results: Sequence[dict[str, Any]]) -> str:
    """Milliseconds per stage (rows, in pipeline order) and graph (columns), one block per mode."""
    lines = []
    for mode in sorted({r["mode"] for r in results}):
        runs = [r for r in results if r["mode"] == mode]
        stages = list(dict.fromkeys(k for r in runs for k in r["stages"]))
        lines.append(f"{mode + ' (ms)':<14}" + "".join(f"{str(r['blocks']) + ' blocks':>14}" for r in runs))
        for name in stages:
            cells = "".join(f"{r['stages'].get(name, 0.0) * 1e3:>14.1f}" for r in runs)
            lines.append(f"{name:<14}{cells}")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[10, 40, 160, 640])
    parser.add_argument("--mode", nargs="+", choices=("infer", "train"), default=["infer", "train"])
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = []
    for mode in args.mode:
        for n in sorted(args.blocks):
            results.append(measure(n, mode))
            print(table(results[-1:]).splitlines()[1], flush=True)
    print()
    print(breakdown(results))
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
