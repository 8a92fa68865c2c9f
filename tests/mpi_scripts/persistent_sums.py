"""One rank of the persistent-request test (tests/test_distributed_mpi.py).

    mpiexec -n 2 python persistent_sums.py

A plan with two buckets (one packed, one unpacked), both in flight at once, interleaved with a
``sum_across`` (an MPI_Iallreduce posted each call), runs ``STEPS`` times with values that change
each step; every rank checks its averages against a float64 oracle of every rank's values and
that the CPU kernels started persistent requests (MPI_Allreduce_init), one per bucket.
Prints ``rank R ok N`` (N: persistent requests held) when all is well.
"""

from __future__ import annotations

import numpy as np

import graphc.distributed as dist
from graphc import passes
from graphc.ir import Graph, TensorType
from graphc.kernels import collectives
from graphc.runtime import Plan

STEPS = 5


def build() -> Plan:
    g = Graph("two_buckets")
    xs = [g.add_input(f"x{i}", TensorType((n,), "f32")) for i, n in enumerate((300, 500, 700))]
    two = g.op("const", value=2.0, dtype="f32")
    grads = [g.op("mul", x, two) for x in xs]
    first = g.add_node("allreduce_start", grads[:2], {"bucket": 0, "packed": True})
    second = g.add_node("allreduce_start", grads[2:], {"bucket": 1, "packed": False})
    waits = [
        g.add_node("allreduce_wait", [first.output], {"shapes": [(300,), (500,)], "bucket": 0}),
        g.add_node("allreduce_wait", [second.output, grads[2]], {"shapes": [(700,)], "bucket": 1}),
    ]
    for w in waits:
        for v in w.outputs:
            g.add_output(v)
    g = passes.schedule(g)
    memory = passes.plan_memory(g)
    return Plan(g, memory, backend="cpu")


def values(rank: int, step: int) -> list[np.ndarray]:
    rng = np.random.default_rng(100 * step + rank)
    return [rng.standard_normal(n).astype(np.float32) for n in (300, 500, 700)]


def main() -> None:
    rank, size = dist.init(timeout=60)
    plan = build()
    for step in range(STEPS):
        outs = plan(*values(rank, step))
        total = dist.sum_across(np.array([float(step + rank)]), "step check")
        assert total[0] == sum(step + r for r in range(size)), total
        for k, out in enumerate(outs):
            want = sum(2.0 * values(r, step)[k].astype(np.float64) for r in range(size)) / size
            np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6, err_msg=f"step {step} part {k}")
    held = collectives.persistent_requests()
    assert held == 2, held
    print(f"rank {rank} ok {held}", flush=True)


if __name__ == "__main__":
    main()
