"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one zip file holding ``checkpoint.json`` (step count, optimizer hyper-parameters,
scheduler and data-loader positions, user extras) and ``arrays.npz`` (model parameters and
buffers, optimizer state, other persistent state of the compiled step such as the dropout
counter ``rng.offset``). It is written to a temporary file beside the target and moved over it
with ``os.replace``, so a crash never leaves a half-written checkpoint. No pickle: loading
a checkpoint cannot run code.

Loading copies every array into the existing arrays in place, so an already compiled train step
(which holds those arrays) continues from the loaded state without recompiling.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from graphc.ir import GraphcError
from graphc.optim import Optimizer

FORMAT = "graphc-checkpoint"
VERSION = 1
_META = "checkpoint.json"
_ARRAYS = "arrays.npz"


def _resolve(target: Any, optimizer: Optimizer | None):
    from .training import TrainStep

    if isinstance(target, TrainStep):
        return target.model, optimizer or target.optimizer, target
    if target is not None and not hasattr(target, "state_dict"):
        raise GraphcError(f"checkpoint: expected a TrainStep or a Module, got {type(target).__name__}")
    return target, optimizer, None


def _address(arr: np.ndarray) -> int:
    return np.asarray(arr).__array_interface__["data"][0]


def _step_only_state(model: Any, optimizer: Optimizer | None, step: Any) -> dict[str, np.ndarray]:
    """The step's persistent state held neither by the model nor by the optimizer (rng.offset)."""
    covered = set()
    if model is not None:
        covered |= {_address(a) for a in model.state_dict().values()}
    if optimizer is not None:
        covered |= {_address(a) for a in optimizer.state.values()}
    return {
        name: arr
        for name, arr in step.state_arrays.items()
        if step.plan.graph.kinds[name] == "state" and _address(arr) not in covered
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"checkpoint: {type(value).__name__} is not JSON-serializable")


def save_checkpoint(
    path: str | os.PathLike,
    target: Any,
    *,
    optimizer: Optimizer | None = None,
    scheduler: Any = None,
    loader: Any = None,
    extra: dict | None = None,
) -> None:
    """Write a checkpoint of ``target`` (a TrainStep, or a Module with ``optimizer=``) atomically.

    Saves the model's state_dict, the optimizer's state and hyper-parameters, the step count and
    the step's other persistent state, and, when given, the scheduler's and data loader's state
    and ``extra`` (any JSON-able dict, returned by ``load_checkpoint``).
    """
    model, optimizer, step = _resolve(target, optimizer)
    if step is not None:
        step.sync_to_host()
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    if model is not None:
        meta["model"] = type(model).__name__
        for key, arr in model.state_dict().items():
            arrays[f"model/{key}"] = np.asarray(arr)
    if optimizer is not None:
        state = optimizer.state_dict()
        meta["optimizer"] = {"type": state["type"], "param_groups": state["param_groups"]}
        for key, arr in state["state"].items():
            arrays[f"optim/{key}"] = arr
    if step is not None:
        meta["num_steps"] = step.num_steps
        for key, arr in _step_only_state(model, optimizer, step).items():
            arrays[f"step/{key}"] = arr
    if scheduler is not None:
        meta["scheduler"] = {"type": type(scheduler).__name__, "state": scheduler.state_dict()}
    if loader is not None:
        meta["loader"] = loader.state_dict()
    if extra is not None:
        meta["extra"] = extra
    try:
        meta_bytes = json.dumps(meta, indent=1, default=_json_default).encode()
    except TypeError as err:
        raise GraphcError(str(err)) from None
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _write_atomically(os.fspath(path), meta_bytes, buffer.getvalue())


def _write_atomically(path: str, meta: bytes, arrays: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                z.writestr(_META, meta)
                z.writestr(_ARRAYS, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and arrays (by ``model/``, ``optim/``, ``step/`` key) of a checkpoint file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise GraphcError(f"checkpoint {path!r} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read(_META))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                found = meta.get("format") if isinstance(meta, dict) else None
                raise GraphcError(f"{path!r} is not a graphc checkpoint (format {found!r})")
            if meta.get("version", 0) > VERSION:
                raise GraphcError(
                    f"checkpoint {path!r} has version {meta['version']}; this graphc reads up to {VERSION}"
                )
            with np.load(io.BytesIO(z.read(_ARRAYS)), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as err:
        raise GraphcError(f"{path!r} is not a graphc checkpoint (or it is corrupt): {err}") from None
    return meta, arrays


def _section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_checkpoint(
    path: str | os.PathLike,
    target: Any,
    *,
    optimizer: Optimizer | None = None,
    scheduler: Any = None,
    loader: Any = None,
    strict: bool = True,
) -> dict:
    """Restore a checkpoint into ``target`` (TrainStep or Module) and the given objects, in place.

    Returns the checkpoint's ``extra`` dict (empty if none). Continuing after loading gives the
    same results as the run that saved it would have.
    """
    meta, arrays = read_checkpoint(path)
    model, optimizer, step = _resolve(target, optimizer)
    if model is not None:
        model.load_state_dict(_section(arrays, "model/"), strict=strict)
    if optimizer is not None:
        if "optimizer" not in meta:
            raise GraphcError(f"checkpoint {os.fspath(path)!r} holds no optimizer state")
        groups = [
            {k: tuple(v) if isinstance(v, list) else v for k, v in g.items()}
            for g in meta["optimizer"]["param_groups"]
        ]
        optimizer.load_state_dict(
            {"type": meta["optimizer"]["type"], "param_groups": groups, "state": _section(arrays, "optim/")}
        )
    if step is not None:
        step.num_steps = int(meta.get("num_steps", 0))
        live = step.state_arrays
        for key, arr in _section(arrays, "step/").items():
            if key in live and live[key].shape == arr.shape:
                np.copyto(live[key], arr)
            elif strict:
                raise GraphcError(f"checkpoint state {key!r} does not fit the compiled step")
        step.sync_to_device()
    if scheduler is not None:
        if "scheduler" not in meta:
            raise GraphcError(f"checkpoint {os.fspath(path)!r} holds no scheduler state")
        saved = meta["scheduler"]
        if saved["type"] != type(scheduler).__name__:
            raise GraphcError(f"checkpoint scheduler is {saved['type']}, not {type(scheduler).__name__}")
        scheduler.load_state_dict(saved["state"])
    if loader is not None:
        if "loader" not in meta:
            raise GraphcError(f"checkpoint {os.fspath(path)!r} holds no data-loader position")
        loader.load_state_dict(meta["loader"])
    return dict(meta.get("extra") or {})
