"""Host side of the CUDA backend: the kernel cache on disk, compiled kernels, the device check.

numba is imported lazily (inside functions) so that importing graphc.kernels.cuda costs nothing
and works without numba-cuda; only compiling and launching need it.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from graphc.ir import GraphcError, Node
from graphc.kernels.cache_dir import backend_dir, candidate_dirs
from graphc.kernels.cache_store import load_source_module

from .codegen import KernelSource, simulator

BACKEND = "cuda"


def cache_dir() -> Path:
    """Where generated kernel modules live: ``<cache>/cuda/<salt>`` (``<cache>`` is
    ``$GRAPHC_CACHE_DIR`` or ``~/.cache/graphc``; see ``graphc.kernels.cache_dir``)."""
    return backend_dir(BACKEND)


def source_path(source: str) -> Path:
    """The preferred cache file of a generated source (named by a hash of its text)."""
    return cache_dir() / f"{module_name(source)}.py"


def module_name(source: str) -> str:
    """The import name of a generated module."""
    return "graphc_cuda_" + hashlib.sha256(source.encode()).hexdigest()[:24]


def load_source(source: str) -> ModuleType:
    """Write ``source`` to the kernel cache (once) and import it as a registered module.

    Registering in sys.modules before executing lets numba's on-disk cache (cache=True) find
    the module again in a later process, so a second run pays no compile. The cache file is
    checked against the source and repaired when it differs (``graphc.kernels.cache_store``).
    """
    name = module_name(source)
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    return load_source_module(name, f"{name}.py", source, candidate_dirs(BACKEND))


@functools.lru_cache(maxsize=1)
def device_problem() -> str | None:
    """Why device='cuda' cannot run here (None when it can: a GPU, or the simulator)."""
    if simulator():
        return None
    try:
        from numba import cuda
        from numba.cuda.cudadrv import driver, nvvm
    except ImportError:
        return "numba-cuda is not installed (pip install 'graphc[cuda]')"
    try:
        has_driver = bool(driver.driver.is_available)
    except Exception as err:  # numba raises CudaSupportError with a multi-line text
        return f"the CUDA driver failed to initialise ({str(err).strip().splitlines()[0]})"
    if not has_driver:
        return (
            "no CUDA driver (libcuda) was found: run on a machine with an NVIDIA GPU, "
            "or set NUMBA_ENABLE_CUDASIM=1 before starting Python to use numba's simulator"
        )
    try:
        if not nvvm.is_available():
            return "NVVM was not found: install the CUDA toolkit wheels (pip install 'numba-cuda[cu13]')"
        if len(cuda.gpus) == 0:
            return "the CUDA driver reports no GPU"
    except Exception as err:
        return f"CUDA is not usable ({str(err).strip().splitlines()[0]})"
    return None


def require_device() -> None:
    """Raise a one-line GraphcError when there is no usable GPU/driver (the simulator counts)."""
    problem = device_problem()
    if problem:
        raise GraphcError(f"device='cuda': {problem}")


def flat(array):
    """A 1-D view of a C-contiguous device array (kernels index flat memory)."""
    return array.reshape(array.size) if array.ndim != 1 else array


class CudaKernel:
    """One generated module, ready to launch.

    ``kernel(*inputs, *outputs)`` takes device arrays of the node's exact shapes (the backend
    calling convention) and checks the error flag afterwards. ``launch_flat`` takes 1-D views
    bound once (what the executor uses) and leaves ``check`` to the caller.
    """

    def __init__(self, node: Node, ks: KernelSource):
        from numba import cuda

        from .generators import describe

        self.node = node
        self.title = describe(node)
        self.source = ks.source
        self.n_in = len(node.inputs)
        self._types = [v.type for v in (*node.inputs, *node.outputs)]
        module = load_source(ks.source)
        self.path = Path(module.__file__)
        self._launch = module.launch
        tail = [cuda.to_device(a) for a in ks.extras]
        self._flag = cuda.to_device(np.zeros(1, np.int32)) if ks.flag else None
        if self._flag is not None:
            tail.append(self._flag)
        self._tail = tuple(tail)
        self._flag_message = ks.flag

    def __call__(self, *arrays) -> None:
        """Fill the outputs from the inputs (device arrays, C-contiguous, the node's shapes)."""
        if len(arrays) != len(self._types):
            raise GraphcError(f"{self.title}: expected {len(self._types)} arrays, got {len(arrays)}")
        for a, t in zip(arrays, self._types):
            if tuple(a.shape) != t.shape or a.dtype != t.np_dtype:
                raise GraphcError(f"{self.title}: got an array {a.dtype}{list(a.shape)} for {t}")
        self.launch_flat(*(flat(a) for a in arrays))
        self.check()

    def bind(self, *arrays):
        """A no-argument launcher over these shaped device arrays (views made once, not per call)."""
        views = tuple(flat(a) for a in arrays)
        return lambda: self.launch_flat(*views)

    def launch_flat(self, *arrays) -> None:
        """Launch on 1-D device arrays (inputs then outputs); numba errors become GraphcError."""
        try:
            self._launch(*arrays, *self._tail)
        except GraphcError:
            raise
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise GraphcError(f"CUDA kernel for {self.title} failed: {first} (source: {self.path})") from err

    @property
    def has_flag(self) -> bool:
        """Whether this kernel can report a bad index through its error flag."""
        return self._flag is not None

    def check(self) -> None:
        """Raise GraphcError if the kernel flagged a bad index since the last check (one copy back)."""
        if self._flag is None:
            return
        if self._flag.copy_to_host()[0]:
            self._flag.copy_to_device(np.zeros(1, np.int32))
            where = f" at {self.node.source}" if self.node.source else ""
            raise GraphcError(f"{self._flag_message}{where}")


class BodyRunner:
    """Fallback for a fused node the generators cannot handle: its body, node by node.

    Body intermediates live in device arrays allocated once; body outputs are copied into the
    caller's output arrays at the end (so an output aliasing an input stays safe).
    """

    def __init__(self, node: Node, reason: str, compile_fn):
        from numba import cuda

        body = node.subgraph
        assert body is not None
        self.node = node
        self.reason = reason
        self.n_in = len(node.inputs)
        self._body = body
        self._steps = [(n, compile_fn(n)) for n in body.nodes]
        self._consts = {}
        for v in body.inputs:
            if body.kinds[v.name] != "data":
                if v.name not in body.initializers:
                    raise GraphcError(f"fused body input %{v.name} has no value")
                self._consts[v] = cuda.to_device(np.ascontiguousarray(body.initializers[v.name]))
        self._temps = {v: cuda.device_array(v.shape, v.type.np_dtype) for n in body.nodes for v in n.outputs}

    @property
    def source(self) -> str:
        """The primitive kernels' sources, in body order."""
        return "\n".join(k.source for _, k in self._steps)

    has_flag = False  # each body kernel checks its own flag

    def check(self) -> None:
        """Nothing to check: the body's kernels raise as they run."""

    def bind(self, *arrays):
        """A no-argument launcher over these shaped device arrays."""
        return lambda: self(*arrays)

    def __call__(self, *arrays) -> None:
        """Run the body on device arrays (inputs then outputs)."""
        env = dict(self._consts)
        env.update(zip(self._body.data_inputs, arrays[: self.n_in]))
        env.update(self._temps)
        for node, kernel in self._steps:
            kernel(*(env[v] for v in node.inputs), *(env[v] for v in node.outputs))
        for v, out in zip(self._body.outputs, arrays[self.n_in :]):
            if out.size and env[v] is not out:
                out.copy_to_device(env[v])
