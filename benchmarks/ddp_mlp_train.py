"""ddp_mlp_train: a data-parallel MLP train step, graphc (MPI) against PyTorch DDP (gloo), on N ranks.

    python benchmarks/ddp_mlp_train.py [--ranks 2] [--steps 30]   # starts itself under mpiexec

benchmarks/mlp_train.py's model (examples/mlp.py at 784-512-512-10, cross-entropy, Adam lr 1e-3)
with a batch of 128 per rank. graphc: ``compile_train(..., distributed=True)`` (gradients
averaged in buckets by nonblocking MPI allreduces inside the compiled step). PyTorch:
``DistributedDataParallel`` over the gloo backend, each rank started by the same mpiexec (the
TCP rendezvous port comes from rank 0 over MPI). Both start from the same weights; the first
step's losses are compared, then the median step time over ``--steps`` steps (one numba, torch
and BLAS thread per rank) is printed by rank 0.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mpi_launch import relaunch, under_mpiexec  # noqa: E402

BATCH = 128  # per rank
SIZES = (784, 512, 512, 10)


def _batches(rank: int, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(100 + rank)
    return [
        (
            rng.standard_normal((BATCH, SIZES[0]), dtype=np.float32),
            rng.integers(0, SIZES[-1], BATCH).astype(np.int64),
        )
        for _ in range(steps)
    ]


def _median_step(run, batches, barrier) -> tuple[float, float]:
    first = run(*batches[0])
    times = []
    for x, y in batches[1:]:
        barrier()
        t0 = time.perf_counter()
        run(x, y)
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Command line: relaunch under mpiexec if needed, then time both engines on every rank."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    if not under_mpiexec():
        return relaunch(__file__, args.ranks, sys.argv[1:] if argv is None else argv)
    from mpi4py import MPI

    import graphc.distributed as dist
    from graphc import functional as F
    from graphc import nn, optim
    from graphc.modelfile import import_file
    from graphc.training import compile_train

    mlp = import_file(Path(__file__).resolve().parents[1] / "examples" / "mlp.py")
    rank, size = dist.init()
    comm = MPI.COMM_WORLD
    batches = _batches(rank, args.steps + 1)

    nn.init.manual_seed(0)
    net = mlp.build(nn, F, SIZES)
    weights = {k: np.array(v, copy=True) for k, v in net.state_dict().items()}
    step = compile_train(net, F.cross_entropy, optim.Adam(lr=1e-3), *batches[0], distributed=True)
    g_loss, g_time = _median_step(step, batches, comm.Barrier)

    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    port = np.zeros(1, np.int64)
    if rank == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port[0] = s.getsockname()[1]
    comm.Bcast(port, root=0)
    tdist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{int(port[0])}", rank=rank, world_size=size
    )
    twin = mlp.build(torch.nn, torch.nn.functional, SIZES)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    ddp = DistributedDataParallel(twin)
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)

    def torch_step(x: np.ndarray, y: np.ndarray) -> float:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(ddp(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return float(loss.detach())

    t_loss, t_time = _median_step(torch_step, batches, tdist.barrier)
    tdist.destroy_process_group()
    agree = abs(g_loss - t_loss) <= 1e-3 * max(1.0, abs(t_loss))
    if rank == 0:
        print(f"ddp_mlp_train: MLP {'-'.join(map(str, SIZES))}, Adam, batch {BATCH} per rank, {size} ranks")
        verdict = "agree" if agree else "DIFFER"
        print(f"  first-step loss: graphc {g_loss:.5f}, torch DDP {t_loss:.5f} ({verdict})")
        print(
            f"  median step: graphc {g_time * 1e3:.2f} ms, torch DDP (gloo) {t_time * 1e3:.2f} ms, "
            f"ratio {g_time / t_time:.2f}"
        )
    return 0 if agree else 2


if __name__ == "__main__":
    sys.exit(main())
