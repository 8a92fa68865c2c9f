"""LLVM-level helpers for generated CPU kernels, written with numba's ``intrinsic`` API.

numba has no scalar bitcast between integers and floats; vectorizable math (exp's 2**n) needs
one. An intrinsic is inlined into the kernel's loop, so LLVM vectorizes it with the rest.
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
