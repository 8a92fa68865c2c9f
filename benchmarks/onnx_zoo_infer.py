"""onnx_zoo_infer: light model-zoo networks from the onnx wheel, imported with graphc.onnx, vs ONNX Runtime.

``python benchmarks/onnx_zoo_infer.py [NAME ...]`` (default: resnet50 inception_v1 squeezenet; any
name in graphc.onnx.zoo.LIGHT_MODELS) gives each network seeded random weights, imports it, and
times graphc's CPU plan (frozen weights) and ONNX Runtime on the same ONNX model, batch 1,
forward only, best of 5 after a warm-up, both on ``$GRAPHC_BENCH_THREADS`` threads (default 1).

It is a standalone script, not a ``graphc bench`` workload: the suite's peers start from a
``torch_model()`` twin, which an imported ONNX model does not have (the suite test requires one).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

SEED = 0


def onnx_model(name: str):
    """The light model as ONNX, with seeded random weights."""
    from graphc.onnx.zoo import light_model

    return light_model(name, seed=SEED)


def _best(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def compare(name: str, threads: int = 1) -> dict:
    """graphc (CPU kernels, frozen weights) vs ONNX Runtime on one light model; best of 5 runs each."""
    import onnxruntime as ort

    import graphc
    import graphc.onnx
    from graphc.onnx.zoo import light_input

    proto = onnx_model(name)
    x = light_input(proto)
    t0 = time.perf_counter()
    plan = graphc.compile(graphc.onnx.load(proto), x, freeze=True)
    compile_s = time.perf_counter() - t0
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    ours, theirs = _best(lambda: plan(x)), _best(lambda: sess.run(None, feed))
    err = float(np.abs(plan(x) - sess.run(None, feed)[0]).max())
    return {
        "model": name,
        "graphc_s": ours,
        "ort_s": theirs,
        "ratio": ours / theirs,
        "compile_s": compile_s,
        "max_err": err,
    }


if __name__ == "__main__":
    from graphc.bench.threads import reapply_thread_limits, set_threads

    names = sys.argv[1:] or ["resnet50", "inception_v1", "squeezenet"]
    threads = int(os.environ.get("GRAPHC_BENCH_THREADS", "1"))
    print(f"threads: {threads} ({set_threads(threads)})")
    import onnxruntime  # noqa: F401  (loads its own OpenMP: limit it too)

    reapply_thread_limits(threads)
    print(
        f"{'model':<14} {'graphc ms':>10} {'ORT ms':>8} {'time / onnxruntime':>19} "
        f"{'compile s':>10} {'max err':>9}"
    )
    for n in names:
        r = compare(n, threads)
        print(
            f"{r['model']:<14} {r['graphc_s'] * 1e3:>10.1f} {r['ort_s'] * 1e3:>8.1f} {r['ratio']:>19.2f} "
            f"{r['compile_s']:>10.1f} {r['max_err']:>9.1e}"
        )
