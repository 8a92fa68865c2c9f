"""Hand-written numba kernels for the primitives that need no code generation.

They take canonical views prepared by the Python wrappers in ``kernels.cpu`` (a reduction or
index axis becomes the middle axis of an (A, N, B) view, which costs nothing for C-contiguous
arrays), so each compiles once per dtype whatever the rank. Being ordinary module functions
with ``cache=True``, numba caches them in this package's ``__pycache__`` (or its user-wide
cache directory when that is read-only), not in the graphc kernel cache.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_OPTS)
def copy_flat(src, dst):
    """dst[k] = src[k] over two 1-D arrays (reshape's copy)."""
    for k in range(src.shape[0]):
        dst[k] = src[k]


@njit(**_OPTS)
def copy_into3(src, dst, offset):
    """dst[a, offset + k, b] = src[a, k, b] (one operand of concat; both C-contiguous).

    Each ``a`` is one contiguous run of ``nk * nb`` elements on both sides: a flat inner loop
    vectorizes where a trailing ``nb`` of 1 (a concat on the last axis) kept it scalar (~15x)."""
    na, nk, nb = src.shape
    width = nk * nb
    s = src.reshape((na, width))
    d = dst.reshape((na, dst.shape[1] * nb))
    lo = offset * nb
    for a in range(na):
        da = d[a, lo : lo + width]
        sa = s[a]
        for j in range(width):
            da[j] = sa[j]


@njit(**_OPTS)
def argmax3(x, out):
    """out[a, b] = first index of the maximum of x[a, :, b]; a NaN counts as the maximum."""
    na, n, nb = x.shape
    if nb == 1:  # reduced axis last: scan each contiguous row
        for a in range(na):
            best = x[a, 0, 0]
            arg = 0
            if best == best:
                for k in range(1, n):
                    v = x[a, k, 0]
                    if v > best or v != v:
                        best = v
                        arg = k
                        if v != v:
                            break
            out[a, 0] = arg
        return
    best_row = np.empty(nb, x.dtype)
    for a in range(na):
        for b in range(nb):
            best_row[b] = x[a, 0, b]
            out[a, b] = 0
        for k in range(1, n):  # rows in memory order, running best per column
            for b in range(nb):
                v = x[a, k, b]
                cur = best_row[b]
                if cur == cur and (v > cur or v != v):
                    best_row[b] = v
                    out[a, b] = k


@njit(**_OPTS)
def gather3(x, idx, out):
    """out[a, k, b] = x[a, idx[k], b]; returns the position of a bad index, or -1."""
    na, n, nb = x.shape
    for k in range(idx.shape[0]):
        if idx[k] < 0 or idx[k] >= n:
            return k
    for a in range(na):
        for k in range(idx.shape[0]):
            i = idx[k]
            for b in range(nb):
                out[a, k, b] = x[a, i, b]
    return -1


@njit(**_OPTS)
def scatter_add3(idx, updates, out):
    """out = 0; out[a, idx[k], b] += updates[a, k, b] (repeats add up, negative indices wrap).

    Returns the position of an out-of-range index, or -1.
    """
    na, n, nb = out.shape
    for k in range(idx.shape[0]):
        if idx[k] < -n or idx[k] >= n:
            return k
    for a in range(na):
        for i in range(n):
            for b in range(nb):
                out[a, i, b] = 0
    for a in range(na):
        for k in range(idx.shape[0]):
            i = idx[k]
            if i < 0:
                i += n
            for b in range(nb):
                out[a, i, b] += updates[a, k, b]
    return -1


@njit(**_OPTS)
def scatter_reduce3(idx, updates, out, init, mode):
    """out = init; out[a, idx[k], b] = combine(out[a, idx[k], b], updates[a, k, b]) in order of k.

    ``mode`` 0 multiplies, 1 keeps the maximum, 2 the minimum (a NaN update wins, a NaN stays);
    negative indices wrap. Returns the position of an out-of-range index, or -1.
    """
    na, n, nb = out.shape
    for k in range(idx.shape[0]):
        if idx[k] < -n or idx[k] >= n:
            return k
    for a in range(na):
        for i in range(n):
            for b in range(nb):
                out[a, i, b] = init
    for a in range(na):
        for k in range(idx.shape[0]):
            i = idx[k]
            if i < 0:
                i += n
            for b in range(nb):
                u = updates[a, k, b]
                o = out[a, i, b]
                if mode == 0:
                    out[a, i, b] = o * u
                elif mode == 1:
                    if u > o or u != u:
                        out[a, i, b] = u
                elif u < o or u != u:
                    out[a, i, b] = u
    return -1
