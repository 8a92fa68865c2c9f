"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is one zip file holding ``checkpoint.json`` (step count, optimizer hyper-parameters,
scheduler and data-loader positions, user extras) and ``arrays.npz`` (model parameters and
buffers, optimizer state, other persistent state of the compiled step such as the dropout
counter ``rng.offset``). It is written to a temporary file beside the target and moved over it
with ``os.replace``, so a crash never leaves a half-written checkpoint. No pickle: loading
a checkpoint cannot run code.

Loading copies every array into the existing arrays in place, so an already compiled train step
(which holds those arrays) continues from the loaded state without recompiling. It is all or
nothing: every field and array is checked first (types, ranges, shapes, dtypes: only a same-kind
cast whose values fit), and only then is anything written; on any error nothing has changed.
File-level matters (temporary files, bounded reads) are in ``graphc.checkpoint_file``.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
from typing import Any

import numpy as np

from graphc.checkpoint_file import read_file, write_atomically
from graphc.ir import GraphcError
from graphc.optim import Optimizer
from graphc.safecast import check_fits, copy_into

FORMAT = "graphc-checkpoint"
VERSION = 1
_SECTIONS = ("model/", "optim/", "step/")
_MAX_NUMBER = 1 << 62  # the largest count or other number a checkpoint field may hold


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
    write_atomically(os.fspath(path), meta_bytes, buffer.getvalue())


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and arrays (by ``model/``, ``optim/``, ``step/`` key) of a checkpoint file.

    Reads are bounded and checked (see ``graphc.checkpoint_file``); the format and version are
    checked here, every other field by ``load_checkpoint``. Errors are GraphcErrors naming the file.
    """
    path = os.fspath(path)
    meta, arrays = read_file(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise GraphcError(f"{path!r} is not a graphc checkpoint (format {found!r:.80})")
    version = meta.get("version")
    if not _is_int(version) or version < 1:
        raise GraphcError(f"checkpoint {path!r}: version must be a positive integer, got {version!r:.80}")
    if version > VERSION:
        raise GraphcError(f"checkpoint {path!r} has version {version}; this graphc reads up to {VERSION}")
    return meta, arrays


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _check_arrays(
    saved: dict[str, np.ndarray], live: dict[str, Any], prefix: str, where: str, strict: bool
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(destination, source) pairs for the saved arrays that go into ``live``, all checked."""
    if strict:
        missing = [k for k in live if k not in saved]
        if missing:
            raise GraphcError(f"{where}: lacks the array {prefix}{missing[0]!r} ({len(missing)} missing)")
        unexpected = [k for k in saved if k not in live]
        if unexpected:
            raise GraphcError(f"{where}: array {prefix}{unexpected[0]!r} has no counterpart to load into")
    pairs = []
    for key, dst in live.items():
        if key in saved:
            dst = np.asarray(dst)
            check_fits(saved[key], dst, f"{where} array {prefix + key!r}")
            pairs.append((dst, saved[key]))
    return pairs


def _check_like(value: Any, like: Any, where: str) -> None:
    """``value`` (from JSON) has the structure and types of ``like``; numbers finite and >= 0."""
    if isinstance(like, bool) or like is None or isinstance(like, str):
        if type(value) is not type(like):
            raise GraphcError(f"{where}: expected {type(like).__name__}, got {value!r:.80}")
    elif isinstance(like, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphcError(f"{where}: expected a number, got {value!r:.80}")
        if _is_int(like) and not _is_int(value):
            raise GraphcError(f"{where}: expected an integer, got {value!r:.80}")
        if value < 0 or value > _MAX_NUMBER or not math.isfinite(value):  # compared first: a huge int
            raise GraphcError(f"{where}: {value!r} is out of range")
    elif isinstance(like, (list, tuple)):
        if not isinstance(value, list) or len(value) != len(like):
            raise GraphcError(f"{where}: expected a list of {len(like)}, got {value!r:.80}")
        for i, (v, w) in enumerate(zip(value, like)):
            _check_like(v, w, f"{where}[{i}]")
    elif isinstance(like, dict):
        if not isinstance(value, dict):
            raise GraphcError(f"{where}: expected an object, got {value!r:.80}")
        if set(value) != set(like):
            extra, missing = sorted(set(value) - set(like)), sorted(set(like) - set(value))
            raise GraphcError(f"{where}: unexpected keys {extra}, missing keys {missing}")
        for key, w in like.items():
            _check_like(value[key], w, f"{where}.{key}")
    else:
        raise GraphcError(f"{where}: cannot check a {type(like).__name__}")


def _probe_schedule(scheduler: Any, state: dict, where: str) -> None:
    """Compute the next rate of a copy of ``scheduler`` with ``state`` (a zero step_size, ...)."""
    if not hasattr(scheduler, "lr_at") or not _is_int(state.get("last_epoch")):
        return
    probe = copy.copy(scheduler)
    probe.__dict__.update(state)
    try:
        rate = probe.lr_at(state["last_epoch"] + 1)
        ok = math.isfinite(rate) and rate >= 0 and math.isfinite(state["_last_lr"][0])
    except (ArithmeticError, ValueError, TypeError, IndexError, KeyError):
        ok = False
    if not ok:
        raise GraphcError(f"{where}: the schedule does not give a finite rate >= 0 with these values")


class _Restore:
    """Everything a load will write, checked; :meth:`apply` writes it (and cannot fail)."""

    def __init__(self) -> None:
        self.copies: list[tuple[np.ndarray, np.ndarray]] = []
        self.actions: list[Any] = []

    def apply(self) -> None:
        for dst, src in self.copies:
            copy_into(dst, src)
        for action in self.actions:
            action()


def _check_optimizer(meta: dict, arrays: dict, optimizer: Optimizer, where: str) -> dict:
    saved = meta.get("optimizer")
    if saved is None:
        raise GraphcError(f"{where} holds no optimizer state")
    if not isinstance(saved, dict):
        raise GraphcError(f"{where}: optimizer must be an object, got {type(saved).__name__}")
    state = {
        "type": saved.get("type"),
        "param_groups": saved.get("param_groups"),
        "state": _section(arrays, "optim/"),
    }
    return optimizer.check_state_dict(state, where=f"{where} optimizer")


def _check_step(meta: dict, arrays: dict, model: Any, optimizer: Any, step: Any, where: str, strict: bool):
    num_steps = meta.get("num_steps", 0)
    if not _is_int(num_steps) or not 0 <= num_steps <= _MAX_NUMBER:
        raise GraphcError(f"{where}: num_steps must be an integer >= 0, got {num_steps!r:.80}")
    live = _step_only_state(model, optimizer, step)
    saved = _section(arrays, "step/")
    # A checkpoint saved from a module and optimizer (no num_steps) has no step state to restore.
    pairs = _check_arrays(saved, live, "step/", where, strict and "num_steps" in meta)
    if strict and "num_steps" not in meta and saved:
        raise GraphcError(f"{where}: step state without num_steps")
    return num_steps, pairs


def _check_scheduler(meta: dict, scheduler: Any, where: str) -> dict:
    saved = meta.get("scheduler")
    if saved is None:
        raise GraphcError(f"{where} holds no scheduler state")
    if not isinstance(saved, dict) or saved.get("type") != type(scheduler).__name__:
        found = saved.get("type") if isinstance(saved, dict) else saved
        raise GraphcError(f"{where}: scheduler is {found!r:.80}, not {type(scheduler).__name__}")
    _check_like(saved.get("state"), scheduler.state_dict(), f"{where} scheduler.state")
    _probe_schedule(scheduler, saved["state"], f"{where} scheduler.state")
    return saved["state"]


def _check_loader(meta: dict, loader: Any, where: str) -> Any:
    if "loader" not in meta:
        raise GraphcError(f"{where} holds no data-loader position")
    state = meta["loader"]
    _check_like(state, loader.state_dict(), f"{where} loader")
    position = state.get("position") if isinstance(state, dict) else None
    if hasattr(loader, "__len__") and _is_int(position) and position > len(loader):
        raise GraphcError(f"{where}: loader position {position} is past the epoch's end")
    return state


def _validate(
    meta, arrays, model, optimizer, step, scheduler, loader, where, strict
) -> tuple[_Restore, dict]:
    """Check everything ``load_checkpoint`` will write; return the writes and the extra dict."""
    restore = _Restore()
    if strict:
        unknown = [k for k in arrays if not k.startswith(_SECTIONS)]
        if unknown:
            raise GraphcError(f"{where}: unknown array {unknown[0]!r}")
    if "model" in meta and not isinstance(meta["model"], str):
        raise GraphcError(f"{where}: model must be a class name, got {meta['model']!r:.80}")
    extra = meta.get("extra")
    if extra is not None and not isinstance(extra, dict):
        raise GraphcError(f"{where}: extra must be an object, got {type(extra).__name__}")
    if model is not None:
        live = model.state_dict()
        restore.copies += _check_arrays(_section(arrays, "model/"), live, "model/", where, strict)
    if optimizer is not None:
        opt_state = _check_optimizer(meta, arrays, optimizer, where)
        restore.actions.append(lambda: optimizer.load_state_dict(opt_state))
    if step is not None:
        num_steps, pairs = _check_step(meta, arrays, model, optimizer, step, where, strict)
        restore.copies += pairs

        def restore_step() -> None:
            step.num_steps = num_steps
            step.sync_to_device()

        restore.actions.append(restore_step)
    if scheduler is not None:
        sched_state = _check_scheduler(meta, scheduler, where)
        restore.actions.append(lambda: scheduler.load_state_dict(sched_state))
    if loader is not None:
        loader_state = _check_loader(meta, loader, where)
        restore.actions.append(lambda: loader.load_state_dict(loader_state))
    return restore, dict(extra or {})


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
    same results as the run that saved it would have. All or nothing: every field and array is
    checked before anything is written, and a GraphcError names the first bad one. Arrays are
    copied into the existing ones (which a compiled step holds) with a same-kind cast whose
    values fit. ``strict=False`` tolerates missing and unexpected arrays, never mismatched ones.
    """
    path = os.fspath(path)
    meta, arrays = read_checkpoint(path)
    model, optimizer, step = _resolve(target, optimizer)
    restore, extra = _validate(
        meta, arrays, model, optimizer, step, scheduler, loader, f"checkpoint {path!r}", strict
    )
    restore.apply()
    return extra
