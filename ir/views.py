"""The one view rule: when a chain of movement ops reads its input's bytes as they lie.

A ``View`` is a shape, strides and an offset (all in elements) over a C-contiguous buffer. A
transpose permutes shape and strides; a slice moves the offset and scales the strides; a reshape
is a view exactly when NumPy's no-copy reshape would be one (every run of axes it merges is
contiguous within itself). Any other op is not a view. Simplify, fusion, attention, memory
planning and the backends ask this module, so "can this chain be one strided view?" has one
answer everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .graph import Node

VIEW_OPS = frozenset({"reshape", "transpose", "slice"})


def c_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides (in elements) of a dense array of ``shape``."""
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * max(shape[d + 1], 1)
    return tuple(strides)


@dataclass(frozen=True)
class View:
    """Elements ``offset + sum(i_d * strides[d])`` of a buffer, for every index i of ``shape``."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def dense(shape: Sequence[int]) -> View:
        """The whole of a C-contiguous buffer of ``shape``."""
        return View(tuple(shape), c_strides(shape), 0)

    @property
    def numel(self) -> int:
        """Number of elements the view shows."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    def is_contiguous(self) -> bool:
        """Whether the view is one dense C-ordered block (it starts at ``offset``)."""
        if self.numel == 0:
            return True
        expect = c_strides(self.shape)
        return all(s == e for d, s, e in zip(self.shape, self.strides, expect) if d != 1)

    def transpose(self, perm: Sequence[int]) -> View:
        """The view with its axes permuted (``out.shape[i] = shape[perm[i]]``)."""
        return View(tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm), self.offset)

    def slice(self, starts: Sequence[int], stops: Sequence[int], steps: Sequence[int]) -> View:
        """The view of ``[start:stop:step]`` on every axis (ranges already checked by the op's rule)."""
        shape = tuple(len(range(a, b, c)) for a, b, c in zip(starts, stops, steps))
        offset = self.offset
        if all(shape):  # an empty slice reads nothing; its offset does not matter
            offset += sum(a * s for a, s in zip(starts, self.strides))
        return View(shape, tuple(s * c for s, c in zip(self.strides, steps)), offset)

    def reshape(self, shape: Sequence[int]) -> View | None:
        """The view with a new shape of as many elements, or None where NumPy would copy."""
        shape = tuple(shape)
        if self.numel == 0 or self.is_contiguous():
            return View(shape, c_strides(shape), self.offset)
        # Size-1 axes carry no layout: drop them, match runs of axes with equal products, and
        # give each new axis the stride of the innermost old axis of its run.
        old = [(d, s) for d, s in zip(self.shape, self.strides) if d != 1]
        new_axes = [i for i, d in enumerate(shape) if d != 1]
        strides = [0] * len(shape)
        i = j = 0
        while i < len(old) and j < len(new_axes):
            run_old, run_new = [old[i]], [new_axes[j]]
            p_old, p_new = old[i][0], shape[new_axes[j]]
            i, j = i + 1, j + 1
            while p_old != p_new:
                if p_old < p_new:
                    run_old.append(old[i])
                    p_old *= old[i][0]
                    i += 1
                else:
                    run_new.append(new_axes[j])
                    p_new *= shape[new_axes[j]]
                    j += 1
            if any(s0 != s1 * d1 for (_, s0), (d1, s1) in zip(run_old, run_old[1:])):
                return None  # the run is not one block: merging its axes needs a copy
            stride = run_old[-1][1]
            for k in reversed(run_new):
                strides[k] = stride
                stride *= shape[k]
        for k in range(len(shape) - 1, -1, -1):  # size-1 axes carry no layout: C-like strides
            if shape[k] == 1:
                strides[k] = strides[k + 1] * shape[k + 1] if k + 1 < len(shape) else 1
        return View(shape, tuple(strides), self.offset)

    def apply(self, node: Node) -> View | None:
        """The view after one movement node, or None when the node is no view of its input."""
        a = node.attrs
        if node.op == "transpose":
            return self.transpose(a["perm"])
        if node.op == "slice":
            return self.slice(a["starts"], a["stops"], a["steps"])
        if node.op == "reshape":
            return self.reshape(a["shape"])
        return None


def chain_view(shape: Sequence[int], chain: Sequence[Node]) -> View | None:
    """The view that ``chain`` (input side first) makes of a dense buffer of ``shape``, or None."""
    view: View | None = View.dense(shape)
    for node in chain:
        if view is None or node.op not in VIEW_OPS:
            return None
        view = view.apply(node)
    return view


def has_blas_layout(view: View, itemsize: int = 1) -> bool:
    """Whether BLAS takes the view's matrices as they are: one unit-stride axis of the last two, the
    other a leading dimension at least as long as the rows (NumPy's own test for calling BLAS)."""
    if len(view.shape) < 2 or view.numel == 0:
        return True
    (r, c), (sr, sc) = view.shape[-2:], view.strides[-2:]
    return (
        (sc == 1 and sr >= max(c, 1))
        or (sr == 1 and sc >= max(r, 1))
        or (r == 1 and sc == 1)
        or (c == 1 and sr == 1)
    )


def block_offset(node: Node) -> int | None:
    """Byte offset of a reshape's or slice's result in its C-contiguous operand when the result is
    one contiguous block of it in the same element order (so it can share the operand's bytes),
    else None."""
    if node.op not in ("reshape", "slice"):
        return None
    x = node.inputs[0].type
    view = View.dense(x.shape).apply(node)
    if view is None or not view.is_contiguous():
        return None
    return view.offset * x.itemsize
