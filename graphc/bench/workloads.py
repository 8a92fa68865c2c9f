"""Finding and loading workload files: the suite's (benchmarks/*.py) or a user's model file."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from graphc.ir import GraphcError
from graphc.modelfile import ModelFile, load_model_file

SUITE_ENV = "GRAPHC_BENCH_SUITE"


def suite_dir() -> Path | None:
    """The suite's folder: $GRAPHC_BENCH_SUITE, else benchmarks/ of the source checkout graphc runs from.

    A pip-installed graphc has no suite folder (None): give model files, or the folder.
    """
    env = os.environ.get(SUITE_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "benchmarks"
    return here if here.is_dir() else None


def _defines(path: Path) -> set[str]:
    """Top-level function and assigned names of a Python file, read without running it."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return set()
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    for n in tree.body:
        targets = (
            n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else []
        )
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def workload_kind(path: Path) -> str | None:
    """ "custom" (measure() and PEERS), "model" (model() and example_inputs()), or None."""
    names = _defines(path)
    if {"measure", "PEERS"} <= names:
        return "custom"
    return "model" if {"model", "example_inputs"} <= names else None


def describe(path: Path) -> str:
    """A workload file's WHAT string, else its docstring's first line, read without running it."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "WHAT" for t in node.targets
        ):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    doc = (ast.get_docstring(tree) or "").strip().splitlines()
    return doc[0] if doc else ""


def suite_files(folder: Path | None = None, kind: str | None = None) -> list[Path]:
    """The workload files of a suite folder, by name: model workloads (model() and example_inputs())
    and custom ones (measure(opts)); ``kind`` ("model" or "custom") keeps one kind."""
    folder = folder or suite_dir()
    if folder is None or not folder.is_dir():
        return []
    files = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    kinds = {p: workload_kind(p) for p in files}
    return [p for p in files if kinds[p] is not None and kind in (None, kinds[p])]


def other_scripts(folder: Path | None = None) -> list[Path]:
    """The suite folder's other Python files (standalone benchmark scripts such as compile_scaling.py)."""
    folder = folder or suite_dir()
    if folder is None or not folder.is_dir():
        return []
    workloads = set(suite_files(folder))
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_") and p not in workloads)


def resolve(items: list[str], folder: Path | None = None) -> list[Path]:
    """The workload files named on the command line: paths to .py files, or suite workload names.

    No items: the whole suite.
    """
    folder = folder or suite_dir()
    suite = {p.stem: p for p in suite_files(folder)}
    if not items:
        if not suite:
            where = str(folder) if folder else "no benchmarks/ folder next to this graphc"
            raise GraphcError(
                f"no suite workloads found ({where}): give model files (graphc bench MODEL.py) or "
                f"set {SUITE_ENV} to a folder of workload files"
            )
        return list(suite.values())
    out = []
    for item in items:
        if item.endswith(".py") or os.sep in item or os.path.exists(item):
            if not os.path.isfile(item):
                raise GraphcError(f"model file {item!r} does not exist")
            out.append(Path(item))
        elif item in suite:
            out.append(suite[item])
        else:
            names = ", ".join(suite) or "none found"
            raise GraphcError(f"unknown workload {item!r}: give a model file or a suite workload ({names})")
    return out


def load_workload(path: Path | str) -> ModelFile:
    """Load one workload file (a model file; GraphcError naming the file if it is not one)."""
    return load_model_file(path)
