"""allreduce: graphc's gradient-bucket kernels against mpi4py's Allreduce, 2 ranks, 4 KiB .. 64 MiB float32.

    python benchmarks/allreduce.py [--ranks 2] [--repeat 20] [--quick]   # starts itself under mpiexec

A suite workload (custom: it times itself). For each bucket size, graphc compiles a plan that
does what a training step does with a bucket of four gradients: kernels compute them
(``g_i = x_i * 1``), then ``allreduce_start`` + ``allreduce_wait``. The memory planner puts the
gradients back to back in the bucket buffer (``passes.bucket_layout``, concat in place), so
the start copies nothing (checked: ``packed_bytes`` stays 0) and the sum runs in place on the
arena bytes the kernels wrote. graphc's figure is the plan's start + wait steps (the nonblocking
sum: a persistent MPI_Allreduce_init request the start kernel built on its first call and starts
on each, with MPI_Iallreduce where the library lacks them; the wait's polling,
``graphc.kernels.collectives.wait_for``; and the averaging pass into the four results). The
peer is the hand-written form of the same job on the same arena bytes: mpi4py's blocking
``comm.Allreduce(IN_PLACE, buf)``, then ``buf /= ranks``.
Both use the same MPI library (the MPICH wheel). Timing: every rank runs blocks of calls between
barriers, round-robin between the engines; a block's time is the slowest rank's, and each size
reports the median over ``repeat`` blocks and the bus bandwidth ``2 (n-1)/n * bytes / time``
(n ranks). Agreement: graphc's averages (a whole run of the plan) against a float64 sum of every
rank's gradients (each rank's data come from a seed, so every rank recomputes them all) and
against mpi4py's.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mpi_launch import relaunch, run_json, under_mpiexec, write_json  # noqa: E402

WHAT = (
    "allreduce-average of a float32 gradient bucket, 2 ranks: graphc kernels (persistent MPI allreduce) "
    "vs mpi4py Allreduce"
)
PEERS = ("mpi4py",)
TARGETS = [("graphc / mpi4py", ">= 0.9")]  # bus bandwidth ratio
RANKS = 2
PARTS = 4  # gradients per bucket
SIZES = tuple(1 << k for k in range(10, 25, 2))  # float32 elements: 4 KiB, 16 KiB, .. 64 MiB
QUICK_SIZES = (1 << 10, 1 << 14)  # 4 KiB, 64 KiB


def _label(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB"


def bus_bandwidth_gbs(nbytes: int, seconds: float, ranks: int) -> float:
    """Bus bandwidth of an allreduce of ``nbytes`` on ``ranks`` ranks taking ``seconds``, in GB/s."""
    return 2 * (ranks - 1) / ranks * nbytes / seconds / 1e9


def _graphc_plan(n: int):
    """A compiled plan computing a bucket of ``PARTS`` gradients (``x_i * 1``) and averaging it
    across ranks; its steps (kernel, bound arena arrays) for the start and the wait."""
    from graphc import passes
    from graphc.ir import Graph, TensorType
    from graphc.runtime import Plan

    g = Graph("bucket")
    xs = [g.add_input(f"x{i}", TensorType((n // PARTS,), "f32")) for i in range(PARTS)]
    one = g.op("const", value=1.0, dtype="f32")
    grads = [g.op("mul", x, one) for x in xs]
    start = g.add_node("allreduce_start", grads, {"bucket": 0, "packed": True})
    wait = g.add_node("allreduce_wait", [start.output], {"shapes": [v.shape for v in grads], "bucket": 0})
    for v in wait.outputs:
        g.add_output(v)
    g = passes.schedule(g)
    memory = passes.plan_memory(g)
    passes.check_memory_plan(g, memory)
    plan = Plan(g, memory, backend="cpu")
    at = {node.op: k for k, node in enumerate(plan.step_nodes)}
    return plan, plan.steps[at["allreduce_start"]], plan.steps[at["allreduce_wait"]]


def _grads(rank: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1000 + rank)
    return [rng.standard_normal(n // PARTS, dtype=np.float32) for _ in range(PARTS)]


def _time_blocks(engines: dict, repeat: int, warmup: int, min_time: float, comm) -> dict[str, list[float]]:
    """Per engine, seconds per call in each of ``repeat`` blocks (the slowest rank's)."""
    from mpi4py import MPI

    numbers = {}
    for name, fn in engines.items():
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(max(1, warmup)):
            fn()
        t = (time.perf_counter() - t0) / max(1, warmup)
        t = comm.allreduce(t, op=MPI.MAX)  # every rank runs the same number of calls
        numbers[name] = max(1, min(1000, math.ceil(min_time / max(t, 1e-7)))) if min_time > 0 else 1
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeat):
        for name, fn in engines.items():
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(numbers[name]):
                fn()
            times[name].append((time.perf_counter() - t0) / numbers[name])
    slowest = {}
    for name, t in times.items():
        mine = np.array(t)
        comm.Allreduce(MPI.IN_PLACE, mine, op=MPI.MAX)
        slowest[name] = mine.tolist()
    return slowest


def run_ranks(sizes: tuple[int, ...], repeat: int, warmup: int, min_time: float) -> dict:
    """On every rank of the MPI job: time both engines at each size; the results (rank 0's view)."""
    from mpi4py import MPI

    import graphc.distributed as dist
    from graphc.kernels import collectives

    rank, size = dist.init()
    comm = MPI.COMM_WORLD
    cases = []
    for n in sizes:
        grads = _grads(rank, n)
        plan, (start, start_args), (wait, wait_args) = _graphc_plan(n)
        plan(*grads)  # the kernels write the gradients into the arena
        buf = start_args[-1]  # the bucket buffer: the arena bytes MPI sums
        copied = collectives.packed_bytes()

        def graphc_step(start=start, start_args=start_args, wait=wait, wait_args=wait_args) -> None:
            start(*start_args)
            wait(*wait_args)

        def mpi4py_step(buf=buf) -> None:
            comm.Allreduce(MPI.IN_PLACE, buf)
            buf /= size

        times = _time_blocks({"graphc": graphc_step, "mpi4py": mpi4py_step}, repeat, warmup, min_time, comm)
        copied = collectives.packed_bytes() - copied
        # Agreement: a whole run of the plan (fresh gradients), float64 oracle, and the peer's result.
        ours = np.concatenate(plan(*grads)).astype(np.float64)
        oracle = sum(np.concatenate(_grads(r, n)).astype(np.float64) for r in range(size)) / size
        peer = np.concatenate(grads)
        comm.Allreduce(MPI.IN_PLACE, peer)
        peer /= size
        cases.append(
            {
                "bytes": n * 4,
                "times": times,
                "oracle_diff": float(np.max(np.abs(ours - oracle))),
                "peer_diff": float(np.max(np.abs(ours - peer))),
                "packed_bytes": int(copied),
            }
        )
    return {"ranks": size, "cases": cases}


def _engine(seconds: list[float]) -> dict:
    ms = [1e3 * s for s in seconds]
    return {"status": "ok", "median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}


# float32 sums of two ranks' normal values, divided by 2: one rounding of values of size ~3.
TOLERANCE = 1e-5


def to_cases(raw: dict) -> list[dict]:
    """Suite cases (the custom-workload protocol) from ``run_ranks``'s results."""
    cases = []
    for c in raw["cases"]:
        nbytes, ranks = c["bytes"], raw["ranks"]
        ours, peer = _engine(c["times"]["graphc"]), _engine(c["times"]["mpi4py"])
        agrees = c["oracle_diff"] <= TOLERANCE and c["peer_diff"] <= TOLERANCE
        ours["agreement"] = {
            "mpi4py": f"max abs diff {c['peer_diff']:.1e}",
            "float64 oracle": f"max abs diff {c['oracle_diff']:.1e}",
        }
        if not agrees:
            ours["agrees"] = False
        bw = {
            e: bus_bandwidth_gbs(nbytes, d["median_ms"] / 1e3, ranks)
            for e, d in (("graphc", ours), ("mpi4py", peer))
        }
        cases.append(
            {
                "case": _label(nbytes),
                "engines": {"graphc": ours, "mpi4py": peer},
                "ratios": {"graphc / mpi4py": bw["graphc"] / bw["mpi4py"]},
                "extra": {
                    "bytes": nbytes,
                    "ranks": ranks,
                    "graphc_bus_gbs": bw["graphc"],
                    "mpi4py_bus_gbs": bw["mpi4py"],
                    "packed_bytes": c.get("packed_bytes", 0),
                },
            }
        )
    return cases


def _argv(opts: dict) -> list[str]:
    quick = bool(opts.get("quick"))
    return [
        "--ranks",
        str(RANKS),
        "--repeat",
        str(2 if quick else max(1, int(opts.get("repeat", 10)))),
        "--warmup",
        str(1 if quick else max(1, int(opts.get("warmup", 2)))),
        "--min-time",
        str(0.0 if quick else float(opts.get("min_time", 0.05))),
        *(["--quick"] if quick else []),
    ]


def measure(opts: dict) -> dict:
    """The suite's entry: run the MPI job on 2 ranks (1 thread each) and report one case per size."""
    log = opts.get("log") or (lambda line: None)
    log(f"allreduce: mpiexec -n {RANKS}, {'quick' if opts.get('quick') else 'full'} sizes")
    raw = run_json(__file__, RANKS, _argv(opts), timeout=120 if opts.get("quick") else 1200)
    return {
        "cases": to_cases(raw),
        "notes": [
            f"{raw['ranks']} ranks on this machine (shared memory), 1 thread each; ratio is bus bandwidth "
            "graphc / mpi4py (the inverse of the time ratio); mpi4py = Allreduce(IN_PLACE) + buf /= ranks "
            f"on the plan's bucket buffer; graphc = the plan's allreduce_start + allreduce_wait steps over "
            f"{PARTS} gradients its kernels wrote into that buffer (packed_bytes: bytes the start copied)",
            "opts threads is not used: each rank runs 1 thread (2 ranks)",
        ],
    }


def _print(raw: dict, repeat: int) -> None:
    print(
        f"allreduce-average of a float32 bucket ({PARTS} gradients), {raw['ranks']} ranks, median of {repeat}"
    )
    heads = (
        "bucket",
        "graphc us",
        "mpi4py us",
        "graphc GB/s",
        "mpi4py GB/s",
        "bw ratio",
        "agrees",
        "copied B",
    )
    print(" ".join(f"{h:>12}" for h in heads))
    for case in to_cases(raw):
        g, p = case["engines"]["graphc"], case["engines"]["mpi4py"]
        print(
            f"{case['case']:>12} {g['median_ms'] * 1e3:>12.1f} {p['median_ms'] * 1e3:>12.1f} "
            f"{case['extra']['graphc_bus_gbs']:>12.2f} {case['extra']['mpi4py_bus_gbs']:>12.2f} "
            f"{case['ratios']['graphc / mpi4py']:>12.2f} {str(g.get('agrees', True)):>12} "
            f"{case['extra']['packed_bytes']:>12}"
        )


def main(argv: list[str] | None = None) -> int:
    """Command line: relaunch under mpiexec if needed, then time each size on every rank."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=RANKS)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=0.05)
    parser.add_argument("--quick", action="store_true", help="two small sizes")
    parser.add_argument("--json", help="rank 0 writes its results here (the suite's measure())")
    args = parser.parse_args(argv)
    if not under_mpiexec():
        return relaunch(__file__, args.ranks, sys.argv[1:] if argv is None else argv)
    raw = run_ranks(QUICK_SIZES if args.quick else SIZES, args.repeat, args.warmup, args.min_time)
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        write_json(args.json, raw)
        if not args.json:
            _print(raw, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
