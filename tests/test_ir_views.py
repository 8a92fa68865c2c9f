"""ir/views.py against NumPy: a chain of transposes, slices and reshapes is a view exactly when NumPy's
own ops give one, and then the View's strides and offset address the same elements."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from graphc.ir import Graph, TensorType
from graphc.ir.views import View, chain_view, has_blas_layout


def _factorizations(n: int, rank: int) -> list[tuple[int, ...]]:
    if rank == 1:
        return [(n,)]
    out = []
    for d in range(1, n + 1):
        if n % d == 0:
            out += [(d, *rest) for rest in _factorizations(n // d, rank - 1)]
    return out


@st.composite
def chains(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    steps = []
    cur = shape
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["transpose", "slice", "reshape"]))
        if kind == "transpose":
            perm = tuple(draw(st.permutations(range(len(cur)))))
            steps.append(("transpose", {"perm": perm}))
            cur = tuple(cur[p] for p in perm)
        elif kind == "slice":
            starts, stops, sts = [], [], []
            for d in cur:
                a = draw(st.integers(0, d))
                b = draw(st.integers(a, d))
                starts.append(a), stops.append(b), sts.append(draw(st.integers(1, 3)))
            steps.append(("slice", {"starts": tuple(starts), "stops": tuple(stops), "steps": tuple(sts)}))
            cur = tuple(len(range(a, b, c)) for a, b, c in zip(starts, stops, sts))
        else:
            n = int(np.prod(cur))
            if n == 0:
                continue
            new = draw(st.sampled_from(_factorizations(n, draw(st.integers(1, 4)))))
            steps.append(("reshape", {"shape": new}))
            cur = new
    return shape, steps


def _numpy(arr, op, attrs):
    if op == "transpose":
        return arr.transpose(attrs["perm"])
    if op == "slice":
        return arr[tuple(slice(*r) for r in zip(attrs["starts"], attrs["stops"], attrs["steps"]))]
    return arr.reshape(attrs["shape"])


def _nodes(shape, steps):
    g = Graph("g")
    v = g.add_input("x", TensorType(shape, "f32"))
    nodes = []
    for op, attrs in steps:
        v = g.op(op, v, **attrs)
        nodes.append(g.nodes[-1])
    return nodes


@settings(max_examples=400, deadline=None)
@given(chains())
def test_views_match_numpy(case):
    shape, steps = case
    base = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    arr, copied = base, False
    for op, attrs in steps:
        arr = _numpy(arr, op, attrs)
        copied |= arr.size > 0 and not np.shares_memory(arr, base)
    view = chain_view(shape, _nodes(shape, steps))
    assert (view is None) == copied, f"view {view}, numpy copied: {copied}"
    if view is None:
        return
    assert view.shape == arr.shape
    if arr.size:
        flat = base.reshape(-1)
        got = np.lib.stride_tricks.as_strided(
            flat[view.offset :], view.shape, tuple(s * 4 for s in view.strides), writeable=False
        )
        np.testing.assert_array_equal(got, arr)
        assert view.is_contiguous() == arr.flags.c_contiguous or arr.size == 1


def test_blas_layout():
    assert has_blas_layout(View.dense((3, 4)))
    assert has_blas_layout(View.dense((4, 3)).transpose((1, 0)))
    assert not has_blas_layout(View.dense((3, 8)).slice((0, 0), (3, 8), (1, 2)))
    assert has_blas_layout(View.dense((2, 3, 8)).slice((0, 0, 0), (2, 3, 4), (1, 1, 1)))
