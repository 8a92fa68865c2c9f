"""Every rank must train the same model: compare names, shapes, dtypes and values against rank 0.

``check_same_model`` sends rank 0's description of the model (JSON: each state_dict entry's
name, shape, dtype and a sha256 of its bytes) to every rank; each rank names its first
difference, and if any rank found one, every rank raises the same GraphcError naming it.
``broadcast_parameters`` first checks names, shapes and dtypes, then copies rank 0's values into
every rank's arrays in place (a compiled step keeps holding them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from graphc.ir import GraphcError

from . import comm


def _arrays(model: Any) -> list[tuple[str, np.ndarray]]:
    if not hasattr(model, "state_dict"):
        raise GraphcError(f"graphc.distributed: expected a graphc.nn.Module, got {type(model).__name__}")
    out = []
    for name, p in model.state_dict().items():
        arr = p if isinstance(p, np.ndarray) else getattr(p, "data", p)
        out.append((name, np.asarray(arr)))
    return out


def describe(model: Any, values: bool = True) -> list[list]:
    """[name, shape, dtype, sha256 of the values or ""] for each state_dict entry, in order."""
    rows = []
    for name, arr in _arrays(model):
        digest = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() if values else ""
        rows.append([name, list(arr.shape), arr.dtype.str, digest])
    return rows


def first_difference(mine: list[list], theirs: list[list], me: int) -> str:
    """The first way ``mine`` (rank ``me``) differs from rank 0's ``theirs``; "" when none."""
    for k, (a, b) in enumerate(zip(mine, theirs)):
        if a[0] != b[0]:
            return f"entry {k} is {a[0]!r} on rank {me} but {b[0]!r} on rank 0 (parameter names differ)"
        if a[1] != b[1]:
            return f"{a[0]!r} has shape {tuple(a[1])} on rank {me} but {tuple(b[1])} on rank 0"
        if a[2] != b[2]:
            return f"{a[0]!r} has dtype {a[2]} on rank {me} but {b[2]} on rank 0"
        if a[3] != b[3]:
            return (
                f"the values of {a[0]!r} differ between rank {me} and rank 0 (seed every rank alike, or "
                "call graphc.distributed.broadcast_parameters(model) before compile_train)"
            )
    if len(mine) != len(theirs):
        extra = mine[len(theirs)][0] if len(mine) > len(theirs) else theirs[len(mine)][0]
        where = f"rank {me} only" if len(mine) > len(theirs) else "rank 0 only"
        return f"{len(mine)} entries on rank {me} but {len(theirs)} on rank 0 ({extra!r} is on {where})"
    return ""


def check_same_model(model: Any, values: bool = True) -> None:
    """Raise a GraphcError on every rank, naming the first difference, unless all ranks' models agree."""
    if comm.world_size() == 1:
        return
    mine = describe(model, values)
    text = json.dumps(mine).encode()
    theirs = json.loads(comm.broadcast_bytes(text, "comparing the model with rank 0's").decode())
    found = first_difference(mine, theirs, comm.rank())
    reports = comm.gather_texts(found, "comparing the model across ranks")
    for r, report in enumerate(reports):
        if report:
            raise GraphcError(f"graphc.distributed: the model differs across ranks (rank {r}): {report}")


def broadcast_parameters(model: Any, root: int = 0) -> None:
    """Copy rank ``root``'s parameters and buffers into every rank's model, in place."""
    if comm.world_size() == 1:
        return
    check_same_model(model, values=False)
    for name, arr in _arrays(model):
        comm.broadcast_array(arr, f"broadcasting {name!r} from rank {root}", root)


def check_same_text(text: str, what: str) -> None:
    """Raise on every rank unless every rank's ``text`` equals rank 0's (``what`` names it)."""
    if comm.world_size() == 1:
        return
    theirs = comm.broadcast_bytes(text.encode(), f"comparing {what} with rank 0's").decode()
    found = "" if text == theirs else f"{what} on rank {comm.rank()} differs from rank 0's"
    for r, report in enumerate(comm.gather_texts(found, f"comparing {what} across ranks")):
        if report:
            raise GraphcError(f"graphc.distributed: ranks disagree (rank {r}): {report}")
