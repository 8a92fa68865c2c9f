"""allreduce: graphc's gradient-bucket kernels against mpi4py's Allreduce, on N ranks (default 2).

    python benchmarks/allreduce.py [--ranks 2] [--repeat 50]   # starts itself under mpiexec

For each bucket size, graphc runs ``allreduce_start`` + ``allreduce_wait`` (CPU kernels) over a
bucket of four gradients: pack, nonblocking in-place MPI_Iallreduce polled to completion, and
the averaging pass into the four results. The peer is what a hand-written loop does: a blocking
``comm.Allreduce(IN_PLACE, buf)`` of the already packed buffer and ``buf /= ranks``. Both use
the same MPI library; the difference is graphc's packing copy and its polling. Rank 0 prints the
median microseconds and the algorithm bandwidth (bucket bytes / time) of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mpi_launch import relaunch, under_mpiexec  # noqa: E402

SIZES = (1 << 10, 1 << 14, 1 << 18, 1 << 22)  # float32 elements per bucket: 4 KiB .. 16 MiB


def _graphc_kernels(n: int):
    from graphc.ir import Graph, TensorType
    from graphc.kernels import cpu

    g = Graph("bucket")
    parts = [g.add_input(f"g{i}", TensorType((n // 4,), "f32")) for i in range(4)]
    start = g.add_node("allreduce_start", parts, {"bucket": 0})
    wait = g.add_node("allreduce_wait", [start.output], {"shapes": [p.shape for p in parts], "bucket": 0})
    return cpu.compile_node(start), cpu.compile_node(wait)


def _time(fn, repeat: int, comm) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Command line: relaunch under mpiexec if needed, then time each size on every rank."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    if not under_mpiexec():
        return relaunch(__file__, args.ranks, sys.argv[1:] if argv is None else argv)
    from mpi4py import MPI

    import graphc.distributed as dist

    rank, size = dist.init()
    comm = MPI.COMM_WORLD
    rows = []
    for n in SIZES:
        rng = np.random.default_rng(rank)
        grads = [rng.standard_normal(n // 4).astype(np.float32) for _ in range(4)]
        buf, outs = np.empty(n, np.float32), [np.empty(n // 4, np.float32) for _ in range(4)]
        start, wait = _graphc_kernels(n)

        def graphc_step(grads=grads, buf=buf, outs=outs, start=start, wait=wait) -> None:
            start(*grads, buf)
            wait(buf, *outs)

        flat = np.concatenate(grads)

        def mpi4py_step(flat=flat) -> None:
            comm.Allreduce(MPI.IN_PLACE, flat)
            flat /= size

        t_graphc, t_peer = _time(graphc_step, args.repeat, comm), _time(mpi4py_step, args.repeat, comm)
        graphc_step()
        expected = np.concatenate(grads).copy()
        comm.Allreduce(MPI.IN_PLACE, expected)
        assert np.allclose(np.concatenate(outs), expected / size, rtol=1e-5, atol=1e-6), (
            "graphc's average differs"
        )
        rows.append((n * 4, t_graphc, t_peer))
    if rank == 0:
        print(
            f"allreduce-average of one float32 bucket (4 gradients) on {size} ranks, median of {args.repeat}"
        )
        heads = ("bucket", "graphc us", "mpi4py us", "ratio", "graphc GB/s", "mpi4py GB/s")
        print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (10, 10, 10, 6, 12, 12))))
        for nbytes, tg, tp in rows:
            print(
                f"{nbytes / 1024:>8.0f}Ki {tg * 1e6:>10.1f} {tp * 1e6:>10.1f} {tg / tp:>6.2f} "
                f"{nbytes / tg / 1e9:>12.2f} {nbytes / tp / 1e9:>12.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
