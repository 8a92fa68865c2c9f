"""graphc.compile: trace → optimize → schedule → plan memory → runtime.Plan."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from graphc import passes
from graphc.ir import Graph, GraphcError
from graphc.ir.types import HALF_DTYPES
from graphc.kernels.body_planner import set_body_planner
from graphc.passes.legalize_half import has_half, legalize_half
from graphc.runtime import Plan, build_device_plan
from graphc.runtime import load_plan as _read_plan

from .autograph import converted
from .structure import wrap
from .tracing import trace


def _plan_body(body: Graph):
    scheduled = passes.schedule(body)
    # No in-place outputs: a loop body's inputs and outputs are rebound to each step's arrays
    # (xs[t], ys[t], the carry buffers), and one written over in place would be copied instead.
    return scheduled, passes.plan_memory(scheduled, in_place=False)


set_body_planner(
    _plan_body
)  # control-flow kernels plan their bodies with the passes (kernels/body_planner.py)

DEVICES = ("cpu", "cuda")


def _backend_for(device: str, backend: str | None) -> str:
    if device not in DEVICES:
        raise GraphcError(f"unknown device {device!r}; choose one of {DEVICES}")
    if device == "cuda":
        return "cuda"
    return backend or "cpu"


def compile_graph(
    graph: Graph,
    device: str = "cpu",
    freeze: bool = False,
    passes_: Sequence[Callable] | None = None,
    disable: Sequence[str] = (),
    backend: str | None = None,
):
    """Optimize, schedule and memory-plan a traced graph, then build its executable plan."""
    backend = _backend_for(device, backend)
    if backend == "cuda" and has_half(graph):
        raise GraphcError(
            "the CUDA backend has no float16 (f16, bf16) or low-bit (f8*, f4e2m1, i4, u4, i2, u2) "
            "kernels yet; compile for device='cpu'"
        )
    # numba has no float16: f16/bf16 ops compute in f32 between casts (NumPy computes on f16 itself)
    graph = legalize_half(graph, HALF_DTYPES if backend != "reference" else ("bf16",))
    optimized = passes.optimize(graph, passes=passes_, disable=disable, freeze=freeze)
    scheduled = passes.schedule(optimized)
    memory_plan = passes.plan_memory(scheduled)
    if backend == "cuda":
        return build_device_plan(scheduled, memory_plan)
    return Plan(scheduled, memory_plan, backend)


def compile(
    model: Callable,
    *example_arrays: np.ndarray,
    device: str = "cpu",
    freeze: bool = False,
    passes: Sequence[Callable] | None = None,
    disable: Sequence[str] = (),
    backend: str | None = None,
):
    """Compile a Module or a function of tensors for the example arrays' shapes and dtypes.

    ``freeze=True`` treats parameters as constants (inference: BatchNorm folds into the conv);
    ``passes`` replaces the default pipeline, ``disable`` switches passes off by name, and
    ``backend="reference"`` runs the NumPy oracle kernels instead of numba's. The plan returns
    the outputs in the structure the model returned (see ``graphc.structure``; a plan file keeps
    the flat outputs only).
    """
    with converted(model) as target:  # if/while on traced Tensors -> cond/while_loop (graphc.autograph)
        graph = trace(target, *example_arrays)
    plan = compile_graph(graph, device, freeze, passes, disable, backend)
    # The plan returns what forward returned: tuples, lists, dicts and None kept in place.
    return wrap(plan, graph.output_structure)


def load_plan(path: str, backend: str | None = None):
    """Read a plan file written by ``plan.save``: every part is checked (see ``runtime.load_plan``),
    and its memory plan by ``passes.check_memory_plan`` before any arena is allocated, since a
    plan whose live buffers overlap (a damaged or edited file) would give wrong numbers."""
    return _read_plan(path, backend, check_memory_plan=passes.check_memory_plan)
