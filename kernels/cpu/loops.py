"""Loop structure shared by the CPU generators: bodies, parallel thresholds, the loop layout.

Generated source never mentions value names: kernel arguments are ``a0..aN`` (inputs, then
outputs), temporaries ``t0..`` in emission order, so structurally identical bodies produce the
same text and share one cached kernel. Sizes are read from the argument arrays at run time
wherever an array carries them, so one kernel serves every shape with the same broadcast
pattern (fewer compiles); only attributes (slice starts, pad widths, constants) are baked in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from graphc.ir import Node, Value
from graphc.ir.views import c_strides
from graphc.kernels.scalar_ops import Unsupported

from .source import NP_TYPE, Names, Source

# Above this many elements a kernel loops with prange (parallel=True). Below it, handing work
# to the thread pool costs more than it saves, and parallel=True roughly doubles the compile
# time. (It was 1 << 20 while OpenBLAS's spinning threads held a core between GEMMs: see blas.)
PARALLEL_THRESHOLD = 1 << 16
# prange over fewer trips than this leaves threads idle (and a 1-trip prange cost 8 ms here).
MIN_PARALLEL_TRIPS = 4
# A loop whose ops cost at least this much work (elements times ``op_cost`` per element, about
# one unit per simple op) goes prange below PARALLEL_THRESHOLD elements. Measured here (2 cores,
# TBB layer, other jobs running) on an LSTM's cell loops, alone and interleaved (minimum of 9
# rounds): the gate loop (3 exp, 2 tanh, 3 divisions: 102 units) at 32x256 ran 32.7 us on one
# thread, 34.4 us in prange, at 128x256 125 vs 92 us; its gradient (44 units) at 32x256 6.1 vs
# 7.1 us, at 128x256 34 vs 24 us. Inside the training step, whose GEMMs keep the pool's threads
# awake, the gate loop in prange made the lstm_train step (T=64) 2-7% faster in three of four
# interleaved runs: so the gate loop (835k units) goes parallel, the gradient (360k) does not.
PARALLEL_WORK = 1 << 19
# ... but never over fewer elements than this (the hand-off would dominate).
MIN_PARALLEL_ELEMENTS = 1 << 12
# Work per element of an op in a generated loop (``op_cost``): transcendentals are polynomials
# of a dozen or more operations (exp, tanh, erf: kernels/cpu/scalar.py) or libm calls; divisions
# and square roots take several cycles each; everything else about one.
TRANSCENDENTAL_OPS = ("exp", "log", "tanh", "erf", "sin", "cos", "pow")
TRANSCENDENTAL_OPS += ("acos", "asin", "atan", "acosh", "asinh", "atanh")  # libm calls
SLOW_OPS = ("div", "reciprocal", "sqrt", "rsqrt", "fmod", "remainder", "floordiv")
TRANSCENDENTAL_COST = 16
SLOW_COST = 4
# Parallel row reductions split the rows into this many chunks (each with its own scratch rows);
# prange's static schedule hands each thread an equal share.
ROW_CHUNKS = 64


@dataclass
class Body:
    """What a generator compiles: one Value per input argument, nodes in order, one per output."""

    inputs: list[Value]
    nodes: list[Node]
    outputs: list[Value]


def numel(shape: Sequence[int]) -> int:
    """Number of elements of a shape."""
    n = 1
    for d in shape:
        n *= d
    return n


def use_parallel(elements: int, outer: int | None = None, cost: int = 1) -> bool:
    """Whether a kernel over ``elements`` elements (``outer`` trips of its prange loop) should use
    prange; ``cost``: work per element (``op_cost`` summed over the loop's ops), which lets heavy
    loops go parallel over fewer elements than PARALLEL_THRESHOLD."""
    import numba

    if outer is not None and outer < MIN_PARALLEL_TRIPS:
        return False
    if numba.config.NUMBA_NUM_THREADS < 2:
        return False
    if elements > PARALLEL_THRESHOLD:
        return True
    return elements >= MIN_PARALLEL_ELEMENTS and elements * cost >= PARALLEL_WORK


def op_cost(node: Node) -> int:
    """The work per element of an elementwise op in a generated loop (see TRANSCENDENTAL_OPS)."""
    if node.op in TRANSCENDENTAL_OPS:
        return TRANSCENDENTAL_COST
    if node.op in SLOW_OPS:
        return SLOW_COST
    return 0 if node.op in ("const", "broadcast_to", "stop_gradient", "slice", "concat") else 1


# ---------------------------------------------------------------- loop layout
Dims = list[tuple[int | None, int]]  # per own dim: (loop axis, or None for a size-1 dim; size)


def aligned(shape: Sequence[int], full: Sequence[int]) -> Dims:
    """Dims of a value right-aligned to the loop space ``full`` (NumPy broadcasting)."""
    r, rank = len(shape), len(full)
    if r > rank:
        raise Unsupported(f"rank {r} value in a rank {rank} loop")
    dims: Dims = []
    for k, s in enumerate(shape):
        ax = rank - r + k
        if s != 1 and full[ax] != s:
            raise Unsupported(f"size {s} does not match loop size {full[ax]}")
        dims.append((ax if s != 1 else None, s))
    return dims


class Layout:
    """A loop space ``full`` split into row axes (< split) and inner axes, with every array
    (leaf) viewed by a reshape that coalesces adjacent axes sharing one broadcast pattern.

    Axes of size 1 vanish; adjacent axes on one side of the split merge when every leaf either
    varies along both or along neither. Each side has at least one (possibly dummy) group.
    """

    def __init__(
        self,
        full: Sequence[int],
        split: int,
        leaves: dict[object, Dims],
        names: Names,
        inner: bool = False,
        strided: dict[object, Strided] | None = None,
    ) -> None:
        self.full = tuple(full)
        self.leaves = leaves
        self.strided = strided or {}
        self.vary = {}
        for key, dims in leaves.items():
            axes = [ax for ax, s in dims if s != 1]
            if any(ax is None for ax in axes) or axes != sorted(set(axes)):
                raise Unsupported("a value's dims do not map in order onto the loop axes")
            self.vary[key] = set(axes)
        groups: list[list[int]] = []
        sides: list[bool] = []
        last = None
        for a, size in enumerate(self.full):
            if size == 1:
                continue
            side = a >= split
            same = (
                groups
                and sides[-1] == side
                and all((a in v) == (last in v) for v in self.vary.values())
                and all(st.merges(last, a, size) for st in self.strided.values())
            )
            if same:
                groups[-1].append(a)
            else:
                groups.append([a])
                sides.append(side)
            last = a
        if False not in sides:
            groups.insert(0, [])
            sides.insert(0, False)
        if inner and True not in sides:
            groups.append([])
            sides.append(True)
        self.groups = groups
        self.sides = sides
        self.row_groups = [g for g, s in enumerate(sides) if not s]
        self.inner_groups = [g for g, s in enumerate(sides) if s]
        self.size_names = [names("n") for _ in groups]

    def full_on(self, key: object, g: int) -> bool:
        """Whether leaf ``key`` varies along group ``g``."""
        return bool(self.groups[g]) and self.groups[g][0] in self.vary[key]

    def size_lines(self, array_keys: Iterable[object]) -> list[str]:
        """Statements binding each group's size, from an array that spans it (else a literal)."""
        lines = []
        array_keys = list(array_keys)
        for g, axes in enumerate(self.groups):
            expr = str(numel([self.full[a] for a in axes]))
            for key in array_keys:
                if axes and self.full_on(key, g):
                    dims = self.leaves[key]
                    parts = [f"a{key}.shape[{d}]" for d, (ax, s) in enumerate(dims) if s != 1 and ax in axes]
                    expr = " * ".join(parts)
                    break
            lines.append(f"{self.size_names[g]} = {expr}")
        return lines

    def view_shape(self, key: object) -> str:
        """The reshape tuple that views leaf ``key`` over the coalesced groups."""
        parts = [self.size_names[g] if self.full_on(key, g) else "1" for g in range(len(self.groups))]
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"

    def index(self, key: object, ivars: Sequence[str]) -> str:
        """The index of leaf ``key`` at loop indices ``ivars`` (one per group)."""
        return ", ".join(ivars[g] if self.full_on(key, g) else "0" for g in range(len(self.groups)))

    def strided_index(self, key: object, ivars: Sequence[str]) -> str:
        """The flat index of strided leaf ``key`` (``Strided``) at loop indices ``ivars``: its
        offset plus each group's index times the element stride of the group's innermost axis."""
        st = self.strided[key]
        terms = [str(st.offset)] if st.offset else []
        for g, axes in enumerate(self.groups):
            if self.full_on(key, g):
                stride = st.strides[axes[-1]]
                terms.append(ivars[g] if stride == 1 else f"{ivars[g]} * {stride}")
        # Unsigned: numba then adds no negative-index wrap-around, which in a prange body (whose
        # row index LLVM cannot prove non-negative) would keep the inner loop scalar (2x slower).
        return f"np.uint64({' + '.join(terms) or '0'})"

    def flat_index(self, key: object, ivars: Sequence[str]) -> str:
        """The C-order flat index into leaf ``key`` at loop indices ``ivars`` (for rng)."""
        expr = ""
        for g in range(len(self.groups)):
            if self.full_on(key, g):
                expr = ivars[g] if not expr else f"({expr} * {self.size_names[g]} + {ivars[g]})"
        return expr or "0"


@dataclass(frozen=True)
class Strided:
    """A leaf read or written through a flat view of a larger array (a slice of a body input, a
    part of a concat output): the element offset of its first element and, per loop axis it
    varies along, the element stride there."""

    offset: int
    strides: dict[int, int]

    def merges(self, outer: int, inner: int, inner_size: int) -> bool:
        """Whether loop axes ``outer`` and ``inner`` (of ``inner_size``) coalesce for this leaf: it
        varies along neither, or one step of ``outer`` spans exactly the whole ``inner`` axis."""
        if outer not in self.strides and inner not in self.strides:
            return True
        if outer not in self.strides or inner not in self.strides:
            return True  # the broadcast pattern differs: Layout splits the axes anyway
        return self.strides[outer] == self.strides[inner] * inner_size


def slice_leaf(node: Node, full: Sequence[int]) -> tuple[Dims, Strided]:
    """The dims (``aligned`` to loop space ``full``) and flat access of the output of static
    ``slice`` node ``node`` read through its C-contiguous input."""
    shape, dims = node.inputs[0].shape, aligned(node.outputs[0].shape, full)
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    element = c_strides(shape)
    offset = sum(start * e for start, e in zip(starts, element))
    strides = {ax: step * e for (ax, _), step, e in zip(dims, steps, element) if ax is not None}
    return dims, Strided(offset, strides)


def part_leaf(node: Node, part: int, full: Sequence[int]) -> tuple[Dims, Strided]:
    """The dims and flat access of operand ``part`` of ``concat`` node ``node`` written at its place
    of the concat's C-contiguous output."""
    axis, out = node.attrs["axis"], node.outputs[0].shape
    element = c_strides(out)
    dims = aligned(node.inputs[part].shape, full)
    at = sum(v.shape[axis] for v in node.inputs[:part])
    strides = {ax: e for (ax, _), e in zip(dims, element) if ax is not None}
    return dims, Strided(at * element[axis], strides)


def producers(body: Body) -> dict[Value, Node]:
    """Map each node-defined value of the body to its node."""
    return {v: n for n in body.nodes for v in n.outputs}


def arg_index(body: Body) -> dict[Value, int]:
    """Map each input value to its (first) argument index."""
    out: dict[Value, int] = {}
    for k, v in enumerate(body.inputs):
        out.setdefault(v, k)
    return out


def needed_values(targets: Iterable[Value], prod: dict[Value, Node], args: dict[Value, int]) -> set[Value]:
    """Every value the targets depend on (the targets included)."""
    seen: set[Value] = set()
    stack = list(targets)
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if v not in args:
            stack.extend(prod[v].inputs)
    return seen


def _rng_offset_arg(node: Node, args: dict[Value, int]) -> int:
    off = node.inputs[0]
    if off not in args:
        raise Unsupported("rng_uniform offset computed inside the body")
    return args[off]


def _seed(node: Node) -> int:
    return int(node.attrs["seed"]) & 0xFFFFFFFF


def rng_keys(rngs: list[Node], args: dict[Value, int], src: Source, names: Names, lines: list[str]) -> dict:
    """Append the lines computing each rng_uniform node's per-call key; node id -> key name."""
    keys = {}
    for n in rngs:
        src.need("rng")
        keys[id(n)] = names("key")
        lines.append(f"{keys[id(n)]} = _rng_key({_seed(n)}, a{_rng_offset_arg(n, args)}.reshape((1,))[0])")
    return keys


def rng_expr(node: Node, lay: Layout, ivars: Sequence[str], keys: dict) -> str:
    """An rng_uniform element at loop indices ``ivars`` (its flat index in its own shape)."""
    flat = lay.flat_index(("rng", id(node)), ivars)
    return f"{NP_TYPE[node.outputs[0].dtype]}(_rng_u({keys[id(node)]}, {flat}))"
