"""graphc.passes: graph-to-graph rewrites, the PassManager, scheduling and memory planning.

Default pipeline (``default_pipeline(freeze)``), run by ``optimize``:

    [freeze]                    params -> consts (only with freeze=True)
    constant_fold               evaluate what is known at compile time
    simplify                    algebraic and movement rules, reshape sinking
    [fold_matmul_affine]        per-channel scale/shift into a constant matmul (freeze only)
    [constant_fold]             fold the scaled weights (freeze only)
    cse                         merge equal nodes and equal constants
    dce                         drop what no output needs
    fusion                      elementwise / reduction / matmul-epilogue groups -> fused nodes
    attention                   score matmul, row softmax, value matmul -> one attention node
    dce                         drop consts copied into fused bodies

Before ``optimize``, ``graphc.compiler.compile_graph`` runs ``legalize_half.legalize_half`` for
backends that cannot compute in 16-bit floats (every f16/bf16 op becomes cast to f32, the op,
one cast back). Scheduling and memory planning come after ``optimize`` and are called separately:
``schedule(graph)`` then ``plan_memory(graph)`` (checked by ``check_memory_plan``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from graphc.ir import Graph, GraphcError

from .attention import attention
from .cleanup import cse, dce
from .fold import FOLD_MAX_ELEMENTS, constant_fold, fold_matmul_affine, freeze
from .fold import freeze as _freeze_pass
from .fusion import classify, fusion, kernel_count
from .manager import DumpTarget, PassManager, PassRecord, gc_paused
from .memory_check import check_memory_plan
from .memory_plan import peak_bytes, plan_memory
from .schedule import schedule
from .simplify import simplify
from .util import configured, graph_pass

PASSES: dict[str, Callable[[Graph], Graph]] = {
    p.name: p  # type: ignore[attr-defined]
    for p in (freeze, constant_fold, simplify, fold_matmul_affine, cse, dce, fusion, attention, schedule)
}


def default_pipeline(freeze: bool = False) -> list[Callable[[Graph], Graph]]:
    """The passes ``optimize`` runs by default (see this module's docstring)."""
    frozen = [_freeze_pass] if freeze else []
    affine = (
        [
            fold_matmul_affine,
            configured(constant_fold, name="constant_fold_2"),
            configured(simplify, name="simplify_2"),
        ]
        if freeze
        else []
    )
    return [
        *frozen,
        constant_fold,
        simplify,
        *affine,
        cse,
        dce,
        fusion,
        attention,
        configured(dce, name="dce_2"),
    ]


def _resolve(passes: Sequence[Callable[[Graph], Graph] | str]) -> list[Callable[[Graph], Graph]]:
    out = []
    for p in passes:
        if isinstance(p, str):
            if p not in PASSES:
                raise GraphcError(f"unknown pass {p!r}; known passes: {', '.join(sorted(PASSES))}")
            out.append(PASSES[p])
        else:
            out.append(p)
    return out


def optimize(
    graph: Graph,
    passes: Sequence[Callable[[Graph], Graph] | str] | None = None,
    disable: Iterable[str] = (),
    freeze: bool = False,
    dump: DumpTarget = None,
    check: bool | None = None,
) -> Graph:
    """Run ``passes`` (default: ``default_pipeline(freeze)``) over a copy of ``graph`` and return it.

    ``disable`` names passes to skip, ``dump`` is a directory or ``callback(name, graph)``
    called after each pass, ``check`` verifies the graph after every pass (default: the
    ``GRAPHC_CHECK_PASSES`` environment variable).
    """
    pipeline = default_pipeline(freeze) if passes is None else _resolve(passes)
    if passes is not None and freeze and _freeze_pass not in pipeline:
        pipeline = [_freeze_pass, *pipeline]
    if check is None:
        check = os.environ.get("GRAPHC_CHECK_PASSES") == "1"
    # Nobody reads the records here, so no fingerprints for their "changed" flags; the copy, as
    # many new objects as the graph has, runs with the passes' garbage collector held off too.
    manager = PassManager(pipeline, disable=disable, dump=dump, check=check, track_changes=False)
    with gc_paused():
        return manager.run(graph.copy())


__all__ = [
    "FOLD_MAX_ELEMENTS",
    "PASSES",
    "PassManager",
    "PassRecord",
    "attention",
    "check_memory_plan",
    "classify",
    "configured",
    "constant_fold",
    "cse",
    "dce",
    "default_pipeline",
    "fold_matmul_affine",
    "freeze",
    "fusion",
    "graph_pass",
    "kernel_count",
    "optimize",
    "peak_bytes",
    "plan_memory",
    "schedule",
    "simplify",
]
