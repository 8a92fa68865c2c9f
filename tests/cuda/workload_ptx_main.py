"""Run by test_fused_workloads.py in a subprocess WITHOUT the simulator: compile the workloads'
fused-node kernels (the real GPU launch sizes) to PTX with ``numba.cuda.compile_ptx``. Prints JSON.

Argument ``structures``: one kernel per distinct structure (sources equal once every number is
replaced; they differ only in sizes and strides); ``all``: every distinct kernel.
"""

from __future__ import annotations

import json
import os
import sys
import time

from fusion_workloads import WORKLOADS, fused_nodes, shape_free, workload_graph

from graphc.kernels import cuda as kc
from graphc.kernels.cuda import check
from graphc.kernels.cuda.codegen import Unsupported
from graphc.kernels.cuda.generators import describe


def main(scope: str) -> None:
    """Generate every workload's fused kernels, compile each one chosen by ``scope`` to PTX."""
    assert not kc.simulator(), "run without NUMBA_ENABLE_CUDASIM"
    chosen: dict[str, tuple[str, object]] = {}
    report = {"kernels": 0, "ptx": 0, "failures": [], "generate_failures": []}
    report["ptx_unavailable"] = check.ptx_unavailable()
    for name in WORKLOADS:
        for node in fused_nodes(workload_graph(name)):
            try:
                ks = kc.generate(node)
            except Unsupported as err:
                report["generate_failures"].append(f"{name}: {describe(node)}: {err}")
                continue
            key = shape_free(ks.source) if scope == "structures" else ks.source
            chosen.setdefault(key, (name, ks))
    report["kernels"] = len(chosen)
    start = time.perf_counter()
    if report["ptx_unavailable"] is None:
        for name, ks in chosen.values():
            try:
                check.compile_ptx(ks)
                report["ptx"] += 1
            except Exception as err:
                first = (str(err).strip() or type(err).__name__)[:2000]
                report["failures"].append({"workload": name, "kernel": ks.title, "error": first})
    report["seconds"] = round(time.perf_counter() - start, 1)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    main(sys.argv[1] if len(sys.argv) > 1 else "structures")
