"""ddp_mlp_train: a data-parallel MLP train step on 2 ranks, graphc (MPI) against PyTorch DDP (gloo).

    python benchmarks/ddp_mlp_train.py [--ranks 2] [--steps 30] [--quick]   # starts itself under mpiexec

A suite workload (custom: it times itself). benchmarks/mlp_train.py's network (examples/mlp.py
at 784-512-512-10, cross-entropy, Adam lr 1e-3) with a batch of 128 per rank, one thread per
rank (numba, torch, BLAS). graphc: ``compile_train(..., distributed=True)``: gradients averaged
in buckets of ``BUCKET_BYTES`` by nonblocking MPI allreduces inside the compiled step, each
started right after its bucket's last gradient. PyTorch: ``DistributedDataParallel`` over the
gloo backend (file-store rendezvous in a folder rank 0 names over MPI; nothing leaves the
machine), the same bucket size. Timing: blocks of steps between barriers, round-robin between
the engines; a block's time is the slowest rank's; the median over ``repeat`` blocks.

Agreement: both start from the same weights and run the same ``CHECK_STEPS`` steps on the same
per-rank batches; their losses after those steps (averaged over the ranks) must agree within
``LOSS_RTOL`` (relative), and their parameters within ``PARAM_ATOL``: float32 sums in different
orders, nothing more.

Hidden allreduce time (graphc): ``graphc.kernels.collectives.set_profile`` counts the seconds
the kernels block on MPI. A profiled run of the normal step gives the exposed time (what the
waits block); a profiled run with ``serialize=True``, where each start waits for its own sum at
once, gives the whole allreduce time with nothing overlapping it (the two alternate, block by
block, and a step's figure is the ranks' mean). Hidden share = 1 - exposed / whole, from the
medians over the steps (``allreduce_hidden_share``) and from the minima
(``allreduce_hidden_share_best``: the least disturbed steps; the blocked time includes waiting
for the slower rank, which on a busy machine can dwarf the sum itself).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mpi_launch import relaunch, run_json, under_mpiexec, write_json  # noqa: E402

WHAT = "MLP 784-512-512-10 Adam, batch 128 per rank, 2 ranks x 1 thread: graphc MPI vs torch DDP gloo"
PEERS = ("torch DDP gloo",)
TARGETS = [("graphc / torch DDP gloo", "<= 1")]  # median step time
RANKS = 2
BATCH = 128  # per rank
SIZES = (784, 512, 512, 10)
QUICK_SIZES = (64, 32, 10)
BUCKET_BYTES = 1 << 20  # per bucket, both engines (torch: bucket_cap_mb=1)
CHECK_STEPS = 5
LOSS_RTOL = 1e-4
# Adam moves a parameter by up to lr (1e-3) a step whatever its gradient's size, so float32
# rounding in a near-zero gradient shows up at lr scale: measured at most 1.1e-5 after 5 steps.
PARAM_ATOL = 1e-4


def _batches(rank: int, steps: int, sizes: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(100 + rank)
    return [
        (
            rng.standard_normal((BATCH, sizes[0]), dtype=np.float32),
            rng.integers(0, sizes[-1], BATCH).astype(np.int64),
        )
        for _ in range(steps)
    ]


def _blocks(engines: dict, batches, repeat: int, warmup: int, min_time: float, comm) -> dict[str, list]:
    """Per engine, seconds per step in each of ``repeat`` blocks (the slowest rank's)."""
    from mpi4py import MPI

    numbers = {}
    for name, step in engines.items():
        comm.Barrier()
        t0 = time.perf_counter()
        for k in range(max(1, warmup)):
            step(*batches[k % len(batches)])
        t = comm.allreduce((time.perf_counter() - t0) / max(1, warmup), op=MPI.MAX)
        numbers[name] = max(1, min(200, math.ceil(min_time / max(t, 1e-6)))) if min_time > 0 else 1
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeat):
        for name, step in engines.items():
            comm.Barrier()
            t0 = time.perf_counter()
            for k in range(numbers[name]):
                step(*batches[k % len(batches)])
            times[name].append((time.perf_counter() - t0) / numbers[name])
    out = {}
    for name, t in times.items():
        mine = np.array(t)
        comm.Allreduce(MPI.IN_PLACE, mine, op=MPI.MAX)
        out[name] = mine.tolist()
    return out


def _blocked_per_step(step, batches, repeat: int, comm) -> dict[str, list[float]]:
    """Seconds each step blocks on MPI (the ranks' mean), normal ("exposed") and serialized
    ("whole") steps in alternating blocks of ``len(batches)`` steps."""
    from mpi4py import MPI

    from graphc.kernels import collectives

    out: dict[str, list[float]] = {"exposed": [], "whole": []}
    for _ in range(repeat):
        for kind in out:
            comm.Barrier()
            for x, y in batches:
                collectives.set_profile(True, serialize=kind == "whole")
                try:
                    step(x, y)
                    out[kind].append(collectives.profile()["blocked_s"])
                finally:
                    collectives.set_profile(False)
    for kind, samples in out.items():
        mine = np.array(samples)
        comm.Allreduce(MPI.IN_PLACE, mine, op=MPI.SUM)
        out[kind] = (mine / comm.Get_size()).tolist()
    return out


def _torch_ddp(rank: int, size: int, weights: dict, sizes: tuple[int, ...], store: str):
    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel

    from graphc.modelfile import import_file

    mlp = import_file(Path(__file__).resolve().parents[1] / "examples" / "mlp.py")
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    twin = mlp.build(torch.nn, torch.nn.functional, sizes)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    ddp = DistributedDataParallel(twin, bucket_cap_mb=BUCKET_BYTES / (1 << 20))
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-3)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(ddp(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return float(loss.detach())

    return twin, step


def run_ranks(quick: bool, repeat: int, warmup: int, min_time: float) -> dict:
    """On every rank of the MPI job: check agreement, time both engines, profile the overlap."""
    from mpi4py import MPI

    import graphc.distributed as dist
    from graphc import functional as F
    from graphc import nn, optim
    from graphc.modelfile import import_file
    from graphc.training import compile_train

    mlp = import_file(Path(__file__).resolve().parents[1] / "examples" / "mlp.py")
    rank, size = dist.init()
    comm = MPI.COMM_WORLD
    sizes = QUICK_SIZES if quick else SIZES
    batches = _batches(rank, max(CHECK_STEPS, 8), sizes)

    nn.init.manual_seed(0)
    net = mlp.build(nn, F, sizes)
    weights = {k: np.array(v, copy=True) for k, v in net.state_dict().items()}
    t0 = time.perf_counter()
    step = compile_train(
        net, F.cross_entropy, optim.Adam(lr=1e-3), *batches[0], distributed=True, bucket_bytes=BUCKET_BYTES
    )
    compile_s = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    buckets = sum(n.op == "allreduce_start" for n in step.plan.graph.nodes)
    store = comm.bcast(tempfile.mkdtemp(prefix="graphc-ddp-") + "/store" if rank == 0 else None, root=0)
    twin, torch_step = _torch_ddp(rank, size, weights, sizes, store)

    # Agreement: CHECK_STEPS steps from the same weights on the same batches.
    g_losses = [float(step(*batches[k])) for k in range(CHECK_STEPS)]
    t_losses = [torch_step(*batches[k]) for k in range(CHECK_STEPS)]
    g_loss = comm.allreduce(g_losses[-1], op=MPI.SUM) / size
    t_loss = comm.allreduce(t_losses[-1], op=MPI.SUM) / size
    ours = net.state_dict()
    param_diff = max(
        float(np.max(np.abs(np.asarray(ours[k]) - v.detach().numpy()))) for k, v in twin.state_dict().items()
    )
    param_diff = comm.allreduce(param_diff, op=MPI.MAX)

    times = _blocks({"graphc": step, "torch DDP gloo": torch_step}, batches, repeat, warmup, min_time, comm)
    profile_repeat = max(1, min(repeat, 5))
    blocked = _blocked_per_step(step, batches, profile_repeat, comm)
    serial = _blocks({"serialized": _serialized(step)}, batches, profile_repeat, 1, 0.0, comm)["serialized"]

    import torch.distributed as tdist

    tdist.destroy_process_group()
    return {
        "ranks": size,
        "sizes": list(sizes),
        "buckets": int(buckets),
        "compile_s": compile_s,
        "graphc_loss": g_loss,
        "torch_loss": t_loss,
        "param_diff": param_diff,
        "times": times,
        "exposed_s": statistics.median(blocked["exposed"]),
        "whole_s": statistics.median(blocked["whole"]),
        "exposed_min_s": min(blocked["exposed"]),
        "whole_min_s": min(blocked["whole"]),
        "serialized_step_s": statistics.median(serial),
    }


def _serialized(step):
    """``step`` run with every allreduce waited for at its start (no overlap)."""
    from graphc.kernels import collectives

    def run(x: np.ndarray, y: np.ndarray) -> None:
        collectives.set_profile(True, serialize=True)
        try:
            step(x, y)
        finally:
            collectives.set_profile(False)

    return run


def _engine(seconds: list[float]) -> dict:
    ms = [1e3 * s for s in seconds]
    return {
        "status": "ok",
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "per_round_ms": ms,  # blocks of the same round ran back to back: the suite's paired ratio
    }


def _hidden(exposed: float, whole: float) -> float:
    return min(1.0, max(0.0, 1.0 - exposed / whole)) if whole > 0 else 0.0


def to_case(raw: dict) -> dict:
    """The suite case (the custom-workload protocol) from ``run_ranks``'s results."""
    ours, peer = _engine(raw["times"]["graphc"]), _engine(raw["times"]["torch DDP gloo"])
    loss_diff = abs(raw["graphc_loss"] - raw["torch_loss"])
    agrees = loss_diff <= LOSS_RTOL * max(1.0, abs(raw["torch_loss"])) and raw["param_diff"] <= PARAM_ATOL
    ours["agreement"] = {
        "torch DDP gloo": f"loss after {CHECK_STEPS} steps {raw['graphc_loss']:.6f} vs "
        f"{raw['torch_loss']:.6f} (diff {loss_diff:.1e}), params max abs diff {raw['param_diff']:.1e}"
    }
    if not agrees:
        ours["agrees"] = False
    whole, exposed = raw["whole_s"], raw["exposed_s"]
    hidden = _hidden(exposed, whole)
    best = _hidden(raw.get("exposed_min_s", exposed), raw.get("whole_min_s", whole))
    return {
        "case": f"{'-'.join(map(str, raw['sizes']))} x{raw['ranks']}",
        "engines": {"graphc": ours, "torch DDP gloo": peer},
        "ratios": {"graphc / torch DDP gloo": ours["median_ms"] / peer["median_ms"]},
        "extra": {
            "compile_s": raw["compile_s"],
            "buckets": raw["buckets"],
            "allreduce_ms_per_step": 1e3 * whole,
            "allreduce_exposed_ms_per_step": 1e3 * exposed,
            "allreduce_hidden_share_best": best,
            "allreduce_hidden_share": hidden,
            "graphc_serialized_step_ms": 1e3 * raw["serialized_step_s"],
        },
    }


def _argv(opts: dict) -> list[str]:
    quick = bool(opts.get("quick"))
    return [
        "--repeat",
        str(2 if quick else max(1, int(opts.get("repeat", 10)))),
        "--warmup",
        str(1 if quick else max(1, int(opts.get("warmup", 3)))),
        "--min-time",
        str(0.0 if quick else float(opts.get("min_time", 0.1))),
        *(["--quick"] if quick else []),
    ]


def measure(opts: dict) -> dict:
    """The suite's entry: run the MPI job on 2 ranks (1 thread each); one case."""
    log = opts.get("log") or (lambda line: None)
    log(f"ddp_mlp_train: mpiexec -n {RANKS}{' (quick)' if opts.get('quick') else ''}")
    raw = run_json(__file__, RANKS, _argv(opts), timeout=300 if opts.get("quick") else 1800)
    return {
        "cases": [to_case(raw)],
        "notes": [
            f"{raw['ranks']} ranks x 1 thread on this machine, batch {BATCH} per rank, buckets of "
            f"{BUCKET_BYTES >> 20} MiB (graphc: {raw['buckets']}); agreement: loss after {CHECK_STEPS} steps "
            f"within {LOSS_RTOL:g} relative, parameters within {PARAM_ATOL:g}",
            "allreduce_hidden_share = 1 - (seconds the waits block) / (seconds blocked when each start "
            "waits for its own sum at once); graphc.kernels.collectives.set_profile; blocked time includes "
            "waiting for the slower rank",
            "opts threads is not used: each rank runs 1 thread (2 ranks)",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: relaunch under mpiexec if needed, then check and time both engines on every rank."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=RANKS)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="a tiny MLP, two rounds")
    parser.add_argument("--json", help="rank 0 writes its results here (the suite's measure())")
    args = parser.parse_args(argv)
    if not under_mpiexec():
        return relaunch(__file__, args.ranks, sys.argv[1:] if argv is None else argv)
    raw = run_ranks(args.quick, args.repeat, args.warmup, args.min_time)
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() != 0:
        return 0
    write_json(args.json, raw)
    case = to_case(raw)
    if not args.json:
        g, t, x = case["engines"]["graphc"], case["engines"]["torch DDP gloo"], case["extra"]
        print(
            f"ddp_mlp_train: MLP {case['case']} ranks, Adam, batch {BATCH} per rank, {x['buckets']} buckets"
        )
        print(
            f"  agreement: {g['agreement']['torch DDP gloo']} ({'ok' if g.get('agrees', True) else 'DIFFER'})"
        )
        print(
            f"  median step: graphc {g['median_ms']:.2f} ms, torch DDP (gloo) {t['median_ms']:.2f} ms, "
            f"ratio {case['ratios']['graphc / torch DDP gloo']:.2f}"
        )
        print(
            f"  allreduce per step {x['allreduce_ms_per_step']:.2f} ms, exposed "
            f"{x['allreduce_exposed_ms_per_step']:.2f} ms, hidden {100 * x['allreduce_hidden_share']:.0f}% "
            f"(best steps {100 * x['allreduce_hidden_share_best']:.0f}%); "
            f"step with no overlap {x['graphc_serialized_step_ms']:.2f} ms"
        )
    return 0 if case["engines"]["graphc"].get("agrees", True) else 2


if __name__ == "__main__":
    sys.exit(main())
