"""The package layout: every package folder is installed, and imports run one way only."""

import ast
import pathlib

import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Which graphc stages each top-level folder may import (README, Architecture: graphc → passes → ir,
# runtime → kernels → ir; constant folding in passes evaluates with kernels.reference).
ALLOWED = {
    "ir": set(),
    "kernels": {"ir", "kernels"},
    "passes": {"ir", "kernels", "passes"},
    "runtime": {"ir", "kernels", "runtime"},
}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    config = _pyproject()["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        top = rel.parts[0]
        if top in ("tests", ".venv", "examples", "build") or top.startswith("."):
            continue
        prefix = next(pkg for pkg, folder in mapping.items() if folder == top)
        found.add(".".join([prefix, *rel.parts[1:]]))
    missing = found - listed
    assert not missing, f"package folders missing from pyproject's packages: {sorted(missing)}"
    stale = listed - found
    assert not stale, f"pyproject lists packages with no folder: {sorted(stale)}"


def _imported_stages(path: pathlib.Path) -> set[str]:
    stages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "graphc":
                stages.add(parts[1] if len(parts) > 1 else "graphc")
    return stages


def test_imports_run_one_way():
    problems = []
    for folder, allowed in ALLOWED.items():
        for path in (ROOT / folder).rglob("*.py"):
            for stage in _imported_stages(path) - allowed:
                problems.append(f"{path.relative_to(ROOT)} imports graphc.{stage}")
    assert not problems, "imports against the stage order:\n" + "\n".join(problems)
