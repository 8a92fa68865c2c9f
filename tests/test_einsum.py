"""torch.einsum's forms (diagonals, traces, ellipses, broadcasting, sublists, uppercase labels) against
PyTorch: float64 values and gradients in eager mode, float32 values of compiled plans, and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import graphc
from graphc import nn
from graphc.ir import GraphcError

RNG = np.random.default_rng(3)
HERE = re.escape("test_einsum.py") + r":\d+: einsum: "

CASES = [
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("bii->bi", [(2, 3, 3)]),
    ("iij->j", [(3, 3, 2)]),
    ("ij,jj->i", [(2, 3), (3, 3)]),
    ("iji->j", [(3, 2, 3)]),
    ("iii->i", [(3, 3, 3)]),
    ("ijij->ij", [(2, 3, 2, 3)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("ii...->i...", [(3, 3, 2)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 5)]),
    ("i,j->ij", [(3,), (4,)]),
    ("ij->", [(3, 4)]),
    ("bn,anm,bm->ba", [(2, 3), (5, 3, 4), (2, 4)]),
    ("bij,bjk", [(2, 3, 4), (2, 4, 5)]),
    ("i,i->", [(5,), (5,)]),
    ("...d,...d->...", [(2, 3, 4), (3, 4)]),
    ("BHW,WC->BHC", [(2, 3, 4), (4, 5)]),
    ("b i j, b j k -> b i k", [(2, 3, 4), (2, 4, 5)]),
    ("ij,ij->ij", [(1, 3), (4, 3)]),  # a size-1 dim broadcasts
    ("i...,i...->...", [(3, 2, 4), (3, 1, 4)]),
    ("bhnd,hd->bhn", [(2, 3, 4, 5), (3, 5)]),
]


@pytest.mark.parametrize("equation,shapes", CASES, ids=[c[0] for c in CASES])
def test_einsum_values_and_gradients_as_torch(equation, shapes):
    arrays = [RNG.standard_normal(s) for s in shapes]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    expect = torch.einsum(equation, *theirs)
    w = RNG.standard_normal(expect.shape)
    (expect * torch.tensor(w)).sum().backward()
    ours = [nn.Parameter(a.copy(), dtype=np.float64) for a in arrays]
    got = graphc.einsum(equation, *ours)
    (got * w).sum().backward()
    assert got.shape == tuple(expect.shape)
    np.testing.assert_allclose(np.asarray(got), expect.detach().numpy(), rtol=1e-10, atol=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("equation,shapes", CASES[::3], ids=[c[0] for c in CASES[::3]])
def test_einsum_compiled_as_torch(equation, shapes):
    arrays = [RNG.standard_normal(s).astype(np.float32) for s in shapes]
    plan = graphc.compile(lambda *v: graphc.einsum(equation, *v), *arrays, backend="reference")
    expect = torch.einsum(equation, *map(torch.tensor, arrays)).numpy()
    np.testing.assert_allclose(plan(*arrays), expect, rtol=1e-5, atol=1e-5)


def test_einsum_sublist_form_and_operand_list():
    """``einsum(x, [0, 1], y, [1, 2], [0, 2])`` (0-25 are A-Z, 26-51 a-z) and ``einsum(eq, [x, y])``."""
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal((3, 3))
    ta, tb = torch.tensor(a), torch.tensor(b)
    ga, gb = nn.Parameter(a, dtype=np.float64), nn.Parameter(b, dtype=np.float64)
    forms = [
        ((ga, [0, 1], gb, [1, 2], [0, 2]), (ta, [0, 1], tb, [1, 2], [0, 2])),
        ((ga, [Ellipsis, 1], gb, [1, 2]), (ta, [Ellipsis, 1], tb, [1, 2])),
        ((gb, [30, 4]), (tb, [30, 4])),  # lowercase e then uppercase E: implicit output "Ee"
        ((gb, [51, 51]), (tb, [51, 51])),  # a trace
        (("ij,jk", [ga, gb]), ("ij,jk", [ta, tb])),
    ]
    for ours, theirs in forms:
        np.testing.assert_allclose(
            np.asarray(graphc.einsum(*ours)), torch.einsum(*theirs).numpy(), rtol=1e-12
        )


@pytest.mark.parametrize(
    "equation,shapes,message",
    [
        ("ii->i", [(3, 4)], r"subscript 'i' is repeated for operand 0 but the sizes don't match, 3 != 4"),
        (
            "ij,jk->ik",
            [(2, 3), (4, 5)],
            r"operands 0 and 1 do not broadcast: subscript 'j' has sizes 3 and 4",
        ),
        ("ij->ii", [(2, 2)], r"output subscript 'i' appears more than once"),
        ("ij->k", [(2, 2)], r"output subscripts \['k'\] appear in no operand"),
        ("ijk->i", [(2, 2)], r"operand 0 subscripts 'ijk' do not fit its rank 2"),
        ("i.j->i", [(2, 2)], r"operand 0 subscripts 'i\.j': use letters and at most one '\.\.\.'"),
        ("ij,jk", [(2, 2)], r"'ij,jk' names 2 operands, got 1"),
    ],
)
def test_einsum_errors_name_the_line(equation, shapes, message):
    arrays = [RNG.standard_normal(s).astype(np.float32) for s in shapes]
    with pytest.raises(RuntimeError):
        torch.einsum(equation, *map(torch.tensor, arrays))
    with pytest.raises(GraphcError, match=HERE + message):
        graphc.trace(lambda *v: graphc.einsum(equation, *v), *arrays)
