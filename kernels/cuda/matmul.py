"""The CUDA generator of matmul and fused matmul bodies (a tiled kernel with an epilogue)."""

from __future__ import annotations

from graphc.ir import Graph, Node
from graphc.kernels.scalar_ops import Unsupported

from .loops import (
    BodyEmitter,
    IndexCtx,
    Params,
    Scope,
    contiguous_strides,
    decompose,
    finish,
    launch_config,
    numel,
)
from .source import NUMBA_TYPES, KernelSource, indent, kernel_def, literal


def gen_matmul(node: Node, body: Graph) -> KernelSource:
    """Tiled shared-memory matmul with broadcast batch dims; the body's epilogue runs per element.

    A block of mm_threads x mm_threads threads computes a (mm_threads*mm_reg)^2 output tile; each
    thread keeps mm_reg x mm_reg accumulators in registers (unrolled scalars in the generated
    source), and the K axis advances mm_bk at a time through shared memory.
    """
    cfg = launch_config()
    if not body.nodes or body.nodes[0].op != "matmul":
        raise Unsupported("matmul body must start with its matmul")
    mm = body.nodes[0]
    params = Params(node, body)
    if any(v not in params.args for v in mm.inputs):
        raise Unsupported("matmul operands must be inputs of the fused node")
    a, b = mm.inputs
    out = mm.outputs[0]
    M, K = a.shape[-2:]
    N = b.shape[-1]
    Bo = out.shape[:-2]
    batch = numel(Bo)
    dtype = out.dtype
    acc_t = "i64" if dtype in ("i32", "i64") else dtype
    bdims = decompose("bz", Bo)

    def base(shape: tuple[int, ...], mat: int) -> str:
        pad = len(Bo) - len(shape)
        terms = []
        for k, (size, stride) in enumerate(zip(shape, contiguous_strides(shape))):
            if size != 1:
                terms.append(f"{bdims[pad + k]} * {stride * mat}")
        return " + ".join(terms) or "0"

    A, Bp = params.args[a], params.args[b]
    TT, RR, BK = cfg.mm_threads, cfg.mm_reg, cfg.mm_bk
    BM = BN = TT * RR
    NT = TT * TT
    acc = NUMBA_TYPES[acc_t]
    tile_t = NUMBA_TYPES[dtype]
    zero = literal(0, dtype)
    emitter = BodyEmitter(body, params.args)
    # Thread (tx, ty) owns rows i0 + ty + m*TT and columns j0 + tx + n*TT of the tile at (i0, j0):
    # neighbouring threads
    # touch neighbouring columns (coalesced stores, conflict-free shared reads).
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
    tiles = [
        f"j0 = bj * {BN}",
        *(f"c{m}{n} = {literal(0, acc_t)}" for m in range(RR) for n in range(RR)),
        f"for t in range(0, {K}, {BK}):",
        f"    for e in range(tid, {BM * BK}, {NT}):",
        f"        r = e // {BK}",
        f"        c = e % {BK}",
        f"        if i0 + r < {M} and t + c < {K}:",
        f"            sa[c, r] = {A}[abase + (i0 + r) * {K} + t + c]",
        "        else:",
        f"            sa[c, r] = {zero}",
        f"    for e in range(tid, {BK * BN}, {NT}):",
        f"        r = e // {BN}",
        f"        c = e % {BN}",
        f"        if t + r < {K} and j0 + c < {N}:",
        f"            sb[r, c] = {Bp}[bbase + (t + r) * {N} + j0 + c]",
        "        else:",
        f"            sb[r, c] = {zero}",
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
        # conflicts; the compute loop then reads both tiles row-wise.
        f"sa = cuda.shared.array(({BK}, {BM + 1}), {tile_t})",
        f"sb = cuda.shared.array(({BK}, {BN}), {tile_t})",
        "tx = cuda.threadIdx.x",
        "ty = cuda.threadIdx.y",
        f"tid = ty * {TT} + tx",
        f"for bz in range(cuda.blockIdx.z, {batch}, cuda.gridDim.z):",
        f"    abase = {base(a.shape[:-2], M * K)}",
        f"    bbase = {base(b.shape[:-2], K * N)}",
        f"    for bi in range(cuda.blockIdx.y, {MT}, cuda.gridDim.y):",
        f"        i0 = bi * {BM}",
        f"        for bj in range(cuda.blockIdx.x, {NTL}, cuda.gridDim.x):",
        *indent(tiles, 3),
    ]
    cap = cfg.max_blocks
    grid = (max(1, min(NTL, cap)), max(1, min(MT, cap)), max(1, min(batch, cap)))
    launch = [f"kernel[{grid}, ({TT}, {TT})]({', '.join(params.names)})"] if M * N * batch else []
    return finish(node, params, [("kernel", kernel_def("kernel", params.names, lines))], launch)
