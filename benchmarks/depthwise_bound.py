"""Depthwise convolution's kernel time against its bandwidth bound, on MobileNetV2's layer shapes.

A standalone script (not a ``model()`` workload of ``graphc bench``)::

    .venv/bin/python benchmarks/depthwise_bound.py [--device cpu|cuda] [--repeat 7] [--json out.json]

For each 3x3 depthwise layer of MobileNetV2 (batch 1, f32) it times graphc's ``depthwise_conv2d``
kernel alone (the CPU backend's numba kernel, or the CUDA backend's), and reports the bytes the
kernel must move at least (input read + weight read + output written) divided by the measured
copy bandwidth of a 32 MiB float32 array (read + written bytes per second: NumPy's copy on the
CPU, a device-to-device copy on the GPU) as its bound, and the ratio kernel / bound (1.0 = at the
bound; a copy of the same bytes). The CPU kernel runs on numba's threads, the CPU copy on one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

# (channels, height, width, stride) of MobileNetV2 1.0's depthwise 3x3 layers at 224x224
LAYERS = [
    (32, 112, 112, 1),
    (96, 112, 112, 2),
    (144, 56, 56, 1),
    (144, 56, 56, 2),
    (192, 28, 28, 1),
    (192, 28, 28, 2),
    (384, 14, 14, 1),
    (576, 14, 14, 1),
    (576, 14, 14, 2),
    (960, 7, 7, 1),
]
COPY_BYTES = 32 << 20


def depthwise_node(c: int, h: int, w: int, stride: int):
    """A one-node graph: depthwise_conv2d of x [1, c, h, w] by w [c, 1, 3, 3], padding 1."""
    from graphc.ir import Graph, TensorType

    g = Graph("depthwise")
    x = g.add_input("x", TensorType((1, c, h, w), "f32"))
    wt = g.add_input("w", TensorType((c, 1, 3, 3), "f32"))
    return g.add_node("depthwise_conv2d", [x, wt], {"stride": (stride, stride), "padding": (1, 1)})


def seconds_per_call(fn: Callable[[], None], repeat: int, min_time: float = 0.05) -> float:
    """Median over ``repeat`` blocks of the seconds per call (each block runs ``min_time`` at least)."""
    fn()
    t0 = time.perf_counter()
    fn()
    number = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    blocks = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        blocks.append((time.perf_counter() - t0) / number)
    return statistics.median(blocks)


def cpu_setup(repeat: int) -> tuple[float, Callable]:
    """(copy bandwidth in bytes/s, a function timing one node's CPU kernel)."""
    from graphc.bench.timing import machine_limits
    from graphc.kernels import cpu

    bandwidth = machine_limits(repeat=repeat, n=256, copy_bytes=COPY_BYTES)["copy_bandwidth_gbs"] * 1e9

    def run(node, arrays: list[np.ndarray]) -> float:
        out = np.empty(node.outputs[0].shape, np.float32)
        kernel = cpu.compile_node(node)
        return seconds_per_call(lambda: kernel(*arrays, out), repeat)

    return bandwidth, run


def cuda_setup(repeat: int) -> tuple[float, Callable]:
    """(device copy bandwidth in bytes/s, a function timing one node's CUDA kernel)."""
    from numba import cuda

    from graphc.kernels import cuda as kc

    kc.require_device()
    src = cuda.to_device(np.ones(COPY_BYTES // 4, np.float32))
    dst = cuda.device_array_like(src)

    def copy() -> None:
        dst.copy_to_device(src)
        cuda.synchronize()

    bandwidth = 2 * COPY_BYTES / seconds_per_call(copy, repeat)

    def run(node, arrays: list[np.ndarray]) -> float:
        ins = [cuda.to_device(a) for a in arrays]
        out = cuda.device_array(node.outputs[0].shape, np.float32)
        kernel = kc.compile_node(node)

        def step() -> None:
            kernel(*ins, out)
            cuda.synchronize()

        return seconds_per_call(step, repeat)

    return bandwidth, run


def main(argv: list[str] | None = None) -> int:
    """Time every layer, print the table (and write JSON when asked)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)
    bandwidth, run = (cuda_setup if args.device == "cuda" else cpu_setup)(args.repeat)
    rng = np.random.default_rng(0)
    copy = f"copy bandwidth ({COPY_BYTES >> 20} MiB, read + write) {bandwidth / 1e9:.2f} GB/s"
    print(f"depthwise_conv2d 3x3 on {args.device}; {copy}")
    print(f"{'layer':<22}{'output':>12}{'MB moved':>10}{'kernel ms':>11}{'bound ms':>10}{'kernel/bound':>14}")
    rows = []
    for c, h, w, s in LAYERS:
        node = depthwise_node(c, h, w, s)
        x = rng.standard_normal((1, c, h, w), dtype=np.float32)
        wt = rng.standard_normal((c, 1, 3, 3), dtype=np.float32)
        y = node.outputs[0]
        moved = x.nbytes + wt.nbytes + y.type.numel * 4
        t = run(node, [x, wt])
        bound = moved / bandwidth
        rows.append(
            {"channels": c, "height": h, "width": w, "stride": s, "output": list(y.shape), "bytes": moved}
            | {"kernel_ms": t * 1e3, "bound_ms": bound * 1e3, "ratio": t / bound}
        )
        name = f"{c}x{h}x{w} s{s}"
        print(f"{name:<22}{'x'.join(map(str, y.shape[1:])):>12}{moved / 1e6:>10.2f}{t * 1e3:>11.3f}", end="")
        print(f"{bound * 1e3:>10.3f}{t / bound:>14.2f}")
    total_t, total_b = sum(r["kernel_ms"] for r in rows), sum(r["bound_ms"] for r in rows)
    print(
        f"{'all layers once':<22}{'':>12}{'':>10}{total_t:>11.3f}{total_b:>10.3f}{total_t / total_b:>14.2f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": args.device, "copy_bandwidth_gbs": bandwidth / 1e9, "layers": rows}, f, indent=1
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
