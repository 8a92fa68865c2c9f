"""``torch.einsum`` as graphc primitives: diagonals, sums, transposes, broadcasts and matmuls.

The equation is parsed as PyTorch does (letters a-z and A-Z, one ``...`` per operand, implicit
output = the ellipsis dims then the labels used once, in sorted order; also the sublist form
``einsum(x, [0, 1], y, [1, 2], [0, 2])``). A label repeated within one operand takes the diagonal
(a gather on the flattened pair of dims); operands are then contracted pairwise, left to right, each
pair one batched matmul, summing first every label no later operand or the output needs.
"""

from __future__ import annotations

import math
import string
from typing import Any

import numpy as np

from graphc.ir import GraphcError
from graphc.tensor import Tensor, _at, as_tensor, current_context, matmul, user_source

__all__ = ["einsum"]

_LETTERS = string.ascii_uppercase + string.ascii_lowercase  # PyTorch's sublist numbering 0..51


def _error(message: str) -> GraphcError:
    return GraphcError(f"{_at(user_source())}einsum: {message}")


def _sublist_equation(args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """The equation string and operands of the sublist form (operand, sublist, ..., [output sublist])."""

    def labels(sub: Any) -> str:
        out = ""
        for s in sub:
            if s is Ellipsis:
                out += "..."
            elif isinstance(s, (int, np.integer)) and 0 <= int(s) < len(_LETTERS):
                out += _LETTERS[int(s)]
            else:
                raise _error(f"sublist entries must be ints in [0, 52) or Ellipsis, got {s!r}")
        return out

    operands = args[0::2][: len(args) // 2]
    terms = [labels(s) for s in args[1::2][: len(args) // 2]]
    eq = ",".join(terms)
    if len(args) % 2:
        eq += "->" + labels(args[-1])
    return eq, operands


def parse(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """(each operand's labels, the output's labels) with every ``...`` replaced by fresh labels."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise _error(f"{equation!r} names {len(terms)} operands, got {len(ranks)}")
    used = set(eq)
    spare = [c for c in _LETTERS[::-1] + "".join(map(chr, range(0x3B1, 0x3CA))) if c not in used]
    n_ell = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t), default=0)
    ell = "".join(spare[:n_ell][::-1]) if n_ell > 0 else ""
    labels = []
    for i, (t, r) in enumerate(zip(terms, ranks)):
        if t.count("...") > 1 or (t.replace("...", "") and not t.replace("...", "").isalpha()):
            raise _error(f"operand {i} subscripts {t!r}: use letters and at most one '...'")
        if "..." in t:
            k = r - len(t.replace("...", ""))
            if k < 0:
                raise _error(f"operand {i} subscripts {t!r} name more dims than its rank {r}")
            t = t.replace("...", ell[n_ell - k :] if k else "")
        if len(t) != r or not all(c in _LETTERS or c in ell for c in t):
            raise _error(f"operand {i} subscripts {t!r} do not fit its rank {r}")
        labels.append(t)
    if arrow:
        if out.count("...") > 1:
            raise _error(f"output subscripts {out!r} have more than one '...'")
        out = out.replace("...", ell)
        if not all(c in _LETTERS or c in ell for c in out):
            raise _error(f"output subscripts {out!r} must be letters")
        repeated = sorted({c for c in out if out.count(c) > 1})
        if repeated:
            raise _error(f"output subscript {repeated[0]!r} appears more than once")
        missing = [c for c in out if not any(c in lt for lt in labels)]
        if missing:
            raise _error(f"output subscripts {missing} appear in no operand")
    else:
        counts: dict[str, int] = {}
        for t in labels:
            for c in t:
                counts[c] = counts.get(c, 0) + 1
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    return labels, out


def _diagonals(x: Tensor, labels: str, operand: int) -> tuple[Tensor, str]:
    """Each label repeated in ``labels`` reduced to one dim holding the diagonal (torch.diagonal)."""
    while len(set(labels)) != len(labels):
        c = next(c for c in labels if labels.count(c) > 1)
        i, j = labels.index(c), labels.index(c, labels.index(c) + 1)
        n = x.shape[i]
        if x.shape[j] != n:
            raise _error(
                f"subscript {c!r} is repeated for operand {operand} but the sizes don't match, "
                f"{n} != {x.shape[j]}"
            )
        rest = [a for a in range(x.ndim) if a not in (i, j)]
        x = x.permute(rest + [i, j]).reshape([x.shape[a] for a in rest] + [n * n])
        index = x.ctx.array(np.arange(n, dtype=np.int64) * (n + 1), name="diagonal")
        x = x.ctx.op("gather", x, index, axis=x.ndim - 1)
        labels = "".join(labels[a] for a in rest) + c
    return x, labels


def _sum_labels(x: Tensor, labels: str, drop: set[str]) -> tuple[Tensor, str]:
    axes = tuple(i for i, c in enumerate(labels) if c in drop)
    if not axes:
        return x, labels
    return x.sum(axes), "".join(c for c in labels if c not in drop)


def _pair_product(a: Tensor, la: str, b: Tensor, lb: str, keep: set[str]) -> tuple[Tensor, str]:
    a, la = _sum_labels(a, la, {c for c in la if c not in lb and c not in keep})
    b, lb = _sum_labels(b, lb, {c for c in lb if c not in la and c not in keep})
    batch = [c for c in la if c in lb and c in keep]
    contract = [c for c in la if c in lb and c not in keep]
    left = [c for c in la if c not in lb]
    right = [c for c in lb if c not in la]
    sizes: dict[str, int] = {}
    for t, lt in ((a, la), (b, lb)):
        for c, n in zip(lt, t.shape):
            sizes[c] = max(sizes.get(c, 1), n)
    a = a.permute([la.index(c) for c in batch + left + contract])
    b = b.permute([lb.index(c) for c in batch + contract + right])
    nb = len(batch)
    bshape = [sizes[c] for c in batch]
    size_of = lambda cs: math.prod(sizes[c] for c in cs)  # noqa: E731
    a = a.broadcast_to(bshape + list(a.shape[nb:])) if list(a.shape[:nb]) != bshape else a
    b = b.broadcast_to(bshape + list(b.shape[nb:])) if list(b.shape[:nb]) != bshape else b
    a = a.reshape(bshape + [size_of(left), math.prod(a.shape[nb + len(left) :])])
    b = b.reshape(bshape + [math.prod(b.shape[nb : nb + len(contract)]), size_of(right)])
    if a.shape[-1] != b.shape[-2]:  # a contracted label of size 1 on one side broadcasts: sum it there
        if a.shape[-1] == 1:
            b = b.sum(-2, keepdim=True)
        else:
            a = a.sum(-1, keepdim=True)
    out = matmul(a, b).reshape(bshape + [sizes[c] for c in left] + [sizes[c] for c in right])
    return out, "".join(batch + left + right)


def _check_sizes(ts: list[Tensor], labels: list[str]) -> None:
    """Every label has one size across the operands, or size 1 where it broadcasts."""
    seen: dict[str, tuple[int, int]] = {}
    for k, (t, lt) in enumerate(zip(ts, labels)):
        for c, n in zip(lt, t.shape):
            m, other = seen.get(c, (1, k))
            if n != m and 1 not in (n, m):
                raise _error(
                    f"operands {other} and {k} do not broadcast: subscript {c!r} has sizes {m} and {n}"
                )
            if n != 1:
                seen[c] = (n, k)


def einsum(*args: Any) -> Tensor:
    """``torch.einsum(equation, *operands)`` (or the sublist form) with PyTorch's semantics:
    diagonals, traces, broadcasting over ``...`` and size-1 dims, contractions and sums."""
    if args and isinstance(args[0], str):
        equation, operands = args[0], args[1:]
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):  # einsum(eq, [x, y])
            from graphc.tensor_functions import einsum as eager_aware  # runs NumPy operands eagerly

            return eager_aware(equation, *operands[0])
    elif args:
        equation, operands = _sublist_equation(args)
    else:
        raise _error("needs an equation and operands")
    if not operands:
        raise _error("needs at least one operand")
    like = next((o for o in operands if isinstance(o, Tensor)), None)
    if like is None and current_context() is None:
        raise _error("expected traced Tensors as operands")
    ts = [o if isinstance(o, Tensor) else as_tensor(o, like=like) for o in operands]
    labels, out = parse(equation, [t.ndim for t in ts])
    for k in range(len(ts)):
        ts[k], labels[k] = _diagonals(ts[k], labels[k], k)
    _check_sizes(ts, labels)
    acc, lacc = ts[0], labels[0]
    for i in range(1, len(ts)):
        keep = set(out).union(*labels[i + 1 :])
        acc, lacc = _pair_product(acc, lacc, ts[i], labels[i], keep)
    acc, lacc = _sum_labels(acc, lacc, {c for c in lacc if c not in out})
    return acc.permute([lacc.index(c) for c in out]) if lacc != out else acc
