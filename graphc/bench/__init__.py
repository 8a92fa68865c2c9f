"""graphc bench: time graphc on model files, next to PyTorch eager, torch.compile and ONNX Runtime.

``graphc bench MODEL.py`` benchmarks one model file (see graphc.modelfile for what it may define);
``graphc bench`` runs the suite, the workload files in the repository's ``benchmarks/`` folder
(docs/BENCHMARKS.md): model workloads, and custom workloads that time themselves
(``measure(opts)``, see ``custom``). The peers are imported only when asked for (``--compare``).

Modules, one job each: ``workloads`` (finding and loading workload files), ``weights`` (one set of
initial weights for every engine), ``threads`` (the same thread count for every engine),
``engines`` (graphc's runner), ``custom`` (custom workloads: loading, options, helpers),
``peers`` (the PyTorch and ONNX Runtime adapters), ``timing`` (warm-up and round-robin timing,
the machine's limits), ``probe`` (cold/warm compile time in a subprocess), ``profile`` (graphc's
per-kernel times), ``targets`` (agreement checks and graphc's goals), ``environment`` (versions,
BLAS, thread pools), ``report`` (table, JSON, plot), ``runner`` (one run) and ``cli`` (the
``bench`` subcommand).
"""

from .runner import run_bench, run_workload
from .workloads import suite_dir, suite_files

__all__ = ["run_bench", "run_workload", "suite_dir", "suite_files"]
