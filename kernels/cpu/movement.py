"""CPU generators of the movement ops: transpose, slice and pad."""

from __future__ import annotations

from graphc.ir import Node

from .loops import MIN_PARALLEL_TRIPS, numel, use_parallel
from .source import Source, literal


# ---------------------------------------------------------------- movement
def transpose_source(node: Node) -> str:
    """out = x.transpose(perm); runs of input axes that stay adjacent are coalesced."""
    x = node.inputs[0]
    perm = [p for p in node.attrs["perm"] if x.shape[p] != 1]
    runs: list[list[int]] = []
    for p in perm:
        if runs and runs[-1][-1] + 1 == p:
            runs[-1].append(p)
        else:
            runs.append([p])
    if not runs:
        runs = [[]]
    in_order = sorted(range(len(runs)), key=lambda r: runs[r][0] if runs[r] else 0)
    lines = []
    for r, axes in enumerate(runs):
        lines.append(f"n{r} = " + (" * ".join(f"a0.shape[{d}]" for d in axes) or "1"))
    lines.append("x = a0.reshape((" + ", ".join(f"n{r}" for r in in_order) + ",))")
    lines.append("o = a1.reshape((" + ", ".join(f"n{r}" for r in range(len(runs))) + ",))")
    q, last = in_order[-1], len(runs) - 1  # the input's innermost run, the output's
    if q != last:
        loops, par = _blocked_loops(runs, in_order, q, last, x.type.numel, x.shape)
        lines += loops
    else:
        outer = numel([x.shape[d] for d in runs[0]]) if runs else 1
        par = use_parallel(x.type.numel, outer)
        ind = ""
        for r in range(len(runs)):
            lines.append(f"{ind}for i{r} in {'prange' if par and r == 0 else 'range'}(n{r}):")
            ind += "    "
        oidx = ", ".join(f"i{r}" for r in range(len(runs)))
        xidx = ", ".join(f"i{r}" for r in in_order)
        lines.append(f"{ind}o[{oidx}] = x[{xidx}]")
    return Source(f"transpose {tuple(node.attrs['perm'])}").render(2, lines, par)


# A transpose that moves the input's innermost axis reads it with a stride: the plain loop nest
# touches a new cache line for every element it reads (256x1024 float32: ~9 GB/s here). Tiles of
# TRANSPOSE_BLOCK x TRANSPOSE_BLOCK elements keep the tile's lines in L1 for its reads and writes.
# Measured here (256x1024 float32, hot, interleaved, 600 rounds): the plain nest 206 us (minimum),
# 16x16 tiles 146-156 us, 32x32 tiles 143 us with contiguous loads innermost (1 KiB store
# stride), 173 us with contiguous stores innermost (4 KiB load stride); a plain copy: 33 us. Later,
# 300 rounds, the tile order chosen by stride: 256x1024 77 us hot, 141 us cold (the plain nest 100
# and 172), 1024x256 76 and 130 us (132 and 194).
TRANSPOSE_BLOCK = 32


def _blocked_loops(
    runs: list[list[int]], in_order: list[int], q: int, last: int, elements: int, shape: tuple
) -> tuple[list[str], bool]:
    """The loop nest (and whether it uses prange) of a transpose whose input's innermost run ``q``
    is not the output's innermost ``last``: the other runs outermost (output order), then blocks
    of ``q`` and ``last`` (the earlier in output order outer), then the tile (contiguous loads or
    stores innermost, whichever leaves the shorter stride to the other side; the tile stays in L1)."""
    b = TRANSPOSE_BLOCK
    first, second = sorted((q, last))
    others = [r for r in range(len(runs)) if r not in (q, last)]
    blocks = [first, second]
    trips = [numel([shape[d] for d in runs[r]]) for r in others]
    trips.append(-(-numel([shape[d] for d in runs[first]]) // b))
    # prange on the outermost loop with enough trips to split (an outer run, else the blocks).
    par_at = next((k for k, t in enumerate(trips) if t >= MIN_PARALLEL_TRIPS), None)
    par = par_at is not None and use_parallel(elements, trips[par_at])
    lines: list[str] = []
    ind = ""
    for k, r in enumerate(others):
        lines.append(f"{ind}for i{r} in {'prange' if par and k == par_at else 'range'}(n{r}):")
        ind += "    "
    for k, r in enumerate(blocks):
        loop = "prange" if par and k == 0 and par_at == len(others) else "range"
        lines.append(f"{ind}for c{r} in {loop}((n{r} + {b - 1}) // {b}):")
        ind += "    "
    # The tile's inner loop runs along the axis whose strided side has the shorter stride: a stride
    # of 4 KiB puts the tile's lines in one L1 set (1024x256 float32 with loads innermost: 400 us).
    size = [numel([shape[d] for d in run]) for run in runs]
    store_stride = numel(size[q + 1 :])  # of the output, along q
    load_stride = numel([size[r] for r in in_order[in_order.index(last) + 1 :]])  # of the input
    for r in (last, q) if store_stride <= load_stride else (q, last):
        lines.append(f"{ind}for i{r} in range(c{r} * {b}, min(c{r} * {b} + {b}, n{r})):")
        ind += "    "
    oidx = ", ".join(f"i{r}" for r in range(len(runs)))
    xidx = ", ".join(f"i{r}" for r in in_order)
    lines.append(f"{ind}o[{oidx}] = x[{xidx}]")
    return lines, par


def _nest(rank: int, bound: str, par: bool, lines: list[str]) -> str:
    ind = ""
    for d in range(rank):
        lines.append(f"{ind}for i{d} in {'prange' if par and d == 0 else 'range'}({bound}.shape[{d}]):")
        ind += "    "
    return ind


def slice_source(node: Node) -> str:
    """out[i] = x[start + step * i] per axis (starts and steps baked in)."""
    out = node.outputs[0]
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    rank = len(out.shape)
    lines: list[str] = []
    if rank == 0:
        lines.append("a1.reshape((1,))[0] = a0.reshape((1,))[0]")
        return Source("slice").render(2, lines, False)
    par = use_parallel(out.type.numel, out.shape[0])
    ind = _nest(rank, "a1", par, lines)
    xidx = ", ".join(
        f"i{d}" if (a, s) == (0, 1) else f"{a} + {s} * i{d}" if s != 1 else f"{a} + i{d}"
        for d, (a, s) in enumerate(zip(starts, steps))
    )
    lines.append(f"{ind}a1[{', '.join(f'i{d}' for d in range(rank))}] = a0[{xidx}]")
    return Source(f"slice {tuple(starts)} step {tuple(steps)}").render(2, lines, par)


def pad_source(node: Node) -> str:
    """Fill out with the pad value, then copy x to its offset (pads and value baked in)."""
    x, out = node.inputs[0], node.outputs[0]
    pads = node.attrs["pads"]
    rank = len(x.shape)
    lines = ["of = a1.reshape((a1.size,))", "for k in range(of.shape[0]):"]
    lines.append(f"    of[k] = {literal(node.attrs['value'], out.dtype)}")
    if rank == 0:
        lines.append("a1.reshape((1,))[0] = a0.reshape((1,))[0]")
        return Source("pad").render(2, lines, False)
    par = use_parallel(out.type.numel, x.shape[0])
    ind = _nest(rank, "a0", par, lines)
    oidx = ", ".join(f"{lo} + i{d}" if lo else f"i{d}" for d, (lo, _) in enumerate(pads))
    lines.append(f"{ind}a1[{oidx}] = a0[{', '.join(f'i{d}' for d in range(rank))}]")
    return Source(f"pad {tuple(tuple(p) for p in pads)}").render(2, lines, par)
