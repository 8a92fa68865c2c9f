"""LLVM-level helpers for generated CPU kernels, written with numba's ``intrinsic`` API.

numba has no scalar bitcast between integers and floats; vectorizable math (exp's 2**n) needs
one. A float max/min reduction vectorizes only through LLVM's NaN-propagating ``maximum``/
``minimum`` (``nan_max``, ``nan_min``). And an in-place loop needs a way to hide from LLVM that
a stored value came from the same address (see ``unseen``). An intrinsic is inlined into the
kernel's loop, so LLVM vectorizes it with the rest.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core.errors import TypingError
from numba.extending import intrinsic


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bit pattern is the int32 ``bits``."""
    if bits != types.int32:
        raise TypingError(f"f32_from_bits takes an int32, got {bits}")

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def _nan_extremum(name: str):
    def typer(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            raise TypingError(f"{name} takes two floats of one type, got {a} and {b}")

        def codegen(context, builder, signature, args):
            ty = args[0].type
            fn = builder.module.declare_intrinsic(f"llvm.{name}", [ty], ir.FunctionType(ty, [ty, ty]))
            return builder.call(fn, args)

        return a(a, a), codegen

    typer.__name__ = f"nan_{name[:3]}"
    return typer


# IEEE 754-2019 maximum/minimum: a NaN operand gives NaN (as NumPy's max/min), and unlike a
# select on a comparison, LLVM vectorizes a reduction over them (vmaxps and a NaN fix-up; 4x
# faster than the select on a softmax row). Signed zeros: max(-0.0, +0.0) is +0.0 in either
# order, where NumPy keeps whichever its reduction order meets first.
nan_max = intrinsic(_nan_extremum("maximum"))
nan_min = intrinsic(_nan_extremum("minimum"))


class _Freeze(ir.instructions.Instruction):
    # llvmlite's IRBuilder has no freeze; the instruction is one operand, printed with its type.
    def descr(self, buf: list) -> None:
        (operand,) = self.operands
        buf.append(f"freeze {operand.type} {operand.get_reference()}\n")


@intrinsic
def unseen(typingctx, value):
    """``value`` unchanged, through LLVM's ``freeze``, which its optimizer does not look through.

    An in-place ``x[i] = x[i] if m[i] else c`` otherwise becomes "store c where not m", and the
    vectorizer emits masked stores (vmaskmovps), microcoded on AMD Zen: the CNN's ReLU-backward
    mask ran 5x slower than with plain blends and full stores.
    """
    if not isinstance(value, (types.Float, types.Integer, types.Boolean)):
        raise TypingError(f"unseen takes a scalar, got {value}")

    def codegen(context, builder, signature, args):
        instr = _Freeze(builder.block, args[0].type, "freeze", [args[0]])
        builder._insert(instr)
        return instr

    return value(value), codegen
