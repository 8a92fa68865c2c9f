"""What the run ran on: versions, load, thread pools, and the BLAS kernel NumPy's OpenBLAS picked."""

from __future__ import annotations

import importlib
import os
import platform
from typing import Any

import numpy as np

FORCING_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def versions() -> dict:
    """Versions of Python, NumPy, numba, graphc and the peers (None where not installed)."""
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("numba", "torch", "onnxruntime", "onnx", "graphc"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:
            out[mod] = None
    return out


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: how busy the machine was (None where unknown)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def threading_info() -> dict:
    """What decides how the thread pools behave: numba's layer, OpenMP waiting, the BLAS pools."""
    info: dict[str, Any] = {
        k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")
    }
    try:
        import numba

        info["numba_threading_layer"] = numba.threading_layer()
    except Exception:  # no parallel numba function has run yet
        info["numba_threading_layer"] = None
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return info
    info["pools"] = [
        {k: p.get(k) for k in ("internal_api", "num_threads", "filepath")} for p in threadpool_info()
    ]
    return info


def blas_info() -> dict:
    """NumPy's BLAS: library, version and the kernel (architecture) OpenBLAS picked for this CPU.

    Read with threadpoolctl; without it, ``{"note": ...}`` says so. Also the environment variables
    that force OpenBLAS's choice, where set.
    """
    forced = {k: os.environ[k] for k in FORCING_VARS if k in os.environ}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {
            "note": "threadpoolctl not installed (pip install threadpoolctl): BLAS kernel unknown",
            "forced": forced,
        }
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    mine = [p for p in pools if "numpy" in (p.get("filepath") or "")] or pools
    if not mine:
        return {"note": "no BLAS library loaded by NumPy found", "forced": forced}
    p = mine[0]
    return {
        "library": p.get("internal_api"),
        "version": p.get("version"),
        "architecture": p.get("architecture"),
        "filepath": p.get("filepath"),
        "forced": forced,
    }


def blas_lines(info: dict) -> list[str]:
    """The report's BLAS line, and a warning when the environment forces OpenBLAS's kernel."""
    if "note" in info:
        lines = [f"BLAS: {info['note']}"]
    else:
        lines = [
            f"BLAS: NumPy's {info.get('library')} {info.get('version')}, kernel "
            f"{info.get('architecture') or 'unknown'} (threadpoolctl)"
        ]
    forced = info.get("forced") or {}
    if "OPENBLAS_CORETYPE" in forced:
        setting = " ".join(f"{k}={v}" for k, v in forced.items())
        lines.append(
            f"WARNING: {setting} is set: it forces OpenBLAS's kernel (on an AVX-512 machine, AVX2 "
            "kernels), so NumPy's GEMMs, and graphc's, may be slower than this CPU allows. For a speed "
            "comparison unset it and OPENBLAS_L2_SIZE in that command alone: "
            "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE graphc bench ..."
        )
    return lines
