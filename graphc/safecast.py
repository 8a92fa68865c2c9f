"""Safe in-place restores: check that a loaded array fits an existing one, then copy into it.

Restoring state (checkpoints, optimizer state) writes into the arrays a compiled plan already
holds, so it must never rebind them, and must never change a value's meaning on the way: only a
same-kind cast (bool -> int -> float, narrower or wider) is allowed, and a value that does not fit
the destination (a finite float64 that overflows float32, an int64 outside int32) is refused.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import GraphcError

_KINDS = "biuf"  # bool, signed and unsigned integers, floats: what graphc's state arrays hold


def check_fits(src: np.ndarray, dst: np.ndarray, where: str) -> None:
    """Raise GraphcError naming ``where`` unless ``src`` can be copied into ``dst`` without harm.

    Same shape, a numeric dtype, a same-kind cast, and every value representable in ``dst``'s
    dtype (integers in range; finite floats stay finite).
    """
    if not isinstance(src, np.ndarray):
        raise GraphcError(f"{where}: expected an array, got {type(src).__name__}")
    if src.shape != dst.shape:
        raise GraphcError(f"{where}: shape {src.shape} does not fit the existing array's {dst.shape}")
    if src.dtype.kind not in _KINDS or src.dtype.hasobject:
        raise GraphcError(f"{where}: dtype {src.dtype} is not a numeric dtype")
    if not np.can_cast(src.dtype, dst.dtype, casting="same_kind"):
        raise GraphcError(
            f"{where}: dtype {src.dtype} cannot be cast safely to the existing array's {dst.dtype}"
        )
    if src.dtype == dst.dtype or src.size == 0:
        return
    if dst.dtype.kind in "iu" and src.dtype.kind in "iu":
        info = np.iinfo(dst.dtype)
        if int(src.min()) < info.min or int(src.max()) > info.max:
            raise GraphcError(f"{where}: values of {src.dtype} do not fit {dst.dtype}")
    elif dst.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            cast = src.astype(dst.dtype)
        overflow = np.isfinite(src) & ~np.isfinite(cast) if src.dtype.kind == "f" else ~np.isfinite(cast)
        if np.any(overflow):
            index = tuple(int(i) for i in np.argwhere(overflow)[0])
            raise GraphcError(
                f"{where}: value {src[index]!r} at index {index} does not fit {dst.dtype} "
                "(it would become inf)"
            )


def copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    """Copy ``src`` into ``dst`` in place (checked beforehand with :func:`check_fits`)."""
    np.copyto(dst.view(np.ndarray), src, casting="same_kind")
