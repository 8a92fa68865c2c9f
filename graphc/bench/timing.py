"""Timing: warm-up, then round-robin blocks of steps; the machine's limits (sgemm, copy bandwidth)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .engines import Runner, first_line

MiB = 1 << 20


def time_block(fn: Callable[[], Any], number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` calls in a row."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def stats(samples: list[float]) -> dict:
    """Median, min and max of per-step seconds, in ms."""
    ms = [s * 1e3 for s in samples]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "runs": len(ms)}


def measure(
    runners: dict[str, Runner], repeat: int, warmup: int, min_time: float, settle: float = 0.0
) -> dict:
    """Warm up each runner, then time them round-robin; per engine, per-step times over the blocks.

    In each of ``repeat`` rounds every engine runs one block of steps (enough for ``min_time``
    seconds), so the engines share the machine's noise. Before each block the machine rests
    ``settle`` seconds and the engine runs one untimed step: thread pools of the engine before
    (OpenMP, OpenBLAS) spin-wait after their last task, and on a machine with few cores that
    spinning would be charged to the next engine. An engine that raises is "failed", with why.
    """
    numbers: dict[str, int] = {}
    samples: dict[str, list[float]] = {e: [] for e in runners}
    errors: dict[str, str] = {}
    for engine, r in runners.items():
        try:
            t = min(time_block(r.step, 1) for _ in range(max(1, warmup)))
        except Exception as err:
            errors[engine] = f"{type(err).__name__}: {first_line(err)}"
            continue
        numbers[engine] = max(1, min(10000, math.ceil(min_time / max(t, 1e-7)))) if min_time > 0 else 1
    for _ in range(repeat):
        for engine, r in runners.items():
            if engine in numbers and engine not in errors:
                try:
                    if settle > 0:
                        time.sleep(settle)
                        r.step()
                    samples[engine].append(time_block(r.step, numbers[engine]))
                except Exception as err:
                    errors[engine] = f"{type(err).__name__}: {first_line(err)}"
    out = {}
    for engine in runners:
        if engine in errors:
            out[engine] = {"status": "failed", "note": errors[engine]}
        else:
            out[engine] = {
                "status": "ok",
                **stats(samples[engine]),
                "steps_per_run": numbers[engine],
                "per_round_ms": [1e3 * t for t in samples[engine]],
            }
    return out


def machine_limits(repeat: int = 10, n: int = 1024, copy_bytes: int = 32 * MiB) -> dict:
    """NumPy sgemm GFLOP/s at n³ and the copy bandwidth (read + written) of a float32 array."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    gemm = [time_block(lambda: np.matmul(a, b, out=c), 1) for _ in range(max(3, repeat))]
    src = np.ones(copy_bytes // 4, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    copy = [time_block(lambda: np.copyto(dst, src), 1) for _ in range(max(3, repeat * 2))]
    flops = 2.0 * n**3
    moved = 2 * src.nbytes
    return {
        "sgemm_n": n,
        "sgemm_gflops": flops / statistics.median(gemm) / 1e9,
        "sgemm_gflops_best": flops / min(gemm) / 1e9,
        "copy_bytes": src.nbytes,
        "copy_bandwidth_gbs": moved / statistics.median(copy) / 1e9,
        "copy_bandwidth_gbs_best": moved / min(copy) / 1e9,
    }
