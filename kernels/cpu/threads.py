"""The thread pool of the CPU backend: which numba threading layer runs graphc's parallel work.

One pool does all of it, numba's: parallel kernels, and GEMMs too (``blas`` runs single-threaded
BLAS on each of its threads), so no pool spins while another works. The layer is TBB, from the
``tbb`` wheel graphc depends on: its threads pick up a kernel in about 15 us (a plan's kernels
are short) and sleep soon after, so they neither hold a core against the next library's pool
nor slow a peer in the same process. Measured on 2 cores, the other layers each fail one of
those: numba's OpenMP layer shares the system libgomp with PyTorch, whose steps then ran 2x
slower in the same process; the workqueue layer wakes its threads through the OS (about 60 us a
kernel here) and cannot run kernels from two Python threads at once. workqueue is the fallback
where TBB does not start; a user's choice of layer (``NUMBA_THREADING_LAYER`` or numba.config)
always wins.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import sys

import numba
from numba.np.ufunc import parallel as _parallel

# The TBB runtime numba's tbbpool links against, by platform; numba itself loads it by this name.
_TBB_NAMES = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}


def tbb_library_path() -> str | None:
    """Where the ``tbb`` wheel put its runtime library, or None when it is not installed."""
    name = _TBB_NAMES.get(sys.platform)
    try:
        files = importlib.metadata.files("tbb") or []
        dist = importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == name:
            return os.path.normpath(str(dist.locate_file(f)))
    return None


def _load_tbb() -> bool:
    """Load the TBB runtime so numba's tbbpool finds it; True when it loaded."""
    path = tbb_library_path()
    if path is None:
        return False
    try:
        # The wheel puts the library in <prefix>/lib, which is not on the loader's search path;
        # loaded globally here, numba's later dlopen by soname finds it.
        ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
    except OSError:
        return False
    return True


def choose_threading_layer() -> list[str] | None:
    """Put TBB first in numba's layer order, then workqueue (omp last: numba never gets past
    workqueue, which always loads); the order set, or None where the user chose a layer.

    numba falls back by itself where TBB does not start (a TBB older than numba accepts, a
    missing library). Must run before numba starts its pool (the first parallel kernel or
    set_num_threads call); after that numba keeps the layer it started with.
    """
    env = {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & set(os.environ)
    if env or numba.config.THREADING_LAYER != "default":
        return None
    _load_tbb()
    numba.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]
    return numba.config.THREADING_LAYER_PRIORITY


def num_threads() -> int:
    """``numba.get_num_threads()`` without its cost on every call (~1.5 us: it takes numba's two
    start-up locks each time; a training step's GEMMs ask ~200 times): once numba's pool has
    started, its layer's own thread-local count is read straight (~0.2 us), the value
    ``numba.get_num_threads`` returns, so it follows ``numba.set_num_threads`` in every Python
    thread; before that (or where numba keeps it elsewhere), numba's function."""
    if getattr(_parallel, "_is_initialized", False):  # the pool started: its functions are loaded
        get = getattr(_parallel, "_get_num_threads", None)
        n = get() if get is not None else 0
        if n > 0:
            return n
    return numba.get_num_threads()
