"""onnx_zoo_infer: light model-zoo networks from the onnx wheel, imported with graphc.onnx, vs ONNX Runtime.

``python benchmarks/onnx_zoo_infer.py [NAME ...]`` (default: resnet50 inception_v1 squeezenet; any
name in graphc.onnx.zoo.LIGHT_MODELS) gives each network seeded random weights, imports it, and
times graphc's CPU plan (frozen weights) and ONNX Runtime on the same ONNX model, batch 1,
forward only, best of 5 after a warm-up, both on ``$GRAPHC_BENCH_THREADS`` threads (default 1).

It is also a custom workload of the suite (``graphc bench onnx_zoo_infer``; docs/BENCHMARKS.md):
``measure(opts)`` gives one case per network, graphc and ONNX Runtime timed round-robin with the
run's settings on the same ONNX model and input, graphc's output checked against ORT's, and the
ratio "graphc / onnxruntime" (target <= 1). ``--quick`` runs SqueezeNet only.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

SEED = 0
NETWORKS = ("resnet50", "inception_v1", "squeezenet")
WHAT = (
    "light ResNet-50, Inception v1, SqueezeNet (onnx wheel, seeded weights) via graphc.onnx vs ORT, batch 1"
)
PEERS = ("onnxruntime",)
TARGETS = [("graphc / onnxruntime", "<= 1")]


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


def _session(proto, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _case(name: str, opts: dict) -> dict:
    """One network: graphc's frozen CPU plan and ORT's session, checked, then timed round-robin."""
    import graphc
    import graphc.onnx
    from graphc.bench.custom import failed, time_steps
    from graphc.bench.targets import agreement, agrees
    from graphc.onnx.zoo import light_input

    proto = onnx_model(name)
    x = light_input(proto)
    try:
        t0 = time.perf_counter()
        plan = graphc.compile(graphc.onnx.load(proto), x, freeze=True)
        compile_s = time.perf_counter() - t0
        ours = np.asarray(plan(x))
    except Exception as err:  # graphc never skips
        return {"case": name, "engines": {"graphc": failed(err)}, "ratios": {}}
    sess = _session(proto, opts["threads"])
    feed = {sess.get_inputs()[0].name: x}
    diff = agreement(ours, sess.run(None, feed)[0])
    timed = time_steps({"graphc": lambda: plan(x), "onnxruntime": lambda: sess.run(None, feed)}, opts)
    text = (
        diff.get("error") or f"max abs diff {diff['max_abs_diff']:.3g} (max |ORT| {diff['max_abs_ref']:.3g})"
    )
    timed["graphc"].update(agreement={"onnxruntime": text}, agrees=agrees(diff))
    out = {"case": name, "engines": timed, "ratios": {}, "extra": {"compile_s": compile_s}}
    if timed["graphc"]["status"] == timed["onnxruntime"]["status"] == "ok":
        out["ratios"]["graphc / onnxruntime"] = (
            timed["graphc"]["median_ms"] / timed["onnxruntime"]["median_ms"]
        )
    return out


def measure(opts: dict) -> dict:
    """The suite's custom-workload entry point: one case per network (``quick``: SqueezeNet only)."""
    from graphc.bench.custom import failed
    from graphc.bench.threads import reapply_thread_limits

    names = ("squeezenet",) if opts["quick"] else NETWORKS
    try:
        import onnxruntime  # noqa: F401  (loads its own OpenMP: limit it too)
    except ImportError:
        return {"cases": [], "notes": ["onnxruntime not installed (pip install 'graphc[compare]'): not run"]}
    reapply_thread_limits(opts["threads"])
    cases = []
    for name in names:
        opts["log"](f"  onnx_zoo_infer: {name} ...")
        try:
            cases.append(_case(name, opts))
        except Exception as err:  # the onnx wheel or ORT failed before graphc ran
            cases.append({"case": name, "engines": {"graphc": failed(err)}, "ratios": {}})
    notes = [
        f"batch 1, forward; graphc: graphc.onnx.load + compile(freeze=True), CPU kernels; seed {SEED}; "
        f"compile_s is graphc's in-process compile (warm kernel cache when the cache folder is)"
    ]
    return {"cases": cases, "notes": notes}


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
