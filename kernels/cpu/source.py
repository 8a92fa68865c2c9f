"""Module text of generated CPU kernels: the header, the @njit line, helper functions, names.

A kernel's helpers (vectorizable erf/exp, the RNG, the reassociating float sum, intrinsics) are
added by name through ``Source.need`` and rendered sorted, so equal kernels hash equal.
"""

from __future__ import annotations

import math

from graphc.kernels import quoting
from graphc.kernels.quoting import comment
from graphc.kernels.scalar_ops import UNIFORM_BITS, hash32_lines, scalar_value

NP_TYPE = {
    "f32": "np.float32",
    "f64": "np.float64",
    "i32": "np.int32",
    "i64": "np.int64",
    "bool": "np.bool_",
    "i8": "np.int8",
    "u8": "np.uint8",
    "i16": "np.int16",
    "u16": "np.uint16",
    "u32": "np.uint32",
    "u64": "np.uint64",
}

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

# The counter-based RNG of kernels/scalar_ops, in uint64 with explicit masks so the arithmetic is
# exactly the reference's uint32 arithmetic.
_HASH_LINES = hash32_lines("x", "x", "np.uint64")
_UNIFORM_DIV = float(1 << UNIFORM_BITS)
_RNG = "".join(
    [
        "\n{deco}\ndef _hash32(x):\n",
        *(f"    {line}\n" for line in _HASH_LINES[:-1]),
        f"    return {_HASH_LINES[-1].removeprefix('x = ')}\n",
        """

{deco}
def _rng_key(seed, offset):
    u = np.uint64(offset)
    lo = u & np.uint64(0xFFFFFFFF)
    hi = (u >> np.uint64(32)) & np.uint64(0xFFFFFFFF)
    return _hash32(np.uint64(seed) ^ _hash32(lo ^ _hash32(hi)))


{deco}
def _rng_u(key, i):
    bits = _hash32((np.uint64(i) & np.uint64(0xFFFFFFFF)) ^ key)
""",
        f"    return np.float64(bits >> np.uint64({32 - UNIFORM_BITS})) * (1.0 / {_UNIFORM_DIV!r})\n",
    ]
)


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


def planes_of(array: str, per_plane: int, constant: int) -> str:
    """Source for the number of planes of kernel argument ``array``, read from its size at run time,
    so one window kernel serves every batch size and channel count of an image size (Inception
    v1's 21 im2col nodes need 11 kernels, not 21); ``constant`` where a plane is empty."""
    return f"{array}.size // {per_plane}" if per_plane > 0 else str(constant)


def literal(value: object, dtype: str) -> str:
    """A constant of a graphc dtype as numba source (through ``quoting.literal``; inf/nan via np)."""
    v = scalar_value(value, dtype)
    text = quoting.literal(v)
    if dtype == "bool":
        return text
    if isinstance(v, float) and not math.isfinite(v):
        text = text.replace("math.", "np.")
    return f"{NP_TYPE[dtype]}({text})"
