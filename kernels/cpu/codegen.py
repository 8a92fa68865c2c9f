"""Numba source generators of the CPU backend.

One generator covers every elementwise body (a single pointwise/broadcast primitive, a fused
pointwise chain, the epilogue of a fused matmul), one covers row reductions (fused softmax and
layer_norm bodies, sum/max/min over trailing axes), and small ones cover reductions over other
axes and the movement ops (transpose, slice, pad).

Generated source never mentions value names: kernel arguments are ``a0..aN`` (inputs, then
outputs), temporaries ``t0..`` in emission order, so structurally identical bodies produce the
same text and share one cached kernel. Sizes are read from the argument arrays at run time
wherever an array carries them, so one kernel serves every shape with the same broadcast
pattern (fewer compiles); only attributes (slice starts, pad widths, constants) are baked in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from graphc.ir import Node, Value
from graphc.ir.ops import REGISTRY, conv_output_size
from graphc.ir.types import FLOAT_DTYPES
from graphc.kernels.quoting import comment

# Above this many elements a kernel loops with prange (parallel=True). Below it, handing work
# to the thread pool costs more than it saves, and parallel=True roughly doubles the compile
# time. (It was 1 << 20 while OpenBLAS's spinning threads held a core between GEMMs: see blas.)
PARALLEL_THRESHOLD = 1 << 16
# prange over fewer trips than this leaves threads idle (and a 1-trip prange cost 8 ms here).
MIN_PARALLEL_TRIPS = 4
# Parallel row reductions split the rows into this many chunks (each with its own scratch rows);
# prange's static schedule hands each thread an equal share.
ROW_CHUNKS = 64

REDUCTIONS = ("sum", "max", "min")
CHEAP_OPS = ("add", "sub", "mul", "neg", "maximum", "minimum", "broadcast_to", "cast")
ELEMENTWISE_CLASSES = ("pointwise", "broadcast", "source")

NP_TYPE = {"f32": "np.float32", "f64": "np.float64", "i32": "np.int32", "i64": "np.int64", "bool": "np.bool_"}


class Unsupported(Exception):
    """A generator cannot handle this body; the caller falls back to primitive kernels."""


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


def use_parallel(elements: int, outer: int | None = None) -> bool:
    """Whether a kernel over ``elements`` elements (``outer`` trips of its prange loop) should use prange."""
    import numba

    if outer is not None and outer < MIN_PARALLEL_TRIPS:
        return False
    return elements > PARALLEL_THRESHOLD and numba.config.NUMBA_NUM_THREADS > 1


# ---------------------------------------------------------------- module text
_HEADER = "import math\n\nimport numpy as np\nfrom numba import njit, prange\n"


def decorator(parallel: bool, fastmath: str | None = None) -> str:
    """The @njit line of generated kernels (error_model numpy: 1/0 is inf, not an exception)."""
    extra = ", parallel=True" if parallel else ""
    if fastmath:
        extra += f", fastmath={fastmath}"
    return f'@njit(cache=True, nogil=True, error_model="numpy"{extra})'


_ERF_F32 = """
{deco}
def _erf_f32(x):
    # Rational approximation of erf for float32 (the one XLA and Eigen use; |error| < 5e-7).
    # LLVM vectorizes it, where a call to libm's erff keeps the whole loop scalar (about 10x
    # slower on the GELU chain). The clamps keep NaN: a comparison with NaN is false.
    x = x if not (x > np.float32(4.0)) else np.float32(4.0)
    x = x if not (x < np.float32(-4.0)) else np.float32(-4.0)
    x2 = x * x
    p = np.float32(-2.72614225801306e-10)
    p = p * x2 + np.float32(2.77068142495902e-08)
    p = p * x2 + np.float32(-2.10102402082508e-06)
    p = p * x2 + np.float32(-5.69250639462346e-05)
    p = p * x2 + np.float32(-7.34990630326855e-04)
    p = p * x2 + np.float32(-2.95459980854025e-03)
    p = p * x2 + np.float32(-1.60960333262415e-02)
    q = np.float32(-1.45660718464996e-05)
    q = q * x2 + np.float32(-2.13374055278905e-04)
    q = q * x2 + np.float32(-1.68282697438203e-03)
    q = q * x2 + np.float32(-7.37332916720468e-03)
    q = q * x2 + np.float32(-1.42647390514189e-02)
    return x * p / q
"""

# e**c for c in the float32 range: c = n*ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2),
# e**r by Cephes' degree-6 polynomial (relative error ~1e-7); y = e**r, n left for the caller.
_EXP_REDUCED = """
    n = np.floor(c * np.float32(1.44269504) + np.float32(0.5))
    r = c - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = p * (r * r) + r + np.float32(1.0)"""

_EXP_F32 = (
    """
from graphc.kernels.cpu.intrinsics import f32_from_bits


{deco}
def _exp_f32(x):
    # exp for float32 that LLVM vectorizes (libm's expf is a call, which keeps a softmax loop
    # scalar); 2**n built from its exponent bits.
    # Past the float32 range: inf; below the smallest normal (x < -87.34): 0; NaN passes.
    c = x if x < np.float32(88.72283) else np.float32(88.72283)
    c = c if c > np.float32(-87.33654) else np.float32(-87.33654)"""
    + _EXP_REDUCED
    + """
    # 2**n from its exponent bits; n = 128 (one past the largest exponent) as 2**127 * 2.
    top = n > np.float32(127.0)
    m = n - np.float32(1.0) if top else n
    y = y * f32_from_bits(np.int32((np.int32(m) + np.int32(127)) << np.int32(23)))
    y = y * np.float32(2.0) if top else y
    y = y if x <= np.float32(88.72283) else np.float32(np.inf)
    y = y if x > np.float32(-87.33654) else np.float32(0.0)
    return y if x == x else x
"""
)

_EXP_NONPOS_F32 = (
    """
from graphc.kernels.cpu.intrinsics import f32_from_bits


{deco}
def _exp_nonpos_f32(x):
    # _exp_f32 for x <= 0 or NaN (softmax's x - max(x)): 2**n for n in [-126, 0] needs none of
    # the overflow handling, a fifth fewer instructions per element.
    c = x if x > np.float32(-87.33654) else np.float32(-87.33654)"""
    + _EXP_REDUCED
    + """
    y = y * f32_from_bits(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))
    y = y if x > np.float32(-87.33654) else np.float32(0.0)
    return y if x == x else x
"""
)

# The counter-based RNG of kernels/reference (lowbias32), in uint64 with explicit masks so the
# arithmetic is exactly the reference's uint32 arithmetic.
_RNG = """
{deco}
def _hash32(x):
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & np.uint64(0xFFFFFFFF)
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & np.uint64(0xFFFFFFFF)
    return x ^ (x >> np.uint64(16))


{deco}
def _rng_key(seed, offset):
    u = np.uint64(offset)
    lo = u & np.uint64(0xFFFFFFFF)
    hi = (u >> np.uint64(32)) & np.uint64(0xFFFFFFFF)
    return _hash32(np.uint64(seed) ^ _hash32(lo ^ _hash32(hi)))


{deco}
def _rng_u(key, i):
    bits = _hash32((np.uint64(i) & np.uint64(0xFFFFFFFF)) ^ key)
    return np.float64(bits >> np.uint64(8)) * (1.0 / 16777216.0)
"""

_IDENTITY = {
    ("sum", "float"): "{T}(0.0)",
    ("max", "float"): "{T}(-np.inf)",
    ("min", "float"): "{T}(np.inf)",
    ("sum", "int"): "np.int64(0)",
    ("max", "int"): "{T}({lo})",
    ("min", "int"): "{T}({hi})",
    ("sum", "bool"): "False",
    ("max", "bool"): "False",
    ("min", "bool"): "True",
}


def _family(dtype: str) -> str:
    return "float" if dtype in ("f32", "f64") else "bool" if dtype == "bool" else "int"


def identity(op: str, dtype: str) -> str:
    """The start value of a sum/max/min accumulation, as source."""
    lo, hi = {"i32": (-(2**31), 2**31 - 1), "i64": (-(2**63), 2**63 - 1)}.get(dtype, (0, 0))
    return _IDENTITY[(op, _family(dtype))].format(T=NP_TYPE[dtype], lo=lo, hi=hi)


def combine(op: str, dtype: str, acc: str, v: str) -> str:
    """Source of one accumulation step ``acc op= v`` with NumPy's NaN propagation."""
    fam = _family(dtype)
    if fam == "bool":
        return f"({acc} and {v})" if op == "min" else f"({acc} or {v})"
    if op == "sum":
        return f"({acc} + {v})"
    cmp = ">" if op == "max" else "<"
    if fam == "float":
        # Once acc is NaN no comparison is true, so it stays NaN; a NaN v is taken.
        return f"({v} if ({v} {cmp} {acc} or {v} != {v}) else {acc})"
    return f"({v} if {v} {cmp} {acc} else {acc})"


def _float_sum_source(dtype: str) -> str:
    # reassoc lets LLVM vectorize the sum (8 lanes x 4 interleaved partial sums, a fixed order
    # like NumPy's pairwise sum); it licenses reordering only these additions, NaN and inf
    # behave as without it. A strict left-to-right sum is 4x slower. It lives in its own
    # function because fastmath flags apply per function.
    deco = decorator(False, '{"reassoc"}')
    return (
        f"\n{deco}\ndef _sum_{dtype}(b):\n    acc = {NP_TYPE[dtype]}(0.0)\n"
        f"    for j in range(b.shape[0]):\n        acc += b[j]\n    return acc\n"
    )


def reduce_lines(op: str, dtype: str, result: str, array: str, src: Source, names: Names) -> list[str]:
    """Statements setting ``result`` to op (sum/max/min) over the 1-D ``array`` expression.

    Only the float sum calls a helper function; the rest are inlined (one numba function less to
    compile; the float max/min through an intrinsic).
    """
    fam = _family(dtype)
    if op == "sum" and fam == "float":
        return [f"{result} = {src.need(f'sum_{dtype}')}({array})"]
    b, j = names("b"), names("j")
    lines = [f"{b} = {array}", f"{result} = {identity(op, dtype)}"]
    if fam == "float":
        extremum = src.need(f"nan_{op}")
        lines += [f"for {j} in range({b}.shape[0]):", f"    {result} = {extremum}({result}, {b}[{j}])"]
        return lines
    lines.append(f"for {j} in range({b}.shape[0]):")
    lines.append(f"    {result} = {combine(op, dtype, result, f'{b}[{j}]')}")
    if fam == "int" and op == "sum":
        lines.append(f"{result} = {NP_TYPE[dtype]}({result})")
    return lines


class Source:
    """Collects the helper functions a kernel needs and renders the module text."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.helpers: dict[str, str] = {}

    def need(self, name: str) -> str:
        """Add a helper by name (erf, rng, reducers) and return its callable name."""
        if name == "erf_f32":
            # contract (fused multiply-add) only inside this approximation: it is already not
            # NumPy's erf, and FMAs make its polynomials ~25% cheaper.
            self.helpers.setdefault(name, _ERF_F32.format(deco=decorator(False, '{"contract"}')))
            return "_erf_f32"
        if name == "exp_f32":
            # contract here too: FMAs in its polynomial make a softmax row 25% cheaper, and the
            # result stays within 1 ulp of the correctly rounded exp.
            self.helpers.setdefault(name, _EXP_F32.format(deco=decorator(False, '{"contract"}')))
            return "_exp_f32"
        if name == "exp_nonpos_f32":
            self.helpers.setdefault(name, _EXP_NONPOS_F32.format(deco=decorator(False, '{"contract"}')))
            return "_exp_nonpos_f32"
        if name in ("unseen", "nan_max", "nan_min"):
            self.helpers.setdefault(name, f"\nfrom graphc.kernels.cpu.intrinsics import {name}\n")
            return name
        if name == "rng":
            self.helpers.setdefault(name, _RNG.format(deco=decorator(False)))
            return "_rng_u"
        if name.startswith("sum_"):
            self.helpers.setdefault(name, _float_sum_source(name[4:]))
            return f"_{name}"
        raise KeyError(name)

    def render(self, n_args: int, lines: list[str], parallel: bool, name: str = "kernel") -> str:
        """The module text: header, helpers (sorted for a stable hash), then the function ``name``."""
        args = ", ".join(f"a{k}" for k in range(n_args))
        parts = [f"# graphc CPU kernel: {comment(self.title)}\n", _HEADER]
        parts += [self.helpers[k] for k in sorted(self.helpers)]
        parts.append(f"\n{decorator(parallel)}\ndef {name}({args}):\n")
        parts.append("".join(f"    {line}\n" for line in lines) or "    pass\n")
        return "".join(parts)


class Names:
    """Fresh temporary names in emission order."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, prefix: str = "t") -> str:
        k = self.counts.get(prefix, 0)
        self.counts[prefix] = k + 1
        return f"{prefix}{k}"


# ---------------------------------------------------------------- scalar expressions
def literal(value: object, dtype: str) -> str:
    """A constant of a graphc dtype as numba source (inf/nan spelled through np)."""
    if dtype == "bool":
        return "True" if bool(value) else "False"
    T = NP_TYPE[dtype]
    if dtype in ("i32", "i64"):
        return f"{T}({int(value)})"
    v = float(value)
    if math.isnan(v):
        text = "np.nan"
    elif math.isinf(v):
        text = "np.inf" if v > 0 else "-np.inf"
    else:
        text = repr(v)
    return f"{T}({text})"


_MATH = {"exp": "math.exp", "log": "math.log", "sqrt": "math.sqrt", "tanh": "math.tanh"}
_MATH.update({"sin": "math.sin", "cos": "math.cos"})
_CMP = {"lt": "<", "le": "<=", "eq": "==", "ne": "!=", "gt": ">", "ge": ">="}
_ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}


def scalar_expr(node: Node, args: list[str], src: Source, nonpositive: bool = False) -> str:
    """Source of one pointwise/broadcast op on scalar operands; the result has the node's dtype.

    Every result is wrapped in its dtype's constructor: numba widens int32 arithmetic to
    int64 and some float32 math to float64, while NumPy keeps the dtype (and wraps ints).
    ``nonpositive``: the operand is known to be <= 0 or NaN (cheaper exp).
    """
    op, out = node.op, node.outputs[0].dtype
    T = NP_TYPE[out]
    a = args[0] if args else ""
    b = args[1] if len(args) > 1 else ""
    if op == "exp" and out == "f32":
        return f"{src.need('exp_nonpos_f32' if nonpositive else 'exp_f32')}({a})"
    if op in _MATH:
        return f"{T}({_MATH[op]}({a}))"
    if op == "erf":
        if out == "f32":
            return f"{src.need('erf_f32')}({a})"
        return f"{T}(math.erf({a}))"
    if op == "rsqrt":
        return f"{T}({T}(1.0) / math.sqrt({a}))"
    if op == "reciprocal":
        return f"{T}({T}(1.0) / {a})"
    if op == "neg":
        return f"{T}(-{a})"
    if op == "abs":
        return f"{T}(abs({a}))"
    if op == "sign":
        zero = a if out in ("f32", "f64") else f"{T}(0)"  # NaN and -0.0 pass through for floats
        return f"({T}(1) if {a} > 0 else ({T}(-1) if {a} < 0 else {zero}))"
    if op == "cast":
        if out == "bool":
            return f"({a} != 0)"
        return f"{T}({a})"
    if op in _ARITH:
        return f"{T}({a} {_ARITH[op]} {b})"
    if op in ("maximum", "minimum"):
        cmp = ">" if op == "maximum" else "<"
        # NumPy propagates NaN from either side; Python's max() would not.
        return f"({a} if ({a} {cmp} {b} or {a} != {a}) else {b})"
    if op in _CMP:
        return f"({a} {_CMP[op]} {b})"
    if op == "where":
        return f"({args[1]} if {a} else {args[2]})"
    if op == "broadcast_to":
        return a
    raise Unsupported(f"no scalar form for {op}")


def is_elementwise(node: Node) -> bool:
    """Ops an elementwise loop evaluates per element (rng_uniform inline from its index)."""
    return node.op == "rng_uniform" or (
        node.op in REGISTRY and node.op != "fused" and REGISTRY[node.op].fusion in ELEMENTWISE_CLASSES
    )


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
        self, full: Sequence[int], split: int, leaves: dict[object, Dims], names: Names, inner: bool = False
    ) -> None:
        self.full = tuple(full)
        self.leaves = leaves
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
            same = groups and sides[-1] == side and all((a in v) == (last in v) for v in self.vary.values())
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

    def flat_index(self, key: object, ivars: Sequence[str]) -> str:
        """The C-order flat index into leaf ``key`` at loop indices ``ivars`` (for rng)."""
        expr = ""
        for g in range(len(self.groups)):
            if self.full_on(key, g):
                expr = ivars[g] if not expr else f"({expr} * {self.size_names[g]} + {ivars[g]})"
        return expr or "0"


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


# ---------------------------------------------------------------- elementwise kernels
def pointwise_source(body: Body, title: str = "pointwise", in_place: dict[int, int] | None = None) -> str:
    """One loop nest per distinct output shape computing the whole chain per element.

    Inputs broadcast through reshaped views with size-1 axes. Loop nests run from the largest
    output shape down: a smaller output may alias (in place) an input that a larger nest reads
    broadcast, so that input must be read first.

    ``in_place`` maps an output index to the input index whose array the caller always passes
    for it too (same shape). Such an output is stored through the input's view: LLVM then sees
    one pointer read and written at the same index and vectorizes, where two arguments that
    alias fail its run-time overlap check and the loop runs scalar (5x slower).
    """
    for n in body.nodes:
        if not is_elementwise(n):
            raise Unsupported(f"{n.op} in an elementwise body")
    src = Source(title)
    names = Names()
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, v in enumerate(body.outputs):
        by_shape.setdefault(v.shape, []).append(k)
    lines: list[str] = []
    parallel = False
    for shape in sorted(by_shape, key=lambda s: -numel(s)):
        parallel |= _pointwise_nest(body, shape, by_shape[shape], src, names, lines, in_place or {})
    return src.render(len(body.inputs) + len(body.outputs), lines, parallel)


def _pointwise_nest(
    body: Body,
    shape: tuple[int, ...],
    outs: list[int],
    src: Source,
    names: Names,
    lines: list[str],
    in_place: dict[int, int],
) -> bool:
    """Append the loop nest computing outputs ``outs`` (all of ``shape``); True if it uses prange."""
    prod, args = producers(body), arg_index(body)
    n_in = len(body.inputs)
    need = needed_values([body.outputs[k] for k in outs], prod, args)
    # Outputs stored through an input's view: the input's own key stands for both.
    store_key = {k: in_place.get(k, n_in + k) for k in outs}
    leaves: dict[object, Dims] = {}
    for k in outs:
        leaves[store_key[k]] = aligned(shape, shape)
    for v, k in sorted(args.items(), key=lambda kv: kv[1]):
        if v in need and k not in leaves:
            leaves[k] = aligned(v.shape, shape)
    rngs = [n for n in body.nodes if n.op == "rng_uniform" and n.outputs[0] in need]
    for n in rngs:
        leaves[("rng", id(n))] = aligned(n.outputs[0].shape, shape)
    lay = Layout(shape, len(shape), leaves, names)
    array_keys = [k for k in leaves if isinstance(k, int)]
    lines += lay.size_lines(array_keys)
    view = {}
    for key in array_keys:
        view[key] = names("v")
        lines.append(f"{view[key]} = a{key}.reshape({lay.view_shape(key)})")
    keys = {}
    for n in rngs:
        src.need("rng")
        keys[id(n)] = names("key")
        lines.append(f"{keys[id(n)]} = _rng_key({_seed(n)}, a{_rng_offset_arg(n, args)}.reshape((1,))[0])")
    par = use_parallel(numel(shape))
    ivars = [names("i") for _ in lay.groups]
    innermost = len(ivars) - 1
    # Each statement sits in the outermost loop it depends on: a broadcast operand loaded inside
    # a loop that stores may alias it as far as LLVM knows, which keeps that loop scalar.
    blocks: dict[int, list[str]] = {g: [] for g in range(-1, len(ivars))}
    env: dict[Value, tuple[str, int]] = {}

    def depth_of(key: object) -> int:
        return max((g for g in range(len(ivars)) if lay.full_on(key, g)), default=-1)

    overwritten = set(store_key.values()) & set(args.values())

    def get(v: Value) -> tuple[str, int]:
        if v not in env:  # an input, loaded where first used
            key = args[v]
            env[v] = (names(), depth_of(key))
            load = f"{view[key]}[{lay.index(key, ivars)}]"
            if key in overwritten:  # see intrinsics.unseen: no masked stores
                load = f"{src.need('unseen')}({load})"
            blocks[env[v][1]].append(f"{env[v][0]} = {load}")
        return env[v]

    for n in body.nodes:
        o = n.outputs[0]
        if o not in need:
            continue
        if n.op == "const":
            env[o] = (literal(n.attrs["value"], o.dtype), -1)
            continue
        if n.op == "rng_uniform":
            flat = lay.flat_index(("rng", id(n)), ivars)
            expr, depth = f"{NP_TYPE[o.dtype]}(_rng_u({keys[id(n)]}, {flat}))", innermost
        else:
            operands = [get(i) for i in n.inputs]
            expr = scalar_expr(n, [name for name, _ in operands], src)
            depth = max((d for _, d in operands), default=-1)
        env[o] = (names(), depth)
        blocks[depth].append(f"{env[o][0]} = {expr}")
    for k in outs:
        key = store_key[k]
        blocks[innermost].append(f"{view[key]}[{lay.index(key, ivars)}] = {get(body.outputs[k])[0]}")
    lines += blocks[-1]
    indent = ""
    for g, iv in enumerate(ivars):
        lines.append(f"{indent}for {iv} in {'prange' if par and g == 0 else 'range'}({lay.size_names[g]}):")
        indent += "    "
        lines += [indent + line for line in blocks[g]]
    return par


# ---------------------------------------------------------------- row reductions
class _Offsets:
    """Axis offsets of body values in a reduction's loop space (a weighted union-find).

    Value ``v`` of rank r occupies loop axes offset(v) .. offset(v) + r - 1. NumPy broadcasting
    fixes offset differences between an op's operands and its result; reductions pin their
    input and result to offset 0. A body input takes its offset from the ops that use it, so an
    input of the rows' shape lines up with a keepdims=False row value while an input of the
    inner shape lines up with the trailing axes.
    """

    ANCHOR = "loop space"

    def __init__(self) -> None:
        self.parent: dict[object, object] = {}
        self.delta: dict[object, int] = {}  # offset(x) - offset(parent(x))

    def find(self, x: object) -> tuple[object, int]:
        """The root of x and offset(x) - offset(root)."""
        if x not in self.parent:
            self.parent[x], self.delta[x] = x, 0
        if self.parent[x] is x:
            return x, 0
        root, d = self.find(self.parent[x])
        self.parent[x], self.delta[x] = root, self.delta[x] + d
        return root, self.delta[x]

    def union(self, x: object, y: object, d: int) -> None:
        """Require offset(x) - offset(y) == d."""
        rx, dx = self.find(x)
        ry, dy = self.find(y)
        if rx is ry:
            if dx - dy != d:
                raise Unsupported("a value would sit at two places in the loop space")
            return
        if rx is self.ANCHOR:  # keep the anchor a root
            rx, ry, dx, dy, d = ry, rx, dy, dx, -d
        self.parent[rx], self.delta[rx] = ry, d + dy - dx


def _loop_dims(body: Body, full: tuple[int, ...]) -> dict[Value, Dims]:
    """Dims (loop axis, size) of every body value of a reduction body over loop space ``full``."""
    off = _Offsets()
    values = list(body.inputs) + [v for n in body.nodes for v in n.outputs]

    def spread(v: Value) -> bool:  # values of one element broadcast anywhere: no constraint
        return any(s != 1 for s in v.shape)

    for n in body.nodes:
        o = n.outputs[0]
        if n.op in REDUCTIONS:
            off.union(n.inputs[0], off.ANCHOR, 0)
            off.union(o, off.ANCHOR, 0)
        elif n.op not in ("const", "rng_uniform") and spread(o):
            for i in n.inputs:
                if spread(i):
                    off.union(i, o, len(o.shape) - len(i.shape))
    base: dict[object, int] = {off.ANCHOR: 0}
    for v in sorted(values, key=lambda v: -len(v.shape)):  # free groups: right-align the widest
        root, d = off.find(v)
        base.setdefault(root, len(full) - len(v.shape) - d)
    dims: dict[Value, Dims] = {}
    for v in values:
        root, d = off.find(v)
        start = base[root] + d
        entry: Dims = []
        for j, s in enumerate(v.shape):
            ax = start + j
            if s != 1 and not (0 <= ax < len(full) and full[ax] == s):
                raise Unsupported(f"a {v.type} value does not fit the loop space {full}")
            entry.append((ax if s != 1 else None, s))
        dims[v] = entry
    return dims


def reduction_source(
    body: Body, title: str = "reduction", function: str = "kernel", serial: bool = False
) -> str:
    """Rows of the leading axes, each in phased loops over the reduced trailing axes.

    ``function`` names the function; ``serial`` keeps it off the thread pool whatever its size (a
    kernel that another parallel kernel calls per task: attention's rows).

    Loop k over a row computes the operands of the reductions whose inputs need only results
    of loops < k (plus element outputs that become ready); values an earlier loop computed are
    kept in per-row scratch buffers rather than recomputed. Reductions run over contiguous
    buffers, so the element loops themselves stay free of loop-carried dependencies and
    vectorize. With prange, rows are split into one chunk per thread, each with its own scratch.
    """
    reds = [n for n in body.nodes if n.op in REDUCTIONS]
    if not reds:
        return pointwise_source(body, title)
    for n in body.nodes:
        if n.op not in REDUCTIONS and not is_elementwise(n):
            raise Unsupported(f"{n.op} in a reduction body")
    full = reds[0].inputs[0].shape
    red_axes = set(reds[0].attrs["axes"])
    for n in reds:
        if n.inputs[0].shape != full or set(n.attrs["axes"]) != red_axes:
            raise Unsupported("reductions over different shapes or axes")
    split = len(full) - len(red_axes)
    if red_axes != set(range(split, len(full))):
        raise Unsupported("reduced axes are not the trailing axes")
    prod, args = producers(body), arg_index(body)
    n_in = len(body.inputs)
    # x - max(x) over the row x is in: never positive (softmax, log-softmax).
    below_row_max = {
        n.outputs[0]
        for n in body.nodes
        if n.op == "sub"
        and n.inputs[1] in prod
        and prod[n.inputs[1]].op == "max"
        and prod[n.inputs[1]].inputs[0] is n.inputs[0]
    }

    dims = _loop_dims(body, full)  # where every value lives in the loop space (rows x inner)

    def is_elem(v: Value) -> bool:
        return any(s != 1 and ax >= split for ax, s in dims[v])

    # Loop number of every reduction and element output: after the loops it depends on.
    level: dict[Value, int] = {v: 0 for v in body.inputs}
    loop_of: dict[Node, int] = {}
    for n in body.nodes:
        o = n.outputs[0]
        base = max((level[i] for i in n.inputs), default=0)
        if n.op in REDUCTIONS:
            loop_of[n] = base + 1
            level[o] = base + 1
        else:
            level[o] = base
    elem_outs = [k for k, v in enumerate(body.outputs) if is_elem(v)]
    row_outs = [k for k, v in enumerate(body.outputs) if not is_elem(v)]
    n_loops = max([*loop_of.values(), *(level[body.outputs[k]] + 1 for k in elem_outs)])

    names = Names()
    src = Source(title)
    leaves: dict[object, Dims] = {}
    for k, v in enumerate(body.outputs):
        leaves[n_in + k] = dims[v]
    for v, k in sorted(args.items(), key=lambda kv: kv[1]):
        leaves[k] = dims[v]
    rngs = [n for n in body.nodes if n.op == "rng_uniform"]
    for n in rngs:
        leaves[("rng", id(n))] = dims[n.outputs[0]]
    lay = Layout(full, split, leaves, names, inner=True)
    array_keys = [k for k in leaves if isinstance(k, int)]
    head = lay.size_lines(array_keys)
    view = {}
    for key in array_keys:
        view[key] = names("v")
        head.append(f"{view[key]} = a{key}.reshape({lay.view_shape(key)})")
    keys = {}
    for n in rngs:
        src.need("rng")
        keys[id(n)] = names("key")
        head.append(f"{keys[id(n)]} = _rng_key({_seed(n)}, a{_rng_offset_arg(n, args)}.reshape((1,))[0])")
    rows = " * ".join(lay.size_names[g] for g in lay.row_groups)
    inner = " * ".join(lay.size_names[g] for g in lay.inner_groups)
    head += [f"nrows = {rows}", f"ninner = {inner}"]

    ivars = [names("o") if not side else names("i") for side in lay.sides]
    single_inner = len(lay.inner_groups) == 1
    jvar = ivars[lay.inner_groups[0]] if single_inner else "j"

    row_env: dict[Value, str] = {}  # row-level values of the current row
    scratch: dict[Value, str] = {}  # element values kept per row: value -> buffer name
    computed_in: dict[Value, int] = {}  # element value -> loop that computed it
    loop_env: list[dict[Value, str]] = [{} for _ in range(n_loops + 1)]
    bodies: list[list[str]] = [[] for _ in range(n_loops + 1)]
    stores: list[list[str]] = [[] for _ in range(n_loops + 1)]  # scratch stores, end of loop k
    pre: list[list[str]] = [[] for _ in range(n_loops + 2)]  # row-level code before loop k

    def load(v: Value, idx_vars: Sequence[str]) -> str:
        key = args[v]
        return f"{view[key]}[{lay.index(key, idx_vars)}]"

    def row_value(v: Value, out: list[str]) -> str:
        """A row-level value, computed (once per row) into ``out``."""
        if v in row_env:
            return row_env[v]
        stack = [v]
        order: list[Value] = []
        seen: set[Value] = set()
        while stack:  # post-order so operands come first
            u = stack[-1]
            if u in row_env or u in seen:
                stack.pop()
                continue
            leaf = u in args or prod[u].op in REDUCTIONS
            pending = [] if leaf else [i for i in prod[u].inputs if i not in row_env and i not in seen]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            seen.add(u)
            order.append(u)
        for u in order:
            if u in args:
                name = names()
                out.append(f"{name} = {load(u, ivars)}")
            else:
                n = prod[u]
                if n.op in REDUCTIONS:
                    raise AssertionError("reduction result used before its loop")
                if n.op == "const":
                    row_env[u] = literal(n.attrs["value"], u.dtype)
                    continue
                name = names()
                if n.op == "rng_uniform":
                    flat = lay.flat_index(("rng", id(n)), ivars)
                    out.append(f"{name} = {NP_TYPE[u.dtype]}(_rng_u({keys[id(n)]}, {flat}))")
                else:
                    out.append(f"{name} = {scalar_expr(n, [row_env[i] for i in n.inputs], src)}")
            row_env[u] = name
        return row_env[v]

    def cheap_again(v: Value) -> bool:
        # One cheap op whose element operands are at hand (inputs or kept values): computing
        # it again costs a load and an op, keeping it costs a store too (stores are the
        # scarcer port). layer_norm's d = y - mean is recomputed from the kept y.
        n = prod[v]
        if v in scratch or n.op not in CHEAP_OPS:
            return False
        return all(not is_elem(i) or i in args or i in scratch for i in n.inputs)

    def elem_value(v: Value, k: int) -> str:
        """An element value inside loop k (row values are hoisted into pre[k])."""
        env = loop_env[k]
        if v in env:
            return env[v]
        if not is_elem(v):
            env[v] = row_value(v, pre[k])
            return env[v]
        if v in args:
            env[v] = names()
            bodies[k].append(f"{env[v]} = {load(v, ivars)}")
            return env[v]
        earlier = computed_in.get(v)
        if earlier is not None and earlier < k and not cheap_again(v):
            if v not in scratch:
                scratch[v] = names("s")
                stores[earlier].append(f"{scratch[v]}[{jvar}] = {loop_env[earlier][v]}")
            env[v] = names()
            bodies[k].append(f"{env[v]} = {scratch[v]}[{jvar}]")
            return env[v]
        n = prod[v]
        if n.op == "rng_uniform":
            flat = lay.flat_index(("rng", id(n)), ivars)
            expr = f"{NP_TYPE[v.dtype]}(_rng_u({keys[id(n)]}, {flat}))"
        else:
            operands = [elem_value(i, k) for i in n.inputs]
            expr = scalar_expr(n, operands, src, nonpositive=n.inputs[0] in below_row_max)
        env[v] = names()
        bodies[k].append(f"{env[v]} = {expr}")
        computed_in[v] = k
        return env[v]

    after: list[list[str]] = [[] for _ in range(n_loops + 1)]
    for k in range(1, n_loops + 1):
        for n in reds:
            if loop_of[n] != k:
                continue
            operand = n.inputs[0]
            direct = (
                operand in args
                and single_inner
                and lay.full_on(args[operand], lay.inner_groups[0])
                and operand not in scratch
            )
            if direct:
                key = args[operand]
                idx = [ivars[g] if lay.full_on(key, g) else "0" for g in lay.row_groups] + [":"]
                row_env[n.outputs[0]] = res = names("r")
                after[k] += reduce_lines(
                    n.op, operand.dtype, res, f"{view[key]}[{', '.join(idx)}]", src, names
                )
                continue
            earlier = computed_in.get(operand)
            if operand in scratch:
                pass
            elif earlier is not None and earlier < k and operand not in args:
                scratch[operand] = names("s")
                stores[earlier].append(f"{scratch[operand]}[{jvar}] = {loop_env[earlier][operand]}")
            else:
                name = elem_value(operand, k)
                scratch[operand] = names("s")
                stores[k].append(f"{scratch[operand]}[{jvar}] = {name}")
                computed_in[operand] = k
            row_env[n.outputs[0]] = res = names("r")
            after[k] += reduce_lines(n.op, operand.dtype, res, scratch[operand], src, names)
        for idx_out in elem_outs:
            v = body.outputs[idx_out]
            if level[v] + 1 != k:
                continue
            name = elem_value(v, k)
            key = n_in + idx_out
            bodies[k].append(f"{view[key]}[{lay.index(key, ivars)}] = {name}")
    post: list[str] = []
    for idx_out in row_outs:
        key = n_in + idx_out
        name = row_value(body.outputs[idx_out], post)
        post.append(f"{view[key]}[{lay.index(key, ivars)}] = {name}")

    # Assemble: chunks of rows (prange) > rows > phased inner loops.
    par = not serial and use_parallel(numel(full)) and numel([full[a] for a in range(split)]) > 1
    lines = list(head)
    # A fixed chunk count: get_num_threads() here would make numba refuse to cache the kernel.
    lines.append(f"nch = min(nrows, {ROW_CHUNKS if par else 1})")
    lines.append(f"for c in {'prange' if par else 'range'}(nch):")
    ind = "    "
    dtypes = {v: v.dtype for v in scratch}
    for v, buf in scratch.items():
        lines.append(f"{ind}{buf} = np.empty(ninner, {NP_TYPE[dtypes[v]]})")
    lines.append(f"{ind}for r in range(c * nrows // nch, (c + 1) * nrows // nch):")
    ind += "    "
    rest = "r"
    row_g = lay.row_groups
    for pos, g in enumerate(row_g):  # unravel the row index into the row groups
        if pos == len(row_g) - 1:
            lines.append(f"{ind}{ivars[g]} = {rest}")
        else:
            tail = " * ".join(lay.size_names[h] for h in row_g[pos + 1 :])
            lines.append(f"{ind}{ivars[g]} = {rest} // ({tail})")
            lines.append(f"{ind}q{pos} = {rest} % ({tail})")
            rest = f"q{pos}"
    for k in range(1, n_loops + 1):
        lines += [ind + s for s in pre[k]]
        if not bodies[k] and not stores[k]:  # only direct reductions over input rows
            lines += [ind + s for s in after[k]]
            continue
        li = ind
        for g in lay.inner_groups:
            lines.append(f"{li}for {ivars[g]} in range({lay.size_names[g]}):")
            li += "    "
        if not single_inner:
            flat = ""
            for g in lay.inner_groups:
                flat = ivars[g] if not flat else f"({flat} * {lay.size_names[g]} + {ivars[g]})"
            lines.append(f"{li}j = {flat}")
        loop_lines = bodies[k] + stores[k]
        lines += [li + s for s in loop_lines] or [li + "pass"]
        lines += [ind + s for s in after[k]]
    lines += [ind + s for s in post]
    return src.render(n_in + len(body.outputs), lines, par, function)


# ---------------------------------------------------------------- reductions over any axes
def accumulate_source(node: Node) -> str:
    """sum/max/min over arbitrary axes: outputs start at the identity and every input element
    is folded in, in the input's C order (NumPy's order for non-trailing axes). A trailing
    reduced run is folded with the vectorized row reducer."""
    x = node.inputs[0]
    op, dtype = node.op, x.dtype
    axes = set(node.attrs["axes"])
    groups: list[tuple[bool, list[int]]] = []
    for d, size in enumerate(x.shape):
        if size == 1:
            continue
        red = d in axes
        if groups and groups[-1][0] == red:
            groups[-1][1].append(d)
        else:
            groups.append((red, [d]))
    if not groups:
        groups = [(False, [])]
    src = Source(f"{op} over axes {sorted(axes)}")
    T = NP_TYPE[dtype]
    lines = []
    sizes = []
    for g, (_, dims) in enumerate(groups):
        expr = " * ".join(f"a0.shape[{d}]" for d in dims) or "1"
        lines.append(f"n{g} = {expr}")
        sizes.append(f"n{g}")
    tup = ", ".join(sizes) + ","
    keep = ", ".join("1" if red else f"n{g}" for g, (red, _) in enumerate(groups)) + ","
    lines.append(f"x = a0.reshape(({tup}))")
    lines.append(f"o = a1.reshape(({keep}))")
    lines.append("of = a1.reshape((a1.size,))")
    lines.append("for k in range(of.shape[0]):")
    lines.append(f"    of[k] = {identity(op, dtype)}")
    last_red = groups[-1][0]
    loop_groups = groups[:-1] if last_red else groups
    par = use_parallel(x.type.numel) and not groups[0][0] and len(loop_groups) > 0
    ind = ""
    for g in range(len(loop_groups)):
        lines.append(f"{ind}for i{g} in {'prange' if par and g == 0 else 'range'}(n{g}):")
        ind += "    "
    oidx = ", ".join("0" if red else f"i{g}" for g, (red, _) in enumerate(groups) if g < len(loop_groups))
    if last_red:
        oidx = (oidx + ", 0") if oidx else "0"
        xidx = ", ".join([f"i{g}" for g in range(len(loop_groups))] + [":"])
        lines += [ind + line for line in reduce_lines(op, dtype, "v", f"x[{xidx}]", src, Names())]
    else:
        lines.append(f"{ind}v = x[{', '.join(f'i{g}' for g in range(len(groups)))}]")
    step = combine(op, dtype, f"o[{oidx}]", "v")
    if dtype == "bool":
        lines.append(f"{ind}o[{oidx}] = {step}")
    else:
        lines.append(f"{ind}o[{oidx}] = {T}({step})")
    return src.render(2, lines, par)


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


def _pool_window(node: Node, x: Value) -> tuple[list[str], list[tuple[int, int]], bool]:
    """Shared head of the max-pool kernels: (plane, row, col) views and loops, the window offsets."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = node.attrs["kernel"], node.attrs["stride"], node.attrs["dilation"]
    par = use_parallel(x.type.numel, n * c)
    lines = [
        f"x = a0.reshape(({n * c}, {h}, {w}))",
        f"for p in {'prange' if par else 'range'}({n * c}):",
        "    for oy in range(OH):",
        "        for ox in range(OW):",
        f"            y0 = oy * {sh}",
        f"            x0 = ox * {sw}",
    ]
    return lines, [(i * dh, j * dw) for i in range(kh) for j in range(kw)], par


def _better(x: Value) -> str:
    """Whether window value v replaces best: larger, or NaN (NaN is the maximum, as in PyTorch).

    Only the value is kept, so which NaN wins does not matter. Bitwise operators and
    conditional expressions, not ``or``/``if``: LLVM turns them into selects, where branches on
    random data mispredict half the time (8x slower on 2x2 pools).
    """
    return "(v > best) | (v != v)" if x.dtype in FLOAT_DTYPES else "v > best"


def max_pool_source(node: Node) -> str:
    """Each window's first maximal element (NaN wins), the kernel window unrolled."""
    x, y = node.inputs[0], node.outputs[0]
    head, offsets, par = _pool_window(node, x)
    lines = [f"OH, OW = {y.shape[2]}, {y.shape[3]}", f"o = a1.reshape(({y.shape[0] * y.shape[1]}, OH, OW))"]
    lines += head + ["            best = x[p, y0, x0]"]
    for di, dj in offsets[1:]:
        lines.append(f"            v = x[p, y0 + {di}, x0 + {dj}]")
        lines.append(f"            best = v if {_better(x)} else best")
    lines.append("            o[p, oy, ox] = best")
    return Source(f"max_pool2d {node.attrs['kernel']} stride {node.attrs['stride']}").render(2, lines, par)


def max_pool_grad_source(node: Node) -> str:
    """dx: each dy entry added to its window's first maximal element of x (windows may overlap).

    Per plane, one pass finds each window's maximum (the forward's select chain), then the
    first element equal to it (a second chain, last to first, over the loaded values; NaN
    matches NaN), and a second loop scatters dy. Tracking the index inside the maximum's chain
    ran 2.4x slower, and fusing the scatter into the first loop (dx stores numba cannot prove
    apart from the x loads) ten times slower.
    """
    x, dy = node.inputs
    n, c, h, w = x.shape
    oh, ow = dy.shape[2], dy.shape[3]
    head, offsets, par = _pool_window(node, x)
    lines = [
        f"OH, OW = {oh}, {ow}",
        f"g = a1.reshape(({n * c * oh * ow},))",
        f"dx = a2.reshape(({n * c * h * w},))",
    ]
    head[2:2] = [
        f"    at = np.empty({oh * ow}, np.int64)",
        f"    base = p * {h * w}",
        f"    for k in range(base, base + {h * w}):",
        "        dx[k] = 0",
    ]
    lines += head
    for k, (di, dj) in enumerate(offsets):
        lines.append(f"            v{k} = x[p, y0 + {di}, x0 + {dj}]")
    lines.append("            best = v0")
    for k in range(1, len(offsets)):
        lines.append(f"            v = v{k}")
        lines.append(f"            best = v if {_better(x)} else best")
    is_float = x.dtype in FLOAT_DTYPES
    if is_float:
        lines.append("            nb = best != best")
    last = len(offsets) - 1
    lines.append(f"            a = y0 * {w} + x0 + {offsets[last][0] * w + offsets[last][1]}")
    for k in range(last - 1, -1, -1):
        di, dj = offsets[k]
        equal = f"(v{k} == best) | ((v{k} != v{k}) & nb)" if is_float else f"v{k} == best"
        lines.append(f"            a = y0 * {w} + x0 + {di * w + dj} if {equal} else a")
    lines += [
        f"            at[oy * {ow} + ox] = a",
        f"    for q in range({oh * ow}):",
        f"        dx[base + at[q]] += g[p * {oh * ow} + q]",
    ]
    title = f"max_pool2d_grad {node.attrs['kernel']} stride {node.attrs['stride']}"
    return Source(title).render(3, lines, par)


def _window_setup(node: Node, image: Value, cols: Value) -> tuple[int, int, dict[str, int], bool]:
    """Output size, window constants and whether to prange, for an im2col/col2im kernel."""
    (kh, kw), (sh, sw) = node.attrs["kernel"], node.attrs["stride"]
    (ph, pw), (dh, dw) = node.attrs["padding"], node.attrs["dilation"]
    n, c, h, w = image.shape
    oh, ow = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
    p = dict(NC=n * c, H=h, W=w, KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, DH=dh, DW=dw, L=oh * ow)
    return oh, ow, p, use_parallel(max(image.type.numel, cols.type.numel), n * c)


def _window_ranges(p: dict[str, int], oh: int, ow: int) -> list[str]:
    # Output rows ylo <= y < yhi and columns xlo <= x < xhi of window offset (i, j) read pixels
    # inside the image, so the loops over them need no bounds test and (stride 1) vectorize.
    def first(pad: str, dil: str, var: str, stride: str) -> str:
        return f"-((-({p[pad]} - {var} * {p[dil]})) // {p[stride]})"

    def stop(size: str, pad: str, dil: str, var: str, stride: str) -> str:
        return f"-((-({p[size]} + {p[pad]} - {var} * {p[dil]})) // {p[stride]})"

    return [
        f"        ylo = min(max({first('PH', 'DH', 'i', 'SH')}, 0), {oh})",
        f"        yhi = max(min({stop('H', 'PH', 'DH', 'i', 'SH')}, {oh}), ylo)",
        f"        for j in range({p['KW']}):",
        f"            xlo = min(max({first('PW', 'DW', 'j', 'SW')}, 0), {ow})",
        f"            xhi = max(min({stop('W', 'PW', 'DW', 'j', 'SW')}, {ow}), xlo)",
        f"            k = i * {p['KW']} + j",
    ]


def im2col_source(node: Node) -> str:
    """cols[n, (c, i, j), (y, x)] = the window pixel, or 0 in the padding; constants baked in."""
    x, cols = node.inputs[0], node.outputs[0]
    oh, ow, p, par = _window_setup(node, x, cols)
    zero = literal(0, x.dtype)
    lines = [
        f"x = a0.reshape(({p['NC']}, {p['H']}, {p['W']}))",
        f"cols = a1.reshape(({p['NC']}, {p['KH'] * p['KW']}, {p['L']}))",
        f"for q in {'prange' if par else 'range'}({p['NC']}):",
        f"    for i in range({p['KH']}):",
        *_window_ranges(p, oh, ow),
        f"            for t in range(ylo * {ow}):",
        f"                cols[q, k, t] = {zero}",
        f"            for t in range(yhi * {ow}, {oh * ow}):",
        f"                cols[q, k, t] = {zero}",
        "            for y in range(ylo, yhi):",
        f"                iy = y * {p['SH']} - {p['PH']} + i * {p['DH']}",
        f"                base = y * {ow}",
        "                for xo in range(xlo):",
        f"                    cols[q, k, base + xo] = {zero}",
        "                for xo in range(xlo, xhi):",
        f"                    cols[q, k, base + xo] = x[q, iy, xo * {p['SW']} - {p['PW']} + j * {p['DW']}]",
        f"                for xo in range(xhi, {ow}):",
        f"                    cols[q, k, base + xo] = {zero}",
    ]
    return Source(f"im2col {_window_title(node)}").render(2, lines, par)


def col2im_source(node: Node) -> str:
    """The adjoint of im2col: each pixel the sum of its column entries, in (i, j) order."""
    cols, x = node.inputs[0], node.outputs[0]
    oh, ow, p, par = _window_setup(node, x, cols)
    lines = [
        f"cols = a0.reshape(({p['NC']}, {p['KH'] * p['KW']}, {p['L']}))",
        f"x = a1.reshape(({p['NC']}, {p['H'] * p['W']}))",
        f"for q in {'prange' if par else 'range'}({p['NC']}):",
        f"    for t in range({p['H'] * p['W']}):",
        f"        x[q, t] = {literal(0, x.dtype)}",
        f"    for i in range({p['KH']}):",
        *_window_ranges(p, oh, ow),
        "            for y in range(ylo, yhi):",
        f"                iy = y * {p['SH']} - {p['PH']} + i * {p['DH']}",
        f"                row = iy * {p['W']} - {p['PW']} + j * {p['DW']}",
        f"                base = y * {ow}",
        "                for xo in range(xlo, xhi):",
        f"                    x[q, row + xo * {p['SW']}] += cols[q, k, base + xo]",
    ]
    return Source(f"col2im {_window_title(node)}").render(2, lines, par)


def _window_title(node: Node) -> str:
    a = node.attrs
    return f"kernel {a['kernel']} stride {a['stride']} padding {a['padding']} dilation {a['dilation']}"


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
