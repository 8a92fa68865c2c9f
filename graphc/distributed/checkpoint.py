"""Checkpoints in a data-parallel job: rank 0 writes, every rank reads the same file.

``save_checkpoint`` has rank 0 write the file (atomically, as ``graphc.save_checkpoint`` always
does) and then waits until every rank gets there, so no rank reads or overwrites a checkpoint
before it is complete. ``load_checkpoint`` loads the file on every rank and then checks that all
ranks hold the same values (one rank reading another file is an error naming the difference).
"""

from __future__ import annotations

import os
from typing import Any

from graphc.checkpoint import load_checkpoint as _load
from graphc.checkpoint import save_checkpoint as _save
from graphc.ir import GraphcError

from . import comm
from .consistency import check_same_model


def save_checkpoint(path: str | os.PathLike, target: Any, **options: Any) -> None:
    """``graphc.save_checkpoint`` on rank 0 only; every rank returns once the file is complete."""
    error = None
    if comm.rank() == 0:
        try:
            _save(path, target, **options)
        except Exception as err:  # reported on every rank below, raised here
            error = err
    if comm.is_initialized():
        reports = comm.gather_texts("" if error is None else str(error), f"saving checkpoint {path!r}")
        if error is None and reports[0]:
            raise GraphcError(f"rank 0 failed to save checkpoint {os.fspath(path)!r}: {reports[0]}")
    if error is not None:
        raise error


def load_checkpoint(path: str | os.PathLike, target: Any, **options: Any) -> dict:
    """``graphc.load_checkpoint`` on every rank, then a check that all ranks agree; returns ``extra``."""
    extra = _load(path, target, **options)
    model = getattr(target, "model", target)
    if comm.is_initialized():
        check_same_model(model)
    return extra
