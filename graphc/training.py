"""Training: ``compile_train`` builds one compiled graph per train step; ``fit`` runs the loop.

``compile_train(model, loss_fn, optimizer, *examples)`` traces ``loss_fn(model(*inputs), target)``
with the model in train mode, appends the backward graph (``passes.autodiff.grad``) and the
optimizer's update (``optimizer.append_update``), keeps only the loss and the state updates as
outputs, and compiles the whole joint graph like any other (optimize, schedule, plan memory,
``runtime.Plan``). The plan's persistent arrays are the module's own parameter and buffer arrays
and the optimizer's state arrays, so every call updates them in place: ``model.state_dict()``
shows the new values at once, and a checkpoint reads them without asking the plan.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import numpy as np

from graphc.autograph import converted
from graphc.ir import Graph, GraphcError, Value
from graphc.optim import LR_INPUT, Optimizer

# ---------------------------------------------------------------------------- helpers


def _array_address(arr: np.ndarray) -> tuple[int, tuple[int, ...], str]:
    # Parameters may be ndarray subclasses or wrappers; compare where the bytes live instead of
    # object identity to know whether a plan writes into the module's own storage.
    arr = np.asarray(arr)
    return arr.__array_interface__["data"][0], arr.shape, arr.dtype.str


def _as_array(p: Any) -> np.ndarray:
    """The NumPy array behind a parameter or buffer (an ndarray, or a wrapper with ``.data``)."""
    if isinstance(p, np.ndarray):
        return p
    data = getattr(p, "data", None)
    if isinstance(data, np.ndarray):
        return data
    return np.asarray(p)


def _input_names(model: Any, count: int) -> list[str]:
    """Names for the model's inputs: its forward's parameter names when it has plain ones."""
    forward = getattr(model, "forward", model)
    try:
        params = [
            p
            for p in inspect.signature(forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params[:count]]
    if len(names) < count:
        names += [f"input{i}" for i in range(len(names), count)]
    return names


def _train_graph_name(model: Any) -> str:
    return f"{type(model).__name__.lower()}_train"


def _module_or_none(model: Any) -> Any:
    from .nn import Module

    return model if isinstance(model, Module) else None


def _keep_outputs(graph: Graph, keep: Sequence[int]) -> None:
    """Keep outputs ``keep`` (in order) and every update output; re-index ``graph.updates``."""
    outputs = [graph.outputs[i] for i in keep]
    updates = {}
    for name, index in graph.updates.items():
        updates[name] = len(outputs)
        outputs.append(graph.outputs[index])
    graph.outputs = outputs
    graph.updates = updates


def _build_plan(
    graph: Graph,
    device: str,
    backend: str | None,
    passes: Any,
    disable: Sequence[str],
):
    from graphc.compiler import compile_graph

    # The scheduling pass starts each bucket's allreduce early and waits for it late.
    return compile_graph(graph, device=device, passes_=passes, disable=disable, backend=backend)


def _collective_order(graph: Graph) -> str:
    """The order and sizes of a plan's collectives: every rank must issue the same ones."""
    return ";".join(
        f"{n.op}:{n.attrs['bucket']}:{sum(v.type.numel for v in n.outputs)}"
        for n in graph.nodes
        if n.op in ("allreduce_start", "allreduce_wait")
    )


# ---------------------------------------------------------------------------- the train step


class TrainStep:
    """One compiled training step: ``step(*inputs, target)`` runs forward, backward and update.

    Returns the loss as a Python float. ``num_steps`` counts the calls (checkpoints save it);
    the learning rate comes from ``optimizer.lr`` on every call, so schedulers take effect on the
    next call without recompiling.
    """

    def __init__(
        self,
        model: Any,
        loss_fn: Callable,
        optimizer: Optimizer,
        graph: Graph,
        plan: Any,
        input_names: Sequence[str],
        example_inputs: Sequence[np.ndarray],
        device: str = "cpu",
        backend: str | None = None,
        distributed: bool = False,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.graph = graph  # the joint graph before optimization (plan.graph is the optimized one)
        self.plan = plan
        self.input_names = list(input_names)
        self.input_types = [(a.shape, a.dtype) for a in example_inputs]
        self.device = device
        self.backend = backend
        self.distributed = distributed  # gradients averaged over the MPI ranks (graphc.distributed)
        self.num_steps = 0
        self._predictors: dict[tuple, Any] = {}
        plan_inputs = [v.name for v in plan.graph.data_inputs]
        position = {name: i for i, name in enumerate(self.input_names)}
        unknown = [n for n in plan_inputs if n != LR_INPUT and n not in position]
        if unknown:
            raise GraphcError(f"compile_train: the plan has unexpected data inputs {unknown}")
        # For each plan input: the caller's argument index, or None for the learning rate.
        self._order = [None if n == LR_INPUT else position[n] for n in plan_inputs]

    @property
    def batch_size(self) -> int:
        """The leading dimension of the compiled inputs."""
        shape = self.input_types[0][0]
        return shape[0] if shape else 1

    @property
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every persistent param/state array the step updates, by graph input name."""
        graph = self.plan.graph
        params = getattr(self.plan, "parameters", graph.initializers)
        return {v.name: params[v.name] for v in graph.inputs if graph.kinds[v.name] in ("param", "state")}

    def __call__(self, *inputs: np.ndarray) -> float:
        """Run one step on a batch (model inputs, then the target); return the loss."""
        if len(inputs) != len(self.input_names):
            names = ", ".join(self.input_names)
            raise GraphcError(
                f"train step takes {len(self.input_names)} input(s) ({names}), got {len(inputs)}"
            )
        lr = self.optimizer.lr_array()
        args = [lr if i is None else inputs[i] for i in self._order]
        loss = self.plan(*args)
        self.num_steps += 1
        return float(loss)

    # ------------------------------------------------------------ host/device state
    def sync_to_host(self) -> None:
        """Make the host arrays current (a device plan in resident mode keeps them on the GPU)."""
        if getattr(self.plan, "resident", False):
            self.plan.sync_to_host()

    def sync_to_device(self) -> None:
        """Upload host arrays changed by the caller (e.g. a loaded checkpoint) to a resident plan."""
        if getattr(self.plan, "resident", False):
            self.plan.sync_to_device()

    # ------------------------------------------------------------ inference
    def predictor(self, *example_inputs: np.ndarray) -> Any:
        """A compiled eval-mode plan of the model for these input shapes, sharing its parameters."""
        self.sync_to_host()
        key = tuple((a.shape, a.dtype.str) for a in example_inputs)
        has_buffers = _has_buffers(self.model)
        # A buffer is a constant of the inference graph and may be folded into the kernels, so a
        # model whose buffers change in training (BatchNorm) gets a fresh plan for each use.
        if key not in self._predictors or has_buffers:
            self._predictors[key] = compile_inference(
                self.model, *example_inputs, device=self.device, backend=self.backend
            )
        return self._predictors[key]

    def __repr__(self) -> str:
        return (
            f"<TrainStep {type(self.model).__name__} {self.optimizer!r}, inputs "
            f"{', '.join(self.input_names)}, {self.num_steps} steps>"
        )


def _named_parameters(model: Any) -> list[tuple[str, Any]]:
    return list(model.named_parameters()) if hasattr(model, "named_parameters") else []


def _has_buffers(model: Any) -> bool:
    if not hasattr(model, "state_dict") or not hasattr(model, "named_parameters"):
        return False
    return len(model.state_dict()) > len(list(model.named_parameters()))


def _check_shared_storage(model: Any, step: TrainStep) -> None:
    """Fail loudly if the plan would update copies instead of the module's own arrays."""
    if not hasattr(model, "state_dict"):
        return
    persistent = step.state_arrays
    for name, p in model.state_dict().items():
        arr = persistent.get(name)
        if arr is not None and _array_address(arr) != _array_address(_as_array(p)):
            raise GraphcError(
                f"compile_train: the plan holds a copy of {name!r}, not the module's array; "
                "training would not update the model"
            )


def compile_train(
    model: Any,
    loss_fn: Callable,
    optimizer: Optimizer,
    *example_inputs: np.ndarray,
    device: str = "cpu",
    backend: str | None = None,
    passes: Any = None,
    disable: Sequence[str] = (),
    distributed: bool = False,
    bucket_bytes: int | None = None,
) -> TrainStep:
    """Compile one training step of ``model`` for the example batch (its last array is the target).

    The step computes ``loss_fn(model(*inputs[:-1]), inputs[-1])``, its gradients with respect to
    every parameter, and the optimizer's update, in one graph; each call updates the module's
    parameters and buffers in place and returns the loss. ``backend="reference"`` runs NumPy
    kernels (no numba compile), as in ``graphc.compile``.

    ``distributed=True`` (data parallel over MPI, ``graphc.distributed``; every rank calls this
    with the same model and shapes): the update reads each gradient averaged over all ranks,
    summed in buckets of about ``bucket_bytes`` (25 MiB) that start as soon as their last
    gradient is computed. The models must agree on every rank (names, shapes, dtypes, values),
    else a GraphcError names the first difference. The returned loss is this rank's own.
    """
    from graphc.passes import autodiff

    from .tracing import trace

    if not isinstance(optimizer, Optimizer):
        raise GraphcError(f"compile_train: optimizer must be a graphc.optim optimizer, got {optimizer!r}")
    if len(example_inputs) < 2:
        raise GraphcError(
            "compile_train: give example model input(s) and then the target, e.g. compile_train(model, "
            "F.cross_entropy, optimizer, x, labels)"
        )
    if distributed:
        _start_distributed(model, device, backend)
    examples = [np.ascontiguousarray(a) for a in example_inputs]
    n_model = len(examples) - 1
    names = _input_names(model, n_model)
    target = "target"
    while target in names:
        target += "_"
    names.append(target)

    was_training = getattr(model, "training", None)
    if hasattr(model, "train"):
        model.train()
    try:
        # if/while/for on traced Tensors in forward -> cond/while_loop/scan, as graphc.compile does
        with converted(model) as converted_model:

            def body(*args: Any) -> Any:
                return loss_fn(converted_model(*args[:-1]), args[-1])

            graph = trace(
                body,
                *examples,
                name=_train_graph_name(model),
                module=_module_or_none(model),
                input_names=names,
            )
    finally:
        if was_training is False and hasattr(model, "eval"):
            model.eval()
    names = [v.name for v in graph.data_inputs]  # as the tracer named them
    loss = graph.outputs[0]
    if loss.shape != () or loss.dtype not in ("f32", "f64"):
        raise GraphcError(f"compile_train: the loss must be a float scalar, got {loss.type}")
    frozen = {n for n, p in _named_parameters(model) if not getattr(p, "requires_grad", True)}
    wrt = [v.name for v in graph.inputs_of_kind("param") if v.name not in frozen]
    if not wrt:
        raise GraphcError("compile_train: the model has no trainable parameters")
    # Frozen parameters (requires_grad=False) stay param inputs: read, never updated.
    joint, grad_index = autodiff.grad(graph, loss_index=0, wrt=wrt)
    grads: dict[str, Value] = {name: joint.outputs[i] for name, i in grad_index.items()}
    if distributed:
        from .distributed import DEFAULT_BUCKET_BYTES, add_gradient_allreduce

        cap = DEFAULT_BUCKET_BYTES if bucket_bytes is None else bucket_bytes
        grads = add_gradient_allreduce(joint, grads, cap)
    optimizer.append_update(joint, grads)
    # The loss and the new param/state values stay outputs; gradients are consumed by the update.
    _keep_outputs(joint, [0])
    plan = _build_plan(joint, device, backend, passes, disable)
    if distributed:
        from .distributed import check_same_text

        check_same_text(_collective_order(plan.graph), "the compiled step's gradient allreduces")
    step = TrainStep(model, loss_fn, optimizer, joint, plan, names, examples, device, backend, distributed)
    _check_shared_storage(model, step)
    return step


def _start_distributed(model: Any, device: str, backend: str | None) -> None:
    """Join the MPI job if needed and check every rank has the same model."""
    import graphc.distributed as distributed

    if device != "cpu" or backend not in (None, "cpu", "reference"):
        raise GraphcError(
            f"compile_train(distributed=True) runs on the CPU backends (cpu, reference), got "
            f"device={device!r}, backend={backend!r}"
        )
    if not distributed.is_initialized():
        distributed.init()
    distributed.check_same_model(model)


def compile_inference(
    model: Any, *example_inputs: np.ndarray, device: str = "cpu", backend: str | None = None
) -> Any:
    """``graphc.compile`` of the model in eval mode (the model's mode is restored afterwards)."""
    from .compiler import compile as compile_model

    was_training = getattr(model, "training", None)
    if hasattr(model, "eval"):
        model.eval()
    try:
        return compile_model(model, *example_inputs, device=device, backend=backend)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


# ---------------------------------------------------------------------------- evaluation


def _split(batch: Any) -> tuple[list[np.ndarray], np.ndarray]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise GraphcError("evaluation batches must be tuples (inputs..., labels)")
    return [np.ascontiguousarray(a) for a in batch[:-1]], np.asarray(batch[-1])


def _pad_to(arr: np.ndarray, n: int) -> np.ndarray:
    # A compiled plan has a fixed batch size: fill a short final batch by repeating its last row.
    if len(arr) == n:
        return arr
    return np.concatenate([arr, np.repeat(arr[-1:], n - len(arr), axis=0)])


def evaluate(
    model_or_step: Any, loader: Iterable, batch_size: int | None = None, reduce: bool | None = None
) -> dict[str, float]:
    """Accuracy (argmax of the logits vs integer labels) of the model over ``loader``'s batches.

    Runs a compiled eval-mode plan of the model; a short final batch is padded and the padding
    ignored. Pass a TrainStep to reuse its compiled plans. ``reduce`` (default: whether the step
    is distributed) sums the counts over all MPI ranks, each of which evaluates its own shard, so
    every rank returns the accuracy over all of them; every rank must then call ``evaluate``.
    """
    step = model_or_step if isinstance(model_or_step, TrainStep) else None
    model = step.model if step else model_or_step
    plans: dict[tuple, Any] = {}
    correct = total = 0
    for batch in loader:
        inputs, labels = _split(batch)
        n = len(labels)
        size = batch_size or getattr(loader, "batch_size", None) or n
        if n > size:
            raise GraphcError(f"evaluate: batch of {n} samples is larger than batch_size {size}")
        padded = [_pad_to(a, size) for a in inputs]
        key = tuple((a.shape, a.dtype.str) for a in padded)
        if key not in plans:
            plans[key] = step.predictor(*padded) if step else compile_inference(model, *padded)
        out = plans[key](*padded)
        logits = out[0] if isinstance(out, tuple) else out
        pred = np.argmax(logits[:n], axis=-1)
        correct += int(np.sum(pred == labels.reshape(pred.shape)))
        total += n
    if reduce if reduce is not None else bool(step and step.distributed):
        from .distributed import sum_across

        correct, total = (int(c) for c in sum_across(np.array([correct, total], np.int64), "evaluate"))
    return {"accuracy": correct / total if total else math.nan, "samples": total}


# ---------------------------------------------------------------------------- the loop


class _Progress:
    """A one-line progress bar on a terminal (redrawn with \\r), periodic lines elsewhere."""

    def __init__(self, file: TextIO, total: int, title: str, log_every: int) -> None:
        self.file, self.total, self.title, self.log_every = file, total, title, max(1, log_every)
        self.tty = bool(getattr(file, "isatty", lambda: False)())
        self._last_draw = 0.0

    def line(self, done: int, loss: float, rate: float, lr: float) -> str:
        width = 24
        filled = int(width * done / self.total) if self.total else width
        bar = "=" * filled + (">" if filled < width else "") + "." * max(0, width - filled - 1)
        count = len(str(self.total))
        return (
            f"{self.title} {done:>{count}}/{self.total} [{bar}] loss {loss:.4f}  "
            f"{rate:,.0f} samples/s  lr {lr:.3g}"
        )

    def update(self, done: int, loss: float, rate: float, lr: float) -> None:
        now = time.perf_counter()
        if self.tty:
            # Redraw at most ~20 times a second: terminal writes cost more than a small step.
            if now - self._last_draw >= 0.05 or done == self.total:
                self.file.write("\r" + self.line(done, loss, rate, lr) + "\033[K")
                self.file.flush()
                self._last_draw = now
        elif done % self.log_every == 0:
            self.file.write(self.line(done, loss, rate, lr) + "\n")
            self.file.flush()

    def finish(self, summary: str) -> None:
        self.file.write(("\r" if self.tty else "") + summary + ("\033[K" if self.tty else "") + "\n")
        self.file.flush()


def _matches(step: TrainStep, batch: Sequence[np.ndarray]) -> bool | None:
    """True when the batch fits the compiled shapes, False for a short batch, None otherwise."""
    if len(batch) != len(step.input_types):
        return None
    for arr, (shape, _) in zip(batch, step.input_types):
        if arr.shape != shape:
            if arr.ndim == len(shape) and arr.shape[1:] == shape[1:] and arr.shape[0] < shape[0]:
                return False
            return None
    return True


def _epoch_loss(step: TrainStep, losses: list[float]) -> float:
    """The mean loss of the epoch's steps (over every rank's steps when distributed)."""
    total, count = float(np.sum(losses)) if losses else 0.0, float(len(losses))
    if step.distributed:
        from .distributed import sum_across

        total, count = sum_across(np.array([total, count], np.float64), "fit: the epoch's loss")
    return float(total / count) if count else math.nan


def fit(
    step: TrainStep,
    train_loader: Iterable,
    epochs: int = 1,
    eval_loader: Iterable | None = None,
    eval_fn: Callable[[Any], dict[str, float]] | None = None,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    log_every: int = 50,
    file: TextIO | None = None,
    verbose: bool = True,
) -> list[dict[str, float]]:
    """Train for ``epochs`` passes over ``train_loader``; evaluate after each; return the history.

    Each pass continues the loader where it stands (a resumed loader finishes its epoch first).
    Batches are tuples (model inputs..., target) of the compiled shapes; a short final batch is
    skipped (use ``drop_last=True`` to avoid it). After each epoch, ``eval_fn(model)`` returns
    metrics, or by default the accuracy over ``eval_loader`` is computed with a compiled
    inference plan. ``scheduler.step()`` runs after each epoch (``scheduler_interval="epoch"``)
    or each step (``"step"``). Progress goes to ``file`` (stderr): a bar redrawn in place on a
    terminal, a line every ``log_every`` steps otherwise. A distributed step (every rank runs
    ``fit`` on its shard): progress comes from rank 0 only, the epoch's loss is the mean over all
    ranks, and evaluation over ``eval_loader`` is reduced across ranks.
    """
    if scheduler_interval not in ("epoch", "step"):
        raise GraphcError(f"fit: scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    out = file if file is not None else sys.stderr
    if step.distributed:
        from .distributed import rank

        verbose = verbose and rank() == 0
    history: list[dict[str, float]] = []
    skipped_note = False
    for e in range(epochs):
        epoch_no = getattr(train_loader, "epoch", e)
        try:
            total = len(train_loader) - getattr(train_loader, "position", 0)  # type: ignore[arg-type]
        except TypeError:
            total = 0
        progress = _Progress(out, total, f"epoch {epoch_no + 1}", log_every) if verbose else None
        losses: list[float] = []
        samples = 0
        start = time.perf_counter()
        done = 0
        for batch in train_loader:
            done += 1
            arrays = list(batch) if isinstance(batch, (tuple, list)) else [batch]
            fits = _matches(step, arrays)
            if fits is None:
                got = ", ".join(str(np.shape(a)) for a in arrays)
                want = ", ".join(str(s) for s, _ in step.input_types)
                raise GraphcError(f"fit: batch shapes ({got}) do not match the compiled step ({want})")
            if not fits:
                if verbose and not skipped_note:
                    out.write(
                        f"\nfit: skipping a short batch of {len(arrays[0])} (drop_last=True avoids it)\n"
                    )
                    skipped_note = True
                continue
            losses.append(step(*arrays))
            samples += len(arrays[0])
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
            if progress:
                elapsed = max(time.perf_counter() - start, 1e-9)
                progress.update(done, float(np.mean(losses)), samples / elapsed, step.optimizer.lr)
        elapsed = max(time.perf_counter() - start, 1e-9)
        record: dict[str, float] = {
            "epoch": float(epoch_no),
            "loss": _epoch_loss(step, losses),
            "samples_per_s": samples / elapsed,
            "seconds": elapsed,
            "lr": step.optimizer.lr,
        }
        if eval_fn is not None:
            record.update(eval_fn(step.model))
        elif eval_loader is not None:
            metrics = evaluate(step, eval_loader)
            record["accuracy"] = metrics["accuracy"]
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        history.append(record)
        if progress:
            extra = "".join(
                f"  {k} {v:.4f}"
                for k, v in record.items()
                if k not in ("epoch", "loss", "samples_per_s", "seconds", "lr")
            )
            progress.finish(
                f"epoch {epoch_no + 1}: loss {record['loss']:.4f}  {record['samples_per_s']:,.0f} samples/s  "
                f"{elapsed:.1f} s{extra}"
            )
    return history
