"""Plan files: one zip holding plan.json (graph, memory plan, kernel sources) and arrays.npz.

Nothing in a plan file is executed: kernels are regenerated from the graph by graphc's own code
generators, the stored sources are for reading only, and arrays are read header first (a graphc
dtype and the input's shape, never a pickle). A plan file is untrusted data, so loading bounds
what it may cost (``runtime/archive.py`` reads every member): plan.json at most
``MAX_PLAN_JSON_BYTES`` (64 MiB), arrays.npz at most ``$GRAPHC_MAX_ARRAYS_BYTES`` (16 GiB by
default), no member inflating more than ``archive.MAX_RATIO`` times, the arena at most
``$GRAPHC_MAX_ARENA_BYTES`` (16 GiB by default, see ir/memory.py) and no larger than its buffers
side by side; encrypted members, compression other than stored/deflate, and every damaged zip,
zlib or JSON stream are a GraphcError saying the file is corrupt.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable

import numpy as np

from graphc.ir import Graph, GraphcError, MemoryPlan, graph_from_json, graph_to_json, verify

from . import archive
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
    # ml_dtypes' types (bf16, float8, int4, ...) as raw bytes: NumPy writes float8_e5m2 as "<f1", which
    # it cannot read back (archive.read_npy reads the raw form as the dtype the graph declares)
    params = {name: np.asarray(a) for name, a in plan.parameters.items()}
    raw = {
        n: a.view(f"V{a.itemsize}") if a.dtype.type.__module__.startswith("ml_dtypes") else a
        for n, a in params.items()
    }
    np.savez(arrays, **raw)
    tmp = f"{path}.tmp{os.getpid()}"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("plan.json", json.dumps(meta, indent=1))
        zf.writestr("arrays.npz", arrays.getvalue())
    os.replace(tmp, path)


def load_plan(
    path: str,
    backend: str | None = None,
    check_memory_plan: Callable[[Graph, MemoryPlan], None] | None = None,
):
    """Read a plan file written by ``Plan.save``, check every part of it, and rebuild its kernels.

    The file is data only: each zip member is read with a size bound (``MAX_PLAN_JSON_BYTES``,
    ``max_arrays_bytes()``) and a compression-ratio bound, every graph and memory-plan field is
    type-checked, and every array must have its input's declared dtype and shape. Anything wrong
    is a GraphcError naming it. ``check_memory_plan`` (``passes.check_memory_plan``, passed in by
    ``graphc.load_plan``: the runtime does not import the passes) then vets the memory plan
    before any arena is allocated; without it only the buffers' bounds are checked.
    """
    meta, blob = _read_members(path)
    if meta.get("format") != FORMAT:
        raise GraphcError(f"{path}: not a graphc plan file (format {archive.short(meta.get('format'))})")
    if meta.get("version") != VERSION or isinstance(meta.get("version"), bool):
        raise GraphcError(
            f"{path}: plan format version {archive.short(meta.get('version'))} is not supported"
        )
    try:
        graph = graph_from_json(meta.get("graph"))
        memory_plan = MemoryPlan.from_json(meta.get("memory_plan"))
    except GraphcError as err:
        raise GraphcError(f"{path}: {err}") from None
    graph.initializers.update(_read_arrays(path, blob, graph))
    verify(graph)
    if check_memory_plan is not None:
        try:
            check_memory_plan(graph, memory_plan)
        except GraphcError as err:
            raise GraphcError(f"{path}: inconsistent memory plan ({err})") from None
    stored = meta.get("backend", "cpu")
    if not isinstance(stored, str):
        raise GraphcError(f"{path}: backend must be a string, got {archive.short(stored)}")
    backend = backend or stored
    if backend == "cuda":
        from .device_plan import build_device_plan

        return build_device_plan(graph, memory_plan)
    return Plan(graph, memory_plan, backend)


# Bounds on what a plan file may make the loader read.
MAX_PLAN_JSON_BYTES = 64 * 2**20
DEFAULT_MAX_ARRAYS_BYTES = 16 * 2**30
MAX_ARRAYS = 100_000
_MEMBERS = ("plan.json", "arrays.npz")


def max_arrays_bytes() -> int:
    """The most bytes arrays.npz may hold: ``$GRAPHC_MAX_ARRAYS_BYTES`` if set (a positive int),
    else DEFAULT_MAX_ARRAYS_BYTES (16 GiB)."""
    text = os.environ.get("GRAPHC_MAX_ARRAYS_BYTES")
    if not text:
        return DEFAULT_MAX_ARRAYS_BYTES
    if not text.isdigit() or int(text) <= 0:
        raise GraphcError(f"GRAPHC_MAX_ARRAYS_BYTES must be a positive number of bytes, got {text[:40]!r}")
    return int(text)


def _read_members(path: str) -> tuple[dict, bytes]:
    """plan.json (parsed, an object) and the bytes of arrays.npz."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist()]
            if "plan.json" not in names or "arrays.npz" not in names:
                raise GraphcError(f"{path}: not a graphc plan file (no plan.json/arrays.npz inside)")
            if sorted(names) != sorted(_MEMBERS):
                raise GraphcError(
                    f"{path}: a plan file holds plan.json and arrays.npz only, got {names[:10]}"
                )
            by_name = archive.members(zf, path, len(_MEMBERS), MAX_PLAN_JSON_BYTES + max_arrays_bytes())
            text = archive.read_member(zf, by_name["plan.json"], MAX_PLAN_JSON_BYTES, f"{path}: plan.json")
            blob = archive.read_member(zf, by_name["arrays.npz"], max_arrays_bytes(), f"{path}: arrays.npz")
    except FileNotFoundError:
        raise GraphcError(f"{path}: no such plan file") from None
    except IsADirectoryError:
        raise GraphcError(f"{path}: is a folder, not a plan file") from None
    except archive.CORRUPT as err:
        raise GraphcError(
            f"{path}: not a graphc plan file, or truncated/corrupted ({archive.short(str(err))})"
        ) from None
    meta = archive.read_json(text, f"{path}: plan.json")
    if not isinstance(meta, dict):
        raise GraphcError(f"{path}: not a graphc plan file (plan.json holds a {type(meta).__name__})")
    return meta, blob


def _read_arrays(path: str, blob: bytes, graph) -> dict[str, np.ndarray]:
    """The param/const/state arrays of ``graph`` from arrays.npz, each exactly its input's type.

    Headers are read first and compared with the graph, so no array of another dtype (objects
    included: nothing is unpickled) or shape is ever allocated.
    """
    wanted = {f"{v.name}.npy": v for v in graph.inputs if graph.kinds[v.name] != "data"}
    arrays = {}
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            by_name = archive.members(zf, f"{path}: arrays.npz", MAX_ARRAYS, max_arrays_bytes())
            unexpected = [name for name in by_name if name not in wanted]
            if unexpected:
                raise GraphcError(
                    f"{path}: arrays.npz holds an unexpected member {archive.short(unexpected[0])}"
                )
            for member, v in wanted.items():
                if member not in by_name:
                    raise GraphcError(f"{path}: arrays.npz lacks the value of %{v.name}")
                what = f"{path}: arrays.npz member {archive.short(member)}"
                data = archive.read_member(zf, by_name[member], max_arrays_bytes(), what)
                arrays[v.name] = archive.read_npy(data, what, v.type.np_dtype, v.type.shape)
    except GraphcError:
        raise
    except archive.CORRUPT as err:
        raise GraphcError(f"{path}: corrupted arrays.npz ({archive.short(str(err))})") from None
    return arrays
