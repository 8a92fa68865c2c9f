"""The CUDA generator of matmul and fused matmul bodies (a tiled kernel with an epilogue).

The body is read through ``ir.fused.matmul_parts``: each operand is an ``OperandView`` (shape,
strides and offset in elements over a body input's dense buffer), so a prologue of transposes,
slices and reshapes costs nothing: the tile loads index the input through the view, no copy.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphc.ir import Graph, GraphcError, Node
from graphc.ir.fused import MatmulParts, OperandView, matmul_parts
from graphc.ir.views import View
from graphc.kernels.scalar_ops import Unsupported

from .loops import BodyEmitter, IndexCtx, Params, Scope, decompose, finish, launch_config, numel
from .source import NUMBA_TYPES, KernelSource, indent, kernel_def, literal


def body_parts(node: Node, body: Graph) -> MatmulParts:
    """The contract's parts of a fused matmul node, or of a primitive matmul's one-node body."""
    if node.op == "fused":
        try:
            return matmul_parts(node)
        except GraphcError as err:
            raise Unsupported(str(err)) from None
    (mm,) = body.nodes
    views = tuple(OperandView(v, (), View.dense(v.shape)) for v in mm.inputs)
    return MatmulParts((), mm, (), views)  # type: ignore[arg-type]


def scaled(expr: str, stride: int) -> str:
    """``expr * stride`` as short source text."""
    if stride == 0:
        return "0"
    if stride == 1:
        return expr
    return f"({expr}) * {stride}" if " " in expr else f"{expr} * {stride}"


def batch_base(view: View, bdims: Sequence[str]) -> str:
    """Flat offset of the view's matrix at the batch index ``bdims`` (its batch dims broadcast)."""
    pad = len(bdims) - (len(view.shape) - 2)
    terms = [str(view.offset)] if view.offset else []
    for k, (size, stride) in enumerate(zip(view.shape[:-2], view.strides[:-2])):
        if size != 1:
            terms.append(scaled(bdims[pad + k], stride))
    return " + ".join(terms) or "0"


def element(array: str, base: str, view: View, row: str, col: str) -> str:
    """``array`` at (row, col) of the view's matrix starting at ``base``."""
    sr, sc = view.strides[-2:]
    terms = [t for t in (base, scaled(row, sr), scaled(col, sc)) if t != "0"]
    return f"{array}[{' + '.join(terms) or '0'}]"


def tile_load(rows: int, cols: int, threads: int, fetch: str, row_fast: bool) -> list[str]:
    """Lines loading a rows x cols tile: ``fetch`` stores element (r, c) into shared memory (bounds
    checked); neighbouring threads take neighbouring elements of the operand's unit-stride axis
    (``row_fast``: its rows) so the global reads coalesce."""
    split = [f"r = e % {rows}", f"c = e // {rows}"] if row_fast else [f"r = e // {cols}", f"c = e % {cols}"]
    loop = f"for e in range(tid, {rows * cols}, {threads}):"
    return [loop, *indent(split, 1), *indent(fetch.split("\n"), 1)]


def gen_matmul(node: Node, body: Graph) -> KernelSource:
    """Tiled shared-memory matmul with broadcast batch dims; the body's epilogue runs per element.

    A block of mm_threads x mm_threads threads computes a (mm_threads*mm_reg)^2 output tile; each
    thread keeps mm_reg x mm_reg accumulators in registers (unrolled scalars in the generated
    source), and the K axis advances mm_bk at a time through shared memory. Operands are read
    through their views (a transposed weight, q/k/v sliced out of a packed projection).
    """
    cfg = launch_config()
    parts = body_parts(node, body)
    mm = parts.matmul
    params = Params(node, body)
    views = []
    for ov in parts.operands:
        if ov.input not in params.args:
            raise Unsupported(f"matmul operand from %{ov.input.name}, not an input of the node")
        views.append((params.args[ov.input], ov.view))
    (A, va), (Bp, vb) = views
    out = mm.outputs[0]
    M, K = va.shape[-2:]
    N = vb.shape[-1]
    Bo = out.shape[:-2]
    batch = numel(Bo)
    dtype = out.dtype
    acc_t = "i64" if dtype in ("i32", "i64") else dtype
    bdims = decompose("bz", Bo)

    TT, RR, BK = cfg.mm_threads, cfg.mm_reg, cfg.mm_bk
    BM = BN = TT * RR
    NT = TT * TT
    acc = NUMBA_TYPES[acc_t]
    tile_t = NUMBA_TYPES[dtype]
    zero = literal(0, dtype)
    emitter = BodyEmitter(body, params.args)
    # Thread (tx, ty) owns rows i0 + ty + m*TT and columns j0 + tx + n*TT of the tile at (i0, j0):
    # neighbouring threads touch neighbouring columns (coalesced stores, conflict-free shared reads).
    epilogue = []
    for m in range(RR):
        epilogue.append(f"row{m} = i0 + ty + {m * TT}")
    for n in range(RR):
        epilogue.append(f"col{n} = j0 + tx + {n * TT}")
    for m in range(RR):
        for n in range(RR):
            i, j = f"row{m}", f"col{n}"
            ctx = IndexCtx(out.shape, bdims + [i, j], f"bz * {M * N} + {i} * {N} + {j}", f"d{m}{n}_")
            scope = Scope(ctx, f"s{m}{n}", {out: f"mm{m}{n}"})
            emitter.store([(v, f"out{k}") for k, v in enumerate(body.outputs)], scope)
            epilogue += [f"if {i} < {M} and {j} < {N}:", f"    mm{m}{n} = {tile_t}(c{m}{n})"]
            epilogue += indent(scope.code(), 1)
    # A tile: rows i0 + r of A, columns t + c (stored k-major); B tile: rows t + r, columns j0 + c.
    a_fast = va.strides[-2] == 1 and va.strides[-1] != 1
    b_fast = vb.strides[-2] == 1 and vb.strides[-1] != 1
    fetch_a = (
        f"if i0 + r < {M} and t + c < {K}:\n"
        f"    sa[c, r] = {element(A, 'abase', va, 'i0 + r', 't + c')}\n"
        f"else:\n    sa[c, r] = {zero}"
    )
    fetch_b = (
        f"if t + r < {K} and j0 + c < {N}:\n"
        f"    sb[r, c] = {element(Bp, 'bbase', vb, 't + r', 'j0 + c')}\n"
        f"else:\n    sb[r, c] = {zero}"
    )
    tiles = [
        f"j0 = bj * {BN}",
        *(f"c{m}{n} = {literal(0, acc_t)}" for m in range(RR) for n in range(RR)),
        f"for t in range(0, {K}, {BK}):",
        *indent(tile_load(BM, BK, NT, fetch_a, a_fast), 1),
        *indent(tile_load(BK, BN, NT, fetch_b, b_fast), 1),
        "    cuda.syncthreads()",
        f"    for kk in range({BK}):",
        *(f"        a{m} = {acc}(sa[kk, ty + {m * TT}])" for m in range(RR)),
        *(f"        b{n} = {acc}(sb[kk, tx + {n * TT}])" for n in range(RR)),
        *(f"        c{m}{n} += a{m} * b{n}" for m in range(RR) for n in range(RR)),
        "    cuda.syncthreads()",
        *epilogue,
    ]
    MT, NTL = -(-M // BM), -(-N // BN)
    lines = [
        # The A tile is stored k-major with one pad column so its column-wise stores avoid bank
        # conflicts; the compute loop then reads both tiles row-wise. A B tile loaded down its
        # columns (a transposed weight) gets a pad column too.
        f"sa = cuda.shared.array(({BK}, {BM + 1}), {tile_t})",
        f"sb = cuda.shared.array(({BK}, {BN + 1 if b_fast else BN}), {tile_t})",
        "tx = cuda.threadIdx.x",
        "ty = cuda.threadIdx.y",
        f"tid = ty * {TT} + tx",
        f"for bz in range(cuda.blockIdx.z, {batch}, cuda.gridDim.z):",
        f"    abase = {batch_base(va, bdims)}",
        f"    bbase = {batch_base(vb, bdims)}",
        f"    for bi in range(cuda.blockIdx.y, {MT}, cuda.gridDim.y):",
        f"        i0 = bi * {BM}",
        f"        for bj in range(cuda.blockIdx.x, {NTL}, cuda.gridDim.x):",
        *indent(tiles, 3),
    ]
    cap = cfg.max_blocks
    grid = (max(1, min(NTL, cap)), max(1, min(MT, cap)), max(1, min(batch, cap)))
    launch = [f"kernel[{grid}, ({TT}, {TT})]({', '.join(params.names)})"] if M * N * batch else []
    return finish(node, params, [("kernel", kernel_def("kernel", params.names, lines))], launch)
