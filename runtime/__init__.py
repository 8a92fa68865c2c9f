"""graphc.runtime: executable plans, their files, and the backends they call."""

from .plan import BACKENDS, Plan, backend_module
from .planfile import load_plan, save_plan

__all__ = ["BACKENDS", "Plan", "backend_module", "load_plan", "save_plan"]
