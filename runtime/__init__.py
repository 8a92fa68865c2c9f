"""graphc.runtime: executable plans (host and device), their files, and the backends they call."""

from .plan import BACKENDS, Plan, backend_module, check_inputs
from .planfile import load_plan, save_plan


def build_device_plan(graph, memory_plan=None, resident: bool = False):
    """A DevicePlan running ``graph`` with the CUDA kernels (imported on first use: numba.cuda is heavy)."""
    from .device_plan import build_device_plan as build

    return build(graph, memory_plan, resident)


__all__ = [
    "BACKENDS",
    "Plan",
    "backend_module",
    "build_device_plan",
    "check_inputs",
    "load_plan",
    "save_plan",
]
