"""Run by test_device_check.py in a subprocess WITHOUT the simulator: type-check every generated kernel
for the real CUDA target and, where NVVM/NVRTC are installed, compile it to PTX. Prints JSON."""

from __future__ import annotations

import json
import os
import sys

from cuda_cases import all_cases

from graphc.kernels import cuda as kc
from graphc.kernels.cuda import check
from graphc.kernels.cuda.codegen import Unsupported


def main() -> None:
    """Check each case's kernel (and fused fallbacks' body kernels); report failures as JSON."""
    assert not kc.simulator(), "run without NUMBA_ENABLE_CUDASIM"
    want_ptx = check.ptx_unavailable() is None
    report = {"checked": 0, "ptx": 0, "failures": [], "ptx_unavailable": check.ptx_unavailable()}
    for case in all_cases():
        try:
            sources = _sources(case.node)
        except Unsupported:
            if case.raises:  # a node the backend must refuse (a CPU-only op) has no kernel to check
                continue
            raise
        for ks in sources:
            try:
                check.typecheck(ks)
                report["checked"] += 1
                if want_ptx:
                    check.compile_ptx(ks)
                    report["ptx"] += 1
            except Exception as err:
                first = (str(err).strip() or type(err).__name__)[:2000]
                report["failures"].append({"case": case.name, "error": f"{type(err).__name__}: {first}"})
    report["device_problem"] = kc.device_problem()
    report["compile_error"] = _compile_error()
    json.dump(report, sys.stdout)


def _sources(node) -> list:
    """The kernel sources a node runs: its own, or its body's where it falls back (an attention
    body's stages may fall back in turn); a control-flow node's bodies' (device sub-plans)."""
    try:
        return [kc.generate(node)]
    except Unsupported:
        if not node.bodies:
            raise
        return [ks for body in node.bodies for n in body.nodes for ks in _sources(n)]


def _compile_error() -> str | None:
    """What graphc.compile(..., device="cuda") says on this machine (None when it works)."""
    import numpy as np

    import graphc
    from graphc.ir import GraphcError

    try:
        graphc.compile(lambda x: x * 2.0, np.ones(3, np.float32), device="cuda")
    except GraphcError as err:
        return str(err)
    except Exception as err:  # anything else is a failure of the check itself
        return f"NOT A GraphcError: {type(err).__name__}: {err}"
    return None


if __name__ == "__main__":
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    main()
