"""Plan files: one zip holding plan.json (graph, memory plan, kernel sources) and arrays.npz.

Nothing in a plan file is executed: kernels are regenerated from the graph by graphc's own code
generators, the stored sources are for reading only, and arrays load with allow_pickle=False.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np

from graphc.ir import GraphcError, MemoryPlan, graph_from_json, graph_to_json, verify

from .plan import Plan, backend_module

FORMAT = "graphc-plan"
VERSION = 1


def _kernel_sources(plan) -> dict[str, str]:
    kernels = backend_module(plan.backend)
    source_of = getattr(kernels, "kernel_source", None)
    if source_of is None:
        return {}
    sources = {}
    hints = getattr(plan, "in_place", {})
    for node in plan.graph.nodes:
        hint = hints.get(node.outputs[0].name)  # only the CPU backend takes (and gives) hints
        try:
            text = source_of(node, hint) if hint else source_of(node)
        except GraphcError:
            continue
        if text:
            sources[node.outputs[0].name] = text
    return sources


def save_plan(plan, path: str) -> None:
    """Write a Plan or DevicePlan to ``path`` atomically (a temporary file, then a rename)."""
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "backend": plan.backend,
        "graph": graph_to_json(plan.graph),
        "memory_plan": plan.memory_plan.to_json(),
        "kernel_sources": _kernel_sources(plan),
    }
    arrays = io.BytesIO()
    np.savez(arrays, **{name: np.asarray(a) for name, a in plan.parameters.items()})
    tmp = f"{path}.tmp{os.getpid()}"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("plan.json", json.dumps(meta, indent=1))
        zf.writestr("arrays.npz", arrays.getvalue())
    os.replace(tmp, path)


def load_plan(path: str, backend: str | None = None):
    """Read a plan file written by ``Plan.save`` and rebuild its kernels."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "plan.json" not in names or "arrays.npz" not in names:
                raise GraphcError(f"{path}: not a graphc plan file (no plan.json/arrays.npz inside)")
            meta = json.loads(zf.read("plan.json"))
            blob = zf.read("arrays.npz")
    except FileNotFoundError:
        raise GraphcError(f"{path}: no such plan file") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        raise GraphcError(f"{path}: not a graphc plan file, or truncated/corrupted ({err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GraphcError(f"{path}: corrupted plan.json ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GraphcError(f"{path}: not a graphc plan file (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise GraphcError(f"{path}: plan format version {meta.get('version')} is not supported")
    graph = graph_from_json(meta["graph"])
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            # np.array, not np.ascontiguousarray: that makes 0-d arrays (an optimizer's step
            # count, dropout's offset) 1-d
            arrays = {name: np.array(npz[name], order="C") for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise GraphcError(f"{path}: corrupted arrays.npz ({err})") from None
    for v in graph.inputs:
        if graph.kinds[v.name] == "data":
            continue
        if v.name not in arrays:
            raise GraphcError(f"{path}: arrays.npz lacks the value of %{v.name}")
        graph.initializers[v.name] = arrays[v.name]
    try:
        memory_plan = MemoryPlan.from_json(meta["memory_plan"])
    except (KeyError, TypeError) as err:
        raise GraphcError(f"{path}: corrupted memory plan ({err})") from None
    verify(graph)
    backend = backend or meta.get("backend", "cpu")
    if backend == "cuda":
        from .device_plan import build_device_plan

        return build_device_plan(graph, memory_plan)
    return Plan(graph, memory_plan, backend)
