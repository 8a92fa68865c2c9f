"""One rank of the data-parallel equivalence test (tests/test_distributed_mpi.py).

    mpiexec -n 2 python ddp_equivalence.py OPTIMIZER OUT_DIR [--backend cpu] [--bucket-bytes N]

Every rank builds the same small MLP (same seed), takes its slice of each global batch (rank r:
rows r*B .. (r+1)*B of 2B rows), runs STEPS distributed steps and writes its final parameters,
and the loss of each step, to OUT_DIR/rank<r>.npz.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import ddp_common as common  # noqa: E402

import graphc.distributed as dist  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("optimizer", choices=sorted(common.OPTIMIZERS))
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--bucket-bytes", type=int, default=None)
    args = parser.parse_args()
    rank, size = dist.init(timeout=60)
    model = common.model()
    batches = common.batches(size)
    b = common.BATCH
    x0, y0 = batches[0]
    step = common.compile_step(
        model,
        args.optimizer,
        x0[rank * b : (rank + 1) * b],
        y0[rank * b : (rank + 1) * b],
        backend=args.backend,
        distributed=True,
        bucket_bytes=args.bucket_bytes,
    )
    losses = [step(x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b]) for x, y in batches]
    buckets = sum(n.op == "allreduce_start" for n in step.plan.graph.nodes)
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    np.savez(args.out / f"rank{rank}.npz", losses=np.array(losses), buckets=buckets, **state)


if __name__ == "__main__":
    main()
