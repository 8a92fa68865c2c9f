"""The AVX-512 VNNI micro-kernel of the CPU integer GEMM, written with numba's ``intrinsic`` API.

``vnni_tile(a, ia, b, jb, k, acc)`` computes the 4 x 4 block of dot products
``acc[r, jb + c] = sum_t int32(a[ia + r, t]) * int32(b[jb + c, t])`` (``a`` a u8 matrix, ``b``
an i8 matrix, both with rows of ``k`` contiguous elements, ``acc`` an i32 [4, n] matrix): 16 zmm
accumulators of 16 i32 lanes, each step loading 64 bytes of four rows of ``a`` and four rows of
``b`` and issuing 16 ``vpdpbusd`` (``llvm.x86.avx512.vpdpbusd.512``: per i32 lane the sum of four
u8 x s8 products, exact: |4 * 255 * 128| < 2**31, no saturation). The last ``k % 64`` bytes load
as the row's last 64 bytes with a's bytes already counted zeroed (so k >= 64). The 16
accumulators' lanes are summed at the end by a transposing shuffle tree into one vector, stored
as four rows of 4 (exact while the dot product fits i32, as the portable kernel).
``HAVE_VNNI`` says whether this CPU runs it; callers fall back to the portable kernel where it
does not (or for operands other than u8 x i8).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

ROWS = 4  # rows of a per tile
COLS = 4  # rows of b per tile
_LANES = 16  # i32 lanes of a zmm register
_VEC = 64  # bytes of a zmm register


def _host_has_vnni() -> bool:
    """Whether numba compiles for this host (no NUMBA_CPU_NAME/NUMBA_CPU_FEATURES override, e.g. a
    portable ``generic`` target) and the host has AVX-512 VNNI."""
    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:
        return False
    feats = llvm.get_host_cpu_features()
    return bool(feats.get("avx512vnni") and feats.get("avx512bw") and feats.get("avx512f"))


HAVE_VNNI = _host_has_vnni()


def _row_ptr(builder: ir.IRBuilder, data: ir.Value, row: ir.Value, ld: ir.Value, col: ir.Value) -> ir.Value:
    return builder.gep(data, [builder.add(builder.mul(row, ld), col)])


def _span(start: int, count: int) -> list[int]:
    return list(range(start, start + count))


def _sum_lanes(builder: ir.IRBuilder, vectors: list[ir.Value]) -> ir.Value:
    """One <16 x i32> whose lane s is the sum of the 16 lanes of ``vectors[s]`` (16 vectors).

    A transposing tree: each level pairs vectors holding their sources' partial sums in blocks of
    ``block`` lanes and adds the low and high halves of every block, leaving twice the sources
    per vector in blocks of half the size (45 shuffles and adds, not 16 horizontal sums).
    """
    vi = ir.VectorType(ir.IntType(32), _LANES)
    level, block = list(vectors), _LANES
    while len(level) > 1:
        half = block // 2
        count = _LANES // block  # sources per vector
        lo = [side + k * block + t for side in (0, _LANES) for k in range(count) for t in range(half)]
        hi = [i + half for i in lo]
        nxt = []
        for x, y in zip(level[::2], level[1::2]):
            a = builder.shuffle_vector(x, y, ir.Constant(vi, lo))
            b = builder.shuffle_vector(x, y, ir.Constant(vi, hi))
            nxt.append(builder.add(a, b))
        level, block = nxt, half
    assert level[0].type == vi
    return level[0]


def _tile(transposed: bool):
    """The typer of ``vnni_tile`` (or, ``transposed``, ``vnni_tile_t``); see the module docstring."""

    def typer(typingctx, a, ia, b, jb, k, acc):
        if not (
            isinstance(a, types.Array)
            and a.dtype == types.uint8
            and isinstance(b, types.Array)
            and b.dtype == types.int8
            and isinstance(acc, types.Array)
            and acc.dtype == types.int32
        ):
            raise TypingError(f"vnni_tile takes u8 and i8 matrices and an i32 vector, got {a}, {b}, {acc}")
        if not all(isinstance(t, types.Integer) for t in (ia, jb, k)):
            raise TypingError(f"vnni_tile takes integer offsets, got {ia}, {jb}, {k}")
        if acc.ndim != 2:
            raise TypingError(f"vnni_tile stores into a 2-D i32 array [4, n], got {acc}")
        sig = types.void(a, types.intp, b, types.intp, types.intp, acc)

        def codegen(context, builder, signature, args):
            a_arr = context.make_array(signature.args[0])(context, builder, value=args[0])
            b_arr = context.make_array(signature.args[2])(context, builder, value=args[2])
            o_arr = context.make_array(signature.args[5])(context, builder, value=args[5])
            ia_v, jb_v, k_v = (
                context.cast(builder, args[i], signature.args[i], types.intp) for i in (1, 3, 4)
            )
            i64 = ir.IntType(64)
            byte, i32, i1 = ir.IntType(8), ir.IntType(32), ir.IntType(1)
            vbyte, vi32, vmask = (
                ir.VectorType(byte, _VEC),
                ir.VectorType(i32, _LANES),
                ir.VectorType(i1, _VEC),
            )
            lda = cgutils.unpack_tuple(builder, a_arr.strides, 2)[0]  # bytes per row (u8: elements)
            ldb = cgutils.unpack_tuple(builder, b_arr.strides, 2)[0]
            dot = builder.module.declare_intrinsic(
                "llvm.x86.avx512.vpdpbusd.512", (), ir.FunctionType(vi32, [vi32, vi32, vi32])
            )
            a_rows = [
                _row_ptr(builder, a_arr.data, builder.add(ia_v, i64(r)), lda, i64(0)) for r in range(ROWS)
            ]
            b_rows = [
                _row_ptr(builder, b_arr.data, builder.add(jb_v, i64(c)), ldb, i64(0)) for c in range(COLS)
            ]
            slots = [cgutils.alloca_once_value(builder, ir.Constant(vi32, None)) for _ in range(ROWS * COLS)]
            full = builder.udiv(k_v, i64(_VEC))

            def accumulate(av: list, bv: list) -> None:
                for r in range(ROWS):
                    for c in range(COLS):
                        slot = slots[r * COLS + c]
                        builder.store(builder.call(dot, [builder.load(slot), av[r], bv[c]]), slot)

            def plain(ptr: ir.Value) -> ir.Value:
                return builder.load(builder.bitcast(ptr, vbyte.as_pointer()), align=1)

            with cgutils.for_range(builder, full) as loop:
                at = builder.mul(loop.index, i64(_VEC))
                av = [builder.bitcast(plain(builder.gep(p, [at])), vi32) for p in a_rows]
                bv = [builder.bitcast(plain(builder.gep(p, [at])), vi32) for p in b_rows]
                accumulate(av, bv)
            tail = builder.sub(k_v, builder.mul(full, i64(_VEC)))
            with builder.if_then(builder.icmp_unsigned("!=", tail, i64(0))):
                # The last 64 bytes of each row; a's bytes before the tail are zeroed (their b's
                # bytes were counted already), so a product lands once (this needs k >= 64).
                skip = builder.trunc(builder.sub(i64(_VEC), tail), byte)
                count = builder.insert_element(ir.Constant(vbyte, None), skip, i32(0))
                count = builder.shuffle_vector(
                    count, ir.Constant(vbyte, None), ir.Constant(ir.VectorType(i32, _VEC), [0] * _VEC)
                )
                keep = builder.icmp_unsigned(">=", ir.Constant(vbyte, list(range(_VEC))), count)
                assert keep.type == vmask
                zero = ir.Constant(vbyte, None)
                at = builder.sub(k_v, i64(_VEC))
                av = [
                    builder.bitcast(builder.select(keep, plain(builder.gep(p, [at])), zero), vi32)
                    for p in a_rows
                ]
                bv = [builder.bitcast(plain(builder.gep(p, [at])), vi32) for p in b_rows]
                accumulate(av, bv)
            sums = [builder.load(slot) for slot in slots]  # r-major: lane group r holds c = 0..3
            if transposed:  # c-major: lane group c holds r = 0..3
                sums = [sums[r * COLS + c] for c in range(COLS) for r in range(ROWS)]
            total = _sum_lanes(builder, sums)
            ldo = cgutils.unpack_tuple(builder, o_arr.strides, 2)[0]
            groups, width = (COLS, ROWS) if transposed else (ROWS, COLS)
            row0, col0 = (jb_v, ia_v) if transposed else (i64(0), jb_v)
            for g in range(groups):
                part = builder.shuffle_vector(
                    total, total, ir.Constant(ir.VectorType(i32, width), _span(g * width, width))
                )
                at = builder.add(
                    builder.mul(builder.add(row0, i64(g)), ldo), builder.mul(col0, i64(4))
                )  # bytes
                ptr = builder.gep(builder.bitcast(o_arr.data, byte.as_pointer()), [at])
                builder.store(part, builder.bitcast(ptr, part.type.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = "vnni_tile_t" if transposed else "vnni_tile"
    return typer


# acc[r, jb + c] = a[ia + r] . b[jb + c] for r, c < 4 (acc [4, n]: a block of 4 rows).
vnni_tile = intrinsic(_tile(False))
# acc[jb + c, ia + r] = a[ia + r] . b[jb + c] for r, c < 4 (acc [n, m]: the product transposed).
vnni_tile_t = intrinsic(_tile(True))
