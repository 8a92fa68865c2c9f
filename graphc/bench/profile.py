"""graphc's per-kernel profile: each step of a Plan timed on its own, next to the whole call."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .timing import time_block


def kernel_label(node: Any) -> tuple[str, str]:
    """A kernel's op (fused:kind) and a short description (output shapes, body ops)."""
    op = node.op
    detail = ""
    if op == "fused":
        op = f"fused:{node.attrs.get('kind', '?')}"
        body = getattr(node, "subgraph", None)
        if body is not None:
            ops = [n.op for n in body.nodes]
            detail = ",".join(ops[:12]) + (",…" if len(ops) > 12 else "")
    shapes = " ".join("x".join(map(str, v.shape)) or "scalar" for v in node.outputs)
    return op, f"{shapes} {detail}".strip()


def matmul_flops(node: Any) -> int | None:
    """2·m·n·k·batch of a matmul node or of the matmul that opens a fused matmul node; an
    attention node's two matmuls together."""
    mm = node
    if node.op == "fused" and node.attrs.get("kind") == "attention":
        stages = [matmul_flops(n) for n in node.subgraph.nodes]
        return sum(f for f in stages if f) or None
    if node.op == "fused":
        body = getattr(node, "subgraph", None)
        mm = next((n for n in body.nodes if n.op == "matmul"), None) if body is not None else None
    if mm is None or mm.op != "matmul":
        return None
    a, b, out = mm.inputs[0].shape, mm.inputs[1].shape, mm.outputs[0].shape
    if len(a) < 1 or len(b) < 1 or not out:
        return None
    return 2 * a[-1] * int(np.prod(out))


def profile_plan(plan: Any, call: Callable[[], Any], reps: int = 10) -> dict:
    """Per-kernel time of a graphc Plan: its steps run in order, each timed; plus the call overhead.

    Each round runs the steps once with a timer around every kernel, then one plain call of the
    step, so the sum of the kernels and the whole call see the same machine. A matmul kernel
    reports GFLOP/s; every kernel its bytes in + out per second (GB/s), to compare with the limits.
    """
    nodes = getattr(plan, "step_nodes", None)
    nodes = nodes or [n for n in plan.graph.nodes if not plan.memory_plan.is_view(n)]
    if len(nodes) != len(plan.steps):
        nodes = [None] * len(plan.steps)
    times: list[list[float]] = [[] for _ in plan.steps]
    calls = []
    for _ in range(reps):
        for i, (fn, args) in enumerate(plan.steps):
            t0 = time.perf_counter()
            fn(*args)
            times[i].append(time.perf_counter() - t0)
        calls.append(time_block(call, 1))
    kernels = []
    for i, (node, ts) in enumerate(zip(nodes, times)):
        op, detail = kernel_label(node) if node is not None else ("?", "")
        seconds = statistics.median(ts)
        entry = {
            "index": i,
            "op": op,
            "detail": detail,
            "source": (getattr(node, "source", "") or "") if node is not None else "",
            "ms": 1e3 * seconds,
        }
        moved = sum(a.nbytes for a in plan.steps[i][1] if isinstance(a, np.ndarray))
        entry["gbs"] = moved / seconds / 1e9 if seconds > 0 else None
        flops = matmul_flops(node) if node is not None else None
        if flops:
            entry["gflops"] = flops / seconds / 1e9 if seconds > 0 else None
        kernels.append(entry)
    total_kernels = sum(k["ms"] for k in kernels)
    call_ms = 1e3 * statistics.median(calls)
    by_op: dict[str, float] = {}
    for k in kernels:
        by_op[k["op"]] = by_op.get(k["op"], 0.0) + k["ms"]
    return {
        "call_ms": call_ms,
        "kernels_ms": total_kernels,
        "overhead_ms": call_ms - total_kernels,
        "n_kernels": len(kernels),
        "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
        "kernels": kernels,
    }


def format_profile(name: str, prof: dict, top: int = 15) -> str:
    """A per-kernel profile as text: totals, time by op kind, the slowest kernels."""
    lines = [
        f"profile of graphc on {name}: call {prof['call_ms']:.3f} ms = {prof['n_kernels']} kernels "
        f"{prof['kernels_ms']:.3f} ms + overhead (input/output copies, updates, Python) "
        f"{prof['overhead_ms']:.3f} ms",
        "  by op: " + ", ".join(f"{op} {ms:.3f} ms" for op, ms in prof["by_op"].items()),
    ]
    for k in sorted(prof["kernels"], key=lambda k: -k["ms"])[:top]:
        share = 100 * k["ms"] / prof["call_ms"] if prof["call_ms"] else 0
        if k.get("gflops"):
            rate = f"{k['gflops']:6.1f} GFLOP/s"
        else:
            rate = ("     -" if k.get("gbs") is None else f"{k['gbs']:6.1f}") + " GB/s    "
        lines.append(
            f"  #{k['index']:<4} {k['ms']:9.3f} ms {share:5.1f}% {rate}  {k['op']:<16} "
            f"{k['detail'][:60]}  {k['source']}"
        )
    return "\n".join(lines)
