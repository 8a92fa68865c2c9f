"""Batch-1 convolution GEMMs with their pointwise epilogue made in the GEMM's store.

A convolution lowers to (im2col for a k x k kernel, then) a fused matmul ``[O, K] @ [1, K, H * W]``
whose epilogue is pointwise: ``+ bias`` (one value per output channel, a row of the product),
then ``maximum(., 0)`` (relu), ``minimum(., 6)`` (relu6), a residual ``+ x``. Elsewhere the GEMM
writes the product and the epilogue's own loop reads it back and writes it again: two more passes
over an output that, at batch 1, is most of the traffic (SqueezeNet's first conv: 3 MiB of output
for 43 MFLOP). Here (``conv_source``) numba's threads share the columns of the product (the
pixels), or its rows where the weight is the larger (``split``); each packs a panel of ``COLS``
columns of B as the first row tile reads it (the ``direct`` path of ``sgemm``) and runs
``conv_tile`` down its rows of the weight (``MC`` at a time, a block that stays in L2 for all its
panels), which applies the epilogue to each vector while it is in registers, at the last ``KC``
block of the depth (``conv_avx512``). No allocation but the panel's, and the operands' views made
once per array (``ConvGemm``): a few microseconds of Python a call. Each output is one chain of
FMAs in ``p`` order per ``KC`` block, blocks added in order, then the epilogue's steps in their
order, each rounded to float32: the bits do not depend on the thread count, and are those of this
GEMM followed by the separate epilogue.

``fused_conv(mm, epilogue, inputs, outputs)`` says whether a fused matmul node runs here: the
``Epilogue`` it recognizes (``plan_epilogue``), or None (no AVX-512, a shape outside ``applies``,
an epilogue with another op); ``ConvGemm(epilogue)`` is then the kernel call. At each call the
kernel declines (returns False, nothing written) where the arrays do not fit (a layout without
unit column strides, an output over an operand); the caller then runs its general path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from types import ModuleType

import numpy as np

from graphc.ir import GraphcError, Node, Value

from ..quoting import comment
from .conv_avx512 import ADDS, COLS, HAVE_AVX512, LETTERS, MULS, NARROW, ROWS
from .threads import num_threads

KC = 256  # depth of a packed panel of B: 256 x COLS floats = 32 KiB, in L1 beside the weight's rows
MC = 256  # rows of the weight per block: MC x KC floats = 256 KiB, in L2 while the panels pass
MAX_OPS = 4  # array operands an epilogue may read (bias, residual, ...)
MAX_CONSTS = 8  # constants it may compare with (hardtanh: 5)
MIN_COLUMNS = 2 * COLS  # fewer pixels: sgemm.few_columns_matmul, at par, unless WIDE_ROWS
WIDE_ROWS = 256  # output channels from which one panel and a part (a 7 x 7 image) run here too
MIN_ROWS = ROWS  # fewer output channels leave most of a tile idle

__all__ = [
    "ConvGemm",
    "Epilogue",
    "applies",
    "conv_source",
    "driver",
    "fused_conv",
    "plan_epilogue",
    "split",
    "split_tail",
]


def conv_source(program: str) -> str:
    """Numba source of the convolution GEMM whose store runs ``program`` (``conv_avx512``'s
    letters, the only text of the source that varies, checked by ``program_literal``): ``c =
    program(a @ b)``, shared over ``row_parts x col_parts`` tasks of numba's pool (blocks of row
    tiles, of column panels)."""
    program = program_literal(program)
    return f"""# graphc CPU kernel: convolution GEMM (AVX-512 {ROWS} x {COLS} tiles, epilogue {program} in the store)
import numpy as np
from numba import njit, prange, types

from graphc.kernels.cpu.conv_avx512 import conv_tile, conv_tile_copy, conv_tile_narrow, conv_tile_narrow_copy

OPERAND = types.Array(types.float32, 2, "A", readonly=True)
SIGNATURE = types.void(
    OPERAND, OPERAND, types.Array(types.float32, 2, "A"), types.intp, types.intp,
    types.UniTuple(OPERAND, {MAX_OPS}), types.UniTuple(types.float32, {MAX_CONSTS}),
)


@njit(SIGNATURE, cache=True, nogil=True, parallel=True)
def conv_gemm(a, b, c, row_parts, col_parts, ops, consts):
    m, k = a.shape
    n = b.shape[1]
    tiles = (m + {ROWS - 1}) // {ROWS}
    panels = (n + {COLS - 1}) // {COLS}
    for part in prange(row_parts * col_parts):
        rp = part // col_parts
        cp = part % col_parts
        r0 = rp * tiles // row_parts * {ROWS}
        r1 = min(m, (rp + 1) * tiles // row_parts * {ROWS})
        buf = np.empty(min({KC}, k) * {COLS}, np.float32)
        for p0 in range(0, k, {KC}):  # outermost: the weight's block [rb:re, p0:p0 + kc] stays in L2
            kc = min({KC}, k - p0)
            final = int(p0 + kc >= k)
            for rb in range(r0, r1, {MC}):
                re = min(r1, rb + {MC})
                for panel in range(cp * panels // col_parts, (cp + 1) * panels // col_parts):
                    j0 = panel * {COLS}
                    width = min({COLS}, n - j0)
                    if width > {NARROW}:
                        conv_tile_copy(
                            a, rb, min({ROWS}, re - rb), p0, kc, b, j0, buf, c, rb, j0, width, p0, final,
                            {program}, ops, consts,
                        )
                        for i0 in range(rb + {ROWS}, re, {ROWS}):
                            conv_tile(
                                a, i0, min({ROWS}, re - i0), p0, kc, buf, 0, {COLS}, c, i0, j0, width, p0,
                                final, {program}, ops, consts,
                            )
                    else:  # a ragged last panel: tiles of one vector
                        conv_tile_narrow_copy(
                            a, rb, min({ROWS}, re - rb), p0, kc, b, j0, buf, c, rb, j0, width, p0, final,
                            {program}, ops, consts,
                        )
                        for i0 in range(rb + {ROWS}, re, {ROWS}):
                            conv_tile_narrow(
                                a, i0, min({ROWS}, re - i0), p0, kc, buf, 0, {NARROW}, c, i0, j0, width, p0,
                                final, {program}, ops, consts,
                            )
"""  # noqa: E501


def program_literal(program: str) -> str:
    """``program`` as a string literal for the generated source; a GraphcError unless every
    character is one of ``conv_avx512.LETTERS`` (so nothing else can reach the source)."""
    if not isinstance(program, str) or any(ch not in LETTERS for ch in program):
        raise GraphcError(f"conv_gemm: not an epilogue program: {comment(program)!r}")
    return repr(program)


@cache
def driver(program: str) -> ModuleType:
    """The loaded module of ``conv_source(program)`` (compiled, or from the kernel cache, on first use)."""
    from .cache import load_module

    return load_module(conv_source(program))


def applies(m: int, k: int, n: int) -> bool:
    """Whether a float32 product ``[m, k] @ [k, n]`` runs here (on a host with AVX-512): a whole
    row tile of output channels, and pixels for two panels at least, or one where the weight has
    ``WIDE_ROWS`` rows (a late 7 x 7 layer of 512 channels: 1.05-1.2x faster than
    ``sgemm.few_columns_matmul``, which packs the weight's transpose at every call)."""
    wide = n >= COLS and m >= WIDE_ROWS
    return HAVE_AVX512 and m >= MIN_ROWS and (n >= MIN_COLUMNS or wide) and k >= 1


def split(m: int, n: int, threads: int) -> tuple[int, int]:
    """How ``threads`` tasks share an ``[m, n]`` output: (row parts, column parts). Each task reads
    its rows of the weight and its columns of B: the rows are split where the weight is the
    larger (``m > n``: a late layer's 1024 channels of 14 x 14 pixels), else the columns."""
    if m > n:
        return max(1, min(threads, (m + ROWS - 1) // ROWS)), 1
    return 1, max(1, min(threads, (n + COLS - 1) // COLS))


@dataclass(frozen=True)
class Epilogue:
    """A fused matmul's epilogue as ``conv_tile`` runs it: its program (one letter a step), the
    positions in the body's inputs of the array operands it reads, and its constants."""

    program: str
    operands: tuple[int, ...]
    constants: tuple[float, ...]


def _operand_letter(x: Value, m: Value) -> str | None:
    """``r`` where the float32 value ``x`` broadcasts along the rows of the product ``m`` (one
    value per row: a bias ``[O, 1]``), ``v`` where it has the product's columns (a row vector,
    or a matrix of its shape), None where it broadcasts otherwise or has batch axes over 1."""
    if x.type.np_dtype != np.float32 or len(x.shape) > len(m.shape) or not x.shape:
        return None
    (rows, cols), shape = m.shape[-2:], x.shape
    lead = shape[:-2]
    if math.prod(lead) != 1:
        return None
    r = shape[-2] if len(shape) >= 2 else 1
    c = shape[-1]
    if r not in (1, rows) or c not in (1, cols):
        return None
    return "r" if c == 1 and cols > 1 else "v"


_SELECT = {"lt": "a", "le": "b", "gt": "c", "ge": "d"}  # where(x OP k, k2, x): conv_avx512's letters


def plan_epilogue(m: Value, epilogue: list[Node], inputs: list[Value], outs: list[Value]) -> Epilogue | None:
    """The ``Epilogue`` of a fused matmul whose product ``m`` (float32, batch axes of size 1) flows
    through a chain of steps ``conv_tile`` makes into the body's one output: ``+`` or ``*`` a body
    input broadcast along rows or columns; ``maximum``/``minimum`` with a scalar constant, either
    side; ``where(x OP k, k2, x)`` with OP one of ``< <= > >=`` (graphc's relu and hardtanh) and
    ``where(x != x, k2, x)``. None for any other epilogue (or more than ``MAX_OPS`` operands,
    ``MAX_CONSTS`` constants)."""
    if len(outs) != 1 or len(m.shape) < 2 or math.prod(m.shape[:-2]) != 1 or m.type.np_dtype != np.float32:
        return None
    consts: dict[Value, float] = {}
    tests: dict[Value, tuple[Value, str, tuple[float, ...]]] = {}  # a comparison: (of, letter, constants)
    letters, operands, constants = [], [], []
    cur = m
    for node in epilogue:
        out = node.outputs[0]
        if node.op == "const":
            value = node.attrs.get("value")
            scalar = math.prod(out.shape) == 1 and out.type.np_dtype == np.float32
            if not (scalar and isinstance(value, (int, float))):
                return None
            consts[out] = float(value)
            continue
        if len(node.inputs) == 2 and node.inputs[0] is cur and (node.op in _SELECT or node.op == "ne"):
            x, k = node.inputs
            if node.op == "ne" and k is cur:
                tests[out] = (cur, "e", ())
            elif node.op in _SELECT and k in consts:
                tests[out] = (cur, _SELECT[node.op], (consts[k],))
            else:
                return None
            continue
        if out.type != m.type or cur not in node.inputs:
            return None
        if node.op == "where":
            cond, then, other = node.inputs
            test = tests.get(cond)
            if test is None or test[0] is not cur or other is not cur or then not in consts:
                return None
            letters.append(test[1])
            constants += [*test[2], consts[then]]
            cur = out
            continue
        if len(node.inputs) != 2:
            return None
        x, y = node.inputs
        other = y if x is cur else x
        if other is cur:
            return None
        if node.op in ("add", "mul") and other in inputs:
            letter = _operand_letter(other, m)
            if letter is None:
                return None
            letters.append(letter if node.op == "add" else letter.upper())
            operands.append(inputs.index(other))
        elif node.op in ("maximum", "minimum") and other in consts:
            letter = "x" if node.op == "maximum" else "n"
            letters.append(letter if x is cur else letter.upper())
            constants.append(consts[other])
        else:
            return None
        cur = out
    if outs[0] is not cur or len(operands) > MAX_OPS or len(constants) > MAX_CONSTS:
        return None
    return Epilogue("".join(letters), tuple(operands), tuple(constants))


def split_tail(
    mm: Node, epilogue: list[Node], inputs: list[Value], outs: list[Value]
) -> tuple[int, Epilogue, list[Node]] | None:
    """A fused matmul with several outputs (Inception's conv -> relu, whose square the next LRN
    reads) split into the part that runs here and a tail: ``(k, epilogue, tail)``, where the
    nodes producing output ``k`` form an epilogue ``plan_epilogue`` takes (made in the GEMM's
    store), and every other output comes from ``tail``, the remaining nodes (plus the scalar
    constants they read), which read only output ``k``, the body's inputs and each other (not the
    product nor a value inside the chain). The tail then runs as its own pointwise loop over
    output ``k``: the same ops in the same order, so the same bits as the one epilogue loop.
    None where no output splits so (no AVX-512, the product itself an output, ...)."""
    if not HAVE_AVX512 or any(len(n.outputs) != 1 for n in epilogue):
        return None
    m = mm.outputs[0]
    made = {n.outputs[0]: n for n in epilogue}
    if any(o is m or o not in made for o in outs) or len(set(map(id, outs))) != len(outs):
        return None
    for k, out in enumerate(outs):
        need: set[Node] = set()
        stack = [out]
        while stack:
            n = made.get(stack.pop())
            if n is not None and n not in need:
                need.add(n)
                stack.extend(n.inputs)
        chain = [n for n in epilogue if n in need]
        rest = [n for n in epilogue if n not in need]
        inside = {n.outputs[0] for n in chain}
        if not rest or any(o in inside for j, o in enumerate(outs) if j != k):
            continue
        rest_values = {n.outputs[0] for n in rest}
        consts: set[Node] = set()
        for n in rest:
            for v in n.inputs:
                if v is out or v in rest_values or v in inputs:
                    continue
                if made.get(v) is None or made[v].op != "const":
                    break
                consts.add(made[v])
            else:
                continue
            break
        else:
            planned = fused_conv(mm, chain, inputs, [out])
            if planned is not None:
                return k, planned, [n for n in epilogue if n in consts or n not in need]
    return None


def _matrix(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``x`` (batch axes of size 1) as a ``[rows, cols]`` view, broadcast where it has one row or
    one column (stride 0)."""
    shape = x.shape[-2:] if x.ndim >= 2 else (1, *x.shape)
    return np.broadcast_to(x.reshape(shape), (rows, cols))


_LAYOUT = object()  # ``ConvGemm._prepare``'s answer for arrays laid out so that they do not fit


class ConvGemm:
    """The kernel call of one fused matmul: ``__call__(a, b, out, ins) -> bool``, ``out = program(a
    @ b)`` with the epilogue's operands ``ins[i]``; False, with nothing written, where the arrays
    do not fit (see ``_prepare``). The operands' views and the overlap checks are made once per array
    (a plan passes the same arrays at every call)."""

    def __init__(self, epilogue: Epilogue) -> None:
        self.epilogue = epilogue
        self.kernel = driver(epilogue.program).conv_gemm
        pad = (0.0,) * (MAX_CONSTS - len(epilogue.constants))
        self.consts = tuple(np.float32(k) for k in (*epilogue.constants, *pad))
        self._key: tuple = ()
        self._threads = 0
        self._args: tuple | None = None
        self._declined: set[tuple] = set()  # layouts (shape, strides, dtype of each array) that do not fit

    def _prepare(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, ins: list) -> object:
        """The kernel's arguments for these arrays; ``_LAYOUT`` where their shapes, strides or dtypes
        do not fit (so any arrays laid out alike), None where they overlap."""
        if a.ndim != 2 or math.prod(b.shape[:-2]) != 1 or math.prod(out.shape[:-2]) != 1:
            return _LAYOUT
        b2 = b.reshape(b.shape[-2:])
        c2 = out.reshape(out.shape[-2:])
        (m, k), n = a.shape, b2.shape[1]
        if b2.shape[0] != k or c2.shape != (m, n) or not applies(m, k, n):
            return _LAYOUT
        if not all(x.dtype == np.float32 for x in (a, b2, c2)):
            return _LAYOUT
        if b2.strides[1] != 4 or c2.strides[1] != 4 or min(*a.strides, b2.strides[0]) < 0:
            return _LAYOUT
        ops = []
        letters = [ch for ch in self.epilogue.program if ch in ADDS + MULS]
        for i, letter in zip(self.epilogue.operands, letters):
            x = ins[i]
            if x.dtype != np.float32:
                return _LAYOUT
            view = _matrix(x, m, n)
            if letter in "vV" and view.strides[1] != 4:
                return _LAYOUT
            ops.append(view)
        if any(np.may_share_memory(c2, x) for x in (a, b2, *ops)):
            return None
        ops += [c2] * (MAX_OPS - len(ops))  # never read
        return (a, b2, c2, *split(m, n, num_threads()), tuple(ops), self.consts)

    def __call__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, ins: list) -> bool:
        key = (a, b, out, *(ins[i] for i in self.epilogue.operands))
        threads = num_threads()
        if threads != self._threads or any(x is not y for x, y in zip(key, self._key)):
            # New arrays (a loop body's views are new at every step): a layout declined before
            # is declined again at the cost of this key, not of ``_prepare``'s checks.
            # The arrays are remembered either way: a plan's step (or a loop schedule's bound
            # step) passes these very arrays again, and is then answered by the identity test
            # above (~0.5 us) instead of this layout's tuple (~3 us: an LSTM backward step's
            # product, whose B is a transposed view, was declined that way at every time step).
            layout = tuple((x.shape, x.strides, x.dtype) for x in key)
            args = None if layout in self._declined else self._prepare(a, b, out, ins)
            if args is _LAYOUT:
                self._declined.add(layout)
                args = None
            self._args, self._key, self._threads = args, key, threads
        if self._args is None:
            return False
        self.kernel(*self._args)
        return True


def fused_conv(mm: Node, epilogue: list[Node], inputs: list[Value], outs: list[Value]) -> Epilogue | None:
    """The ``Epilogue`` of a fused matmul node (its matmul ``mm``, the epilogue's nodes, the body's
    inputs and outputs) that runs here (``ConvGemm``), or None where this does not apply: no
    AVX-512, a product outside ``applies`` or with batch axes over 1, an epilogue
    ``plan_epilogue`` does not take."""
    m = mm.outputs[0]
    if not HAVE_AVX512 or len(m.shape) < 2 or math.prod(m.shape[:-2]) != 1:
        return None
    rows, cols = m.shape[-2:]
    if not applies(rows, mm.inputs[0].shape[-1], cols):
        return None
    return plan_epilogue(m, epilogue, inputs, outs)
