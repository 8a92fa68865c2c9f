"""Data-parallel training over MPI: every rank runs the same compiled step on its own shard.

    import graphc.distributed as dist
    dist.init()                                   # mpiexec -n N python train.py
    dist.broadcast_parameters(model)              # rank 0's initial values everywhere
    step = graphc.compile_train(model, loss, opt, x, y, distributed=True)
    loader = graphc.DataLoader((X, Y), 32, shuffle=True, sampler=graphc.data.DistributedSampler())

``compile_train(..., distributed=True)`` adds gradient allreduce-average nodes to the train graph
(``buckets``), checks that every rank has the same model (``consistency``), and schedules each
bucket's nonblocking sum to overlap the rest of the backward pass (an optional progress thread
moves pending sums forward: ``init(progress=True)``, ``$GRAPHC_DIST_PROGRESS=1``). Waits have a
deadline (``init(timeout=)``, ``$GRAPHC_DIST_TIMEOUT``); an uncaught error on one rank aborts the job.
Checkpoints: ``save_checkpoint`` writes on rank 0, ``load_checkpoint`` reads on every rank.
"""

from .buckets import DEFAULT_BUCKET_BYTES, add_gradient_allreduce, plan_buckets
from .checkpoint import load_checkpoint, save_checkpoint
from .comm import barrier, broadcast_bytes, init, is_initialized, rank, sum_across, world_size
from .consistency import broadcast_parameters, check_same_model, check_same_text

__all__ = [
    "DEFAULT_BUCKET_BYTES",
    "add_gradient_allreduce",
    "barrier",
    "broadcast_bytes",
    "broadcast_parameters",
    "check_same_model",
    "check_same_text",
    "init",
    "is_initialized",
    "load_checkpoint",
    "plan_buckets",
    "rank",
    "save_checkpoint",
    "sum_across",
    "world_size",
]
