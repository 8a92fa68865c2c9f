"""One rank of the fault tests (tests/test_distributed_mpi.py): rank 1 misbehaves, rank 0 must stop.

    mpiexec -n 2 python faults.py MODE

MODE: ``raise`` (rank 1 raises after 3 steps), ``exit`` (rank 1 dies with os._exit after 3
steps), ``kill`` (rank 1 is killed by SIGKILL), ``hang`` (rank 1 stops answering after 3
steps), ``shape`` / ``name`` / ``values`` (rank 1 builds a model that differs in a shape, a
parameter name, or its initial values), ``broadcast`` (rank 1's initial values differ, and
``broadcast_parameters`` makes them rank 0's before compiling: no error).
Each rank prints ``rank R finished`` only if it gets through 20 steps.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import ddp_common as common  # noqa: E402

import graphc.distributed as dist  # noqa: E402
import graphc.nn as nn  # noqa: E402


class Renamed(common.MLP):
    def __init__(self) -> None:
        super().__init__()
        self.other = self.out
        del self.out

    def forward(self, x):
        return self.other(nn.functional.relu(self.hidden(x)))


def build(mode: str, rank: int) -> nn.Module:
    if rank == 1 and mode == "shape":
        nn.init.manual_seed(0)
        net = common.MLP()
        net.hidden = nn.Linear(common.N_IN, common.HIDDEN + 1)
        net.out = nn.Linear(common.HIDDEN + 1, common.N_OUT)
        return net
    if rank == 1 and mode == "name":
        nn.init.manual_seed(0)
        return Renamed()
    return common.model(seed=1 if (rank == 1 and mode in ("values", "broadcast")) else 0)


def main() -> None:
    mode = sys.argv[1]
    rank, size = dist.init()
    net = build(mode, rank)
    if mode == "broadcast":
        dist.broadcast_parameters(net)
    batches = common.batches(size)
    b = common.BATCH
    x0, y0 = batches[0]
    step = common.compile_step(net, "sgd", x0[:b], y0[:b], backend="cpu", distributed=True)
    for k, (x, y) in enumerate(batches):
        if rank == 1 and k == 3:
            if mode == "raise":
                raise RuntimeError("rank 1 fails on purpose")
            if mode == "exit":
                os._exit(3)
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "hang":
                time.sleep(600)
        step(x[rank * b : (rank + 1) * b], y[rank * b : (rank + 1) * b])
    print(f"rank {rank} finished", flush=True)


if __name__ == "__main__":
    main()
