"""How a backend gets a control-flow body scheduled and memory-planned.

Kernels sit below the passes (runtime -> kernels -> ir), so a backend that runs a loop body as a
sub-plan cannot call ``passes.schedule``/``passes.plan_memory`` itself: the front end registers
them here (``graphc.compiler`` does on import), and the backend asks ``plan_body``.
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Graph, GraphcError, MemoryPlan

BodyPlanner = Callable[[Graph], tuple[Graph, MemoryPlan]]
_PLANNER: BodyPlanner | None = None


def set_body_planner(planner: BodyPlanner) -> None:
    """Register the function that schedules a body and plans its memory."""
    global _PLANNER
    _PLANNER = planner


def plan_body(body: Graph) -> tuple[Graph, MemoryPlan]:
    """``body`` scheduled (a new graph) and its memory plan."""
    if _PLANNER is None:
        raise GraphcError("control-flow bodies are planned by graphc's passes: import graphc first")
    return _PLANNER(body)
