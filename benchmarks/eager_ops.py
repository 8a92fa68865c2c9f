"""Eager mode's per-op overhead against PyTorch eager: add, matmul and relu on small tensors.

On 16x16 float32 tensors an op's arithmetic takes well under a microsecond, so the time per
call is the framework's own overhead: for graphc, finding the op signature's cached entry
(``graphc/eager_fast.py``), running its NumPy kernel and wrapping the result (recording it for
``backward()`` when an operand requires grad); for PyTorch, its C++ dispatcher. docs/EAGER.md
has before/after figures.
Each op is timed on tensors that need no gradient and on tensors computed from a parameter (so
the op is also recorded for ``backward()``), and one whole eager training step of a small MLP
(forward, backward, SGD step) is timed too. Engines are timed round-robin; the table gives the
median microseconds per call over the rounds and graphc's ratio to torch.

    python benchmarks/eager_ops.py [--rounds 5] [--min-time 0.2] [--backend reference cpu] [--json FILE]

``--backend`` picks the kernels eager ops run with (``graphc.eager.set_backend``): "reference"
(NumPy, the default) and/or "cpu" (graphc's compiled numba kernels; compiled before timing).

It is also a custom workload of the suite (``graphc bench eager_ops``; docs/BENCHMARKS.md):
``measure(opts)`` gives one case per op, graphc's result checked against torch's (the op's output,
or the training step's first loss), and the ratio "graphc / torch" (target <= 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import graphc
import graphc.eager as eager
import graphc.functional as F
import graphc.nn as nn
from graphc import optim

SIZE = 16
WHAT = "eager per-op overhead vs torch eager: add, matmul, relu 16x16 (with and without grad), MLP train step"
PEERS = ("torch",)
TARGETS = [("graphc / torch", "<= 1")]


def _per_call(fn: Callable[[], Any], min_time: float) -> float:
    """Microseconds per call of ``fn`` over a block of at least ``min_time`` seconds."""
    fn()
    n, elapsed = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return elapsed / n * 1e6
        n *= 2 if elapsed < min_time / 4 else 1 + int(min_time / max(elapsed, 1e-9))


def _cases() -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """name -> (graphc eager call, torch eager call)."""
    import torch

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((SIZE, SIZE)).astype(np.float32) for _ in range(2))
    ga, gb = eager.call(lambda x, y: (x, y), (a, b))
    ta, tb = torch.tensor(a), torch.tensor(b)
    # Tensors computed from a parameter: every op on them is recorded for backward().
    w = nn.Parameter(a)
    gw = eager.call(lambda p: p * 1.0, (w,))
    tw = torch.tensor(a, requires_grad=True) * 1.0

    nn.init.manual_seed(0)
    model = nn.Sequential(nn.Linear(SIZE, 32), nn.ReLU(), nn.Linear(32, 4))
    twin = torch.nn.Sequential(torch.nn.Linear(SIZE, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    opt, topt = optim.SGD(model.parameters(), lr=0.01), torch.optim.SGD(twin.parameters(), lr=0.01)
    x, y = a, rng.integers(0, 4, SIZE)
    tx, ty = torch.tensor(x), torch.tensor(y)

    def graphc_step() -> Any:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def torch_step() -> Any:
        topt.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(tx), ty)
        loss.backward()
        topt.step()
        return loss

    return {
        "add": (lambda: ga + gb, lambda: ta + tb),
        "matmul 16x16": (lambda: ga @ gb, lambda: ta @ tb),
        "relu": (lambda: ga.relu(), lambda: ta.relu()),
        "add (grad)": (lambda: gw + gb, lambda: tw + tb),
        "matmul (grad)": (lambda: gw @ gb, lambda: tw @ tb),
        "relu (grad)": (lambda: gw.relu(), lambda: tw.relu()),
        "MLP train step": (graphc_step, torch_step),
    }


def _rounds(g: Callable[[], Any], t: Callable[[], Any], rounds: int, min_time: float) -> tuple[list, list]:
    """Microseconds per call of graphc's and torch's call, round-robin over ``rounds`` rounds."""
    gs, ts = [], []
    for _ in range(rounds):
        gs.append(_per_call(g, min_time))
        ts.append(_per_call(t, min_time))
    return gs, ts


def measure_rows(rounds: int, min_time: float, backend: str = "reference") -> list[dict[str, Any]]:
    """Median microseconds per call of each case for graphc eager and torch eager (the script's table)."""
    import torch

    torch.set_num_threads(1)
    eager.set_backend(backend)
    rows = []
    for name, (g, t) in _cases().items():
        gs, ts = _rounds(g, t, rounds, min_time)
        gm, tm = statistics.median(gs), statistics.median(ts)
        rows.append({"op": name, "backend": backend, "graphc_us": gm, "torch_us": tm, "ratio": gm / tm})
    return rows


def _entry(us: list[float]) -> dict[str, Any]:
    ms = [u / 1e3 for u in us]
    return {
        "status": "ok",
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "runs": len(ms),
        "per_round_ms": ms,
    }


def _value(v: Any) -> np.ndarray:
    """A graphc or torch eager result (tensor or loss) as a float64 array."""
    if hasattr(v, "detach"):
        v = v.detach().numpy()
    return np.asarray(v, dtype=np.float64)


def measure(opts: dict) -> dict:
    """The suite's custom-workload entry point: one case per op, graphc eager against torch eager.

    Each case's results are checked first (the op's output, or the training step's first loss),
    then both calls are timed round-robin, ``opts["repeat"]`` rounds of blocks of at least
    ``opts["min_time"]`` s. torch runs on one thread, as graphc eager's small ops do.
    """
    from graphc.bench.custom import failed
    from graphc.bench.targets import agreement, agrees

    try:
        import torch
    except ImportError:
        return {
            "cases": [],
            "notes": ["torch not installed (pip install 'graphc[compare]'): nothing compared"],
        }
    backend = opts.get("backend", "reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    eager.set_backend(backend)
    cases = []
    try:
        for name, (g, t) in _cases().items():
            opts["log"](f"  eager_ops: {name} ...")
            try:
                diff = agreement(_value(g()), _value(t()))
                gs, ts = _rounds(g, t, opts["repeat"], opts["min_time"])
            except Exception as err:  # graphc never skips
                cases.append({"case": name, "engines": {"graphc": failed(err)}, "ratios": {}})
                continue
            ok = agrees(diff)
            text = diff.get("error") or f"max abs diff {diff['max_abs_diff']:.3g}"
            graphc_entry = {**_entry(gs), "agreement": {"torch": text}, "agrees": ok}
            engines = {"graphc": graphc_entry, "torch": _entry(ts)}
            ratio = engines["graphc"]["median_ms"] / engines["torch"]["median_ms"]
            extra = {"graphc_us": statistics.median(gs), "torch_us": statistics.median(ts)}
            cases.append(
                {"case": name, "engines": engines, "ratios": {"graphc / torch": ratio}, "extra": extra}
            )
    finally:
        torch.set_num_threads(threads)
    notes = [
        f"{SIZE}x{SIZE} float32, eager kernels {backend!r}, torch on 1 thread; medians of per-call times "
        "over round-robin blocks"
    ]
    return {"cases": cases, "notes": notes}


def main(argv: list[str] | None = None) -> int:
    """Print the table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.2)
    parser.add_argument("--backend", nargs="+", choices=["reference", "cpu"], default=["reference"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("eager_ops compares with PyTorch eager: pip install torch")
    rows = [r for backend in args.backend for r in measure_rows(args.rounds, args.min_time, backend)]
    print(f"graphc {graphc.__version__} eager vs torch eager, {SIZE}x{SIZE} float32, 1 thread (us per call)")
    print(f"{'op':<16}{'kernels':>10}{'graphc':>10}{'torch':>10}{'ratio':>8}")
    for r in rows:
        print(
            f"{r['op']:<16}{r['backend']:>10}{r['graphc_us']:>10.1f}{r['torch_us']:>10.1f}{r['ratio']:>8.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
