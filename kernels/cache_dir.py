"""Where the kernel cache lives, and which folders graphc trusts with it.

The cache holds executable content: generated Python sources that graphc imports, and beside
them numba's compiled objects and its pickled index (``__pycache__``). Whoever can write there
can run code as you, so every folder graphc imports kernels from is *private*: created with
mode 0o700, and before use refused when it is a symbolic link, not a folder, owned by another
user, or writable by group or others. That folder is the trust boundary: graphc checks the
kernel sources it reads against their hash, but numba's index and objects are pickles that
only the folder's privacy protects.

Layout: ``<root>/<backend>/<salt>/`` where ``<root>`` is ``$GRAPHC_CACHE_DIR`` or
``~/.cache/graphc``, ``<backend>`` is ``kernels`` (CPU) or ``cuda``, and ``<salt>`` hashes
graphc's version and the source text of every graphc module a generated kernel imports
(``HELPER_MODULES``): numba revalidates a cached kernel against its own file only, so after an
upgrade or an edit of a helper the old compiled code must land in a folder nobody looks in.

When that folder cannot be written, or is refused (with a warning naming it and the fix),
kernels go to ``<tmp>/graphc-<uid>/<backend>/<salt>`` under the same checks, and failing that
to a fresh ``tempfile.mkdtemp`` folder used by this process only and removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.metadata
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from graphc.ir import GraphcError

# Every graphc module that generated kernel source imports (``from graphc... import``): their
# text is part of the salt. tests/test_kernel_cache.py checks the generators import no others.
HELPER_MODULES = (
    "graphc.kernels.cpu.intrinsics",
    "graphc.kernels.cpu.blas",
    "graphc.kernels.cpu.int8_vnni",
    "graphc.kernels.cpu.sgemm_avx512",
    "graphc.kernels.cpu.conv_avx512",
)

PRIVATE_MODE = 0o700


def cache_root() -> Path:
    """The graphc cache directory: ``$GRAPHC_CACHE_DIR`` or ``~/.cache/graphc``."""
    env = os.environ.get("GRAPHC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graphc"


def graphc_version() -> str:
    """The installed graphc version (``0+unknown`` when graphc runs without being installed)."""
    try:
        return importlib.metadata.version("graphc")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def helper_files() -> dict[str, Path]:
    """The source file of each module in ``HELPER_MODULES`` (found without importing them)."""
    here = Path(__file__).resolve().parent  # graphc.kernels
    return {name: here.joinpath(*name.split(".")[2:]).with_suffix(".py") for name in HELPER_MODULES}


def compute_salt(version: str, helpers: dict[str, bytes]) -> str:
    """A short hex digest of graphc's version and the helper modules' source text."""
    h = hashlib.sha256(f"graphc {version}\n".encode())
    for name in sorted(helpers):
        text = helpers[name]
        h.update(f"{name} {len(text)}\n".encode())
        h.update(text)
    return h.hexdigest()[:16]


@functools.cache
def kernel_salt() -> str:
    """The salt folder name of this graphc (computed once per process)."""
    helpers = {}
    for name, path in helper_files().items():
        try:
            helpers[name] = path.read_bytes()
        except OSError as err:
            raise GraphcError(f"kernel cache: cannot read helper module {name} at {path}: {err}") from err
    return compute_salt(graphc_version(), helpers)


def backend_dir(backend: str) -> Path:
    """The preferred folder of a backend's kernels: ``<cache root>/<backend>/<salt>``."""
    return cache_root() / backend / kernel_salt()


def folder_problem(path: Path) -> str | None:
    """Why ``path`` may not hold kernels (None when it is a private folder of this user)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"is owned by another user (uid {st.st_uid}, you are uid {os.geteuid()})"
    if os.name == "posix" and st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def private_dir(path: Path, top: Path) -> Path:
    """Create ``path`` and the folders between ``top`` and it (mode 0o700) and check each.

    Raises GraphcError naming the first folder that is not private (see ``folder_problem``);
    OSError when a folder cannot be created.
    """
    chain = [top, *[p for p in reversed(path.parents) if p.is_relative_to(top) and p != top]]
    if path != top:
        chain.append(path)
    top.parent.mkdir(mode=PRIVATE_MODE, parents=True, exist_ok=True)
    for folder in chain:
        try:
            folder.mkdir(mode=PRIVATE_MODE, parents=True)
        except FileExistsError:
            pass
        problem = folder_problem(folder)
        if problem:
            raise GraphcError(
                f"kernel cache folder {folder} {problem}; graphc does not run kernels from it. "
                f"Fix: make it yours and private (chown $USER {folder}; chmod 700 {folder}) "
                "or set GRAPHC_CACHE_DIR to a private folder"
            )
    return path


def _fallback_top() -> Path:
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"graphc-{user}"


@functools.cache
def _process_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="graphc-kernels-"))  # mode 0o700, a new name
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=2)


def candidate_dirs(backend: str) -> Iterator[Path]:
    """Private folders to hold a backend's kernels, best first (see the module docstring).

    The caller tries each in turn (an OSError while writing moves on to the next). A refused
    folder is skipped with a warning; the last candidate, a fresh private temporary folder,
    is always yielded.
    """
    salt = kernel_salt()
    root = cache_root()
    fallback = _fallback_top()
    for top, path in ((root / backend, root / backend / salt), (fallback, fallback / backend / salt)):
        try:
            yield private_dir(path, top)
        except GraphcError as err:
            _warn_once(f"{err}; using another folder")
        except OSError:
            pass  # not writable here: the next candidate
    yield private_dir(_process_dir() / backend / salt, _process_dir())
