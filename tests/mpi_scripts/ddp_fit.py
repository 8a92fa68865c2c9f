"""One rank of the fit/evaluate/checkpoint test (tests/test_distributed_mpi.py).

    mpiexec -n 2 python ddp_fit.py PHASE OUT_DIR

PHASE ``full`` fits 2 epochs; ``first`` fits 1 epoch and saves OUT_DIR/ckpt.gcc (rank 0 writes);
``resume`` loads it on every rank and fits the second epoch. Each rank's parameters go to
OUT_DIR/PHASE_rank<r>.npz; progress lines (fit's, to stdout) and the reduced accuracy are printed.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import ddp_common as common  # noqa: E402

import graphc.distributed as dist  # noqa: E402
from graphc.data import DataLoader, DistributedSampler  # noqa: E402
from graphc.training import evaluate, fit  # noqa: E402


def main() -> None:
    phase, out = sys.argv[1], pathlib.Path(sys.argv[2])
    rank, _ = dist.init(timeout=60)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((72, common.N_IN)).astype(np.float32)
    y = rng.integers(0, common.N_OUT, 72).astype(np.int64)
    train = DataLoader((x[:64], y[:64]), common.BATCH, shuffle=True, seed=7, sampler=DistributedSampler())
    test = DataLoader((x[64:], y[64:]), 2, sampler=DistributedSampler())
    model = common.model()
    step = common.compile_step(model, "adam", *train.example_batch(), backend="cpu", distributed=True)
    ckpt = out / "ckpt.gcc"
    if phase == "resume":
        dist.load_checkpoint(ckpt, step, loader=train)
    epochs = 2 if phase == "full" else 1
    history = fit(step, train, epochs=epochs, eval_loader=test, log_every=1, file=sys.stdout)
    if phase == "first":
        dist.save_checkpoint(ckpt, step, loader=train)
    metrics = evaluate(step, test)
    print(f"rank {rank}: accuracy {metrics['accuracy']:.4f} over {metrics['samples']} samples", flush=True)
    print(f"rank {rank}: epoch loss {history[-1]['loss']:.6f}", flush=True)
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    np.savez(out / f"{phase}_rank{rank}.npz", **state)


if __name__ == "__main__":
    main()
