"""The peers: PyTorch eager, torch.compile and ONNX Runtime, each imported only when asked for.

A peer runs a workload only when its file defines ``torch_model()`` (graphc does not translate
models); it starts from graphc's initial weights, loaded by name.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import warnings
from typing import Any

import numpy as np

from graphc.modelfile import ModelFile

from .engines import Runner, Skip, first_line, training_parts
from .threads import reapply_thread_limits
from .weights import load_state


def import_torch() -> Any:
    """torch, or Skip saying how to install it."""
    try:
        import torch
    except ImportError:
        raise Skip("torch not installed (pip install 'graphc[compare]')") from None
    return torch


def torch_twin(w: ModelFile, state: dict | None, device: Any) -> Any:
    """The file's torch_model() on graphc's weights, on a device; Skip when the file has none."""
    if w.torch_model is None:
        raise Skip("the model file defines no torch_model()")
    model = w.torch_model()
    if state is not None:
        load_state(model, state, "torch", w.path)
    return model.to(device)


def build_torch(
    w: ModelFile, inputs: tuple, state: dict | None, device: str, threads: int, compiled: bool
) -> Runner:
    """PyTorch eager, or torch.compile'd (forward, or forward + loss + backward; the update stays eager)."""
    torch = import_torch()
    torch.set_num_threads(threads)
    reapply_thread_limits(threads)
    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("torch has no CUDA device")
    dev = torch.device(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    tensors = tuple(torch.from_numpy(a.copy()).to(dev) for a in inputs)
    model = torch_twin(w, state, dev)
    source = f"{w.path}:torch_model"
    note = ""
    if w.kind == "train":
        loss, opt_cls = training_parts(w, torch.nn.functional, torch.optim, "torch")
        opt = opt_cls(model.parameters(), **w.optimizer[1])

        def loss_fn(*args):
            return loss(model(*args[:-1]), args[-1])

        t0 = time.perf_counter()
        if compiled:
            loss_fn = torch.compile(loss_fn)
            note = "forward+loss+backward compiled; optimizer step eager"

        def step():
            opt.zero_grad()
            value = loss_fn(*tensors)
            value.backward()
            opt.step()
            sync()
            return value

        first = float(step().item())
    else:
        model.eval()
        fn = torch.compile(model) if compiled else model
        t0 = time.perf_counter()

        def step():
            with torch.no_grad():
                out = fn(*tensors)
            sync()
            return out

        out = step()
        first = tuple(o.cpu().numpy() for o in out) if isinstance(out, (tuple, list)) else out.cpu().numpy()
    return Runner(step, first, time.perf_counter() - t0, source, note=note)


def build_onnxruntime(w: ModelFile, inputs: tuple, state: dict | None, device: str, threads: int) -> Runner:
    """ONNX Runtime on the torch twin exported with torch.onnx (inference only)."""
    if w.kind == "train":
        raise Skip("inference only")
    try:
        import onnxruntime as ort
    except ImportError:
        raise Skip("onnxruntime not installed (pip install 'graphc[compare]')") from None
    torch = import_torch()
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Skip("onnxruntime has no CUDAExecutionProvider")
        providers.insert(0, "CUDAExecutionProvider")
    torch.set_num_threads(threads)
    model = torch_twin(w, state, torch.device("cpu")).eval()
    example = tuple(torch.from_numpy(a.copy()) for a in inputs)
    names = [f"in{i}" for i in range(len(inputs))]
    path = os.path.join(tempfile.mkdtemp(prefix="graphc-bench-onnx-"), f"{w.name}.onnx")
    t0 = time.perf_counter()
    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, example, path, input_names=names, output_names=["out"], dynamo=dynamo
                )
            note = f"torch.onnx.export(dynamo={dynamo})" + (f" ({'; '.join(errors)})" if errors else "")
            break
        except Exception as err:  # the TorchScript exporter may be gone or fail: try the other one
            errors.append(f"dynamo={dynamo}: {type(err).__name__}: {first_line(err)}")
    else:
        raise Skip("torch.onnx.export failed: " + "; ".join(errors))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=providers)
    feed = {i.name: a for i, a in zip(sess.get_inputs(), inputs)}
    first = sess.run(None, feed)[0]
    compile_s = time.perf_counter() - t0
    reapply_thread_limits(threads)
    return Runner(
        lambda: sess.run(None, feed), np.asarray(first), compile_s, f"{w.path}:torch_model", note=note
    )
