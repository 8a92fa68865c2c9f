"""onnx's node conformance tests run on graphc's ONNX backend (``make onnx-conformance``).

The test models and data come from the installed onnx package (``collect_testcases``, made in
memory; nothing is written or committed). A case whose model uses an op graphc has no converter
for is skipped, naming the op; every other case runs and compares like onnx's runner (same
dtype, ``assert_allclose`` with the case's rtol/atol). ``python -m graphc.onnx.conformance``
prints the pass count, each failure and the skipped ops.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.ir import GraphcError

from .backend import GraphcBackend
from .registry import lookup, walk_nodes


@dataclass(frozen=True)
class Outcome:
    """One case's result: status is 'pass', 'fail' or 'skip'."""

    name: str
    status: str
    detail: str = ""


def node_cases(op_type: str | None = None) -> list:
    """onnx's node test cases (all, or those of one op type), generated in memory."""
    import onnx.backend.test.case.node as node_tests

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return list(node_tests.collect_testcases(op_type))


def missing_ops(model) -> list[str]:
    """Op types of ``model`` graphc has no converter for at the model's opset."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return sorted({n.op_type for n in walk_nodes(model.graph) if lookup(n.domain, n.op_type, opset) is None})


def compare(expected: Any, got: np.ndarray, rtol: float, atol: float) -> None:
    """onnx's runner check: equal dtypes, then assert_allclose."""
    from onnx import TensorProto, numpy_helper

    expected = numpy_helper.to_array(expected) if isinstance(expected, TensorProto) else np.asarray(expected)
    got = np.asarray(got)
    if expected.dtype != got.dtype:
        raise AssertionError(f"dtype {got.dtype}, expected {expected.dtype}")
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def run_case(case, backend: str = "cpu") -> Outcome:
    """Run one node test case."""
    missing = missing_ops(case.model)
    if missing:
        return Outcome(case.name, "skip", "no converter for " + ", ".join(missing))
    try:
        rep = GraphcBackend.prepare(case.model, backend=backend)
        for inputs, outputs in case.data_sets:
            with np.errstate(all="ignore"):
                got = rep.run(inputs)
            if len(got) != len(outputs):
                raise AssertionError(f"{len(got)} outputs, expected {len(outputs)}")
            for e, g in zip(outputs, got):
                compare(e, g, case.rtol, case.atol)
    except (GraphcError, AssertionError) as err:
        return Outcome(
            case.name, "fail", f"{type(err).__name__}: {(str(err).strip() or '?').splitlines()[0][:200]}"
        )
    except Exception as err:  # a converter bug: reported, not fatal to the run
        return Outcome(case.name, "fail", f"BUG {type(err).__name__}: {str(err)[:200]}")
    return Outcome(case.name, "pass")


def run_all(cases: Iterable, backend: str = "cpu") -> list[Outcome]:
    """Run ``cases`` in order."""
    return [run_case(c, backend) for c in cases]


def main(argv: list[str] | None = None) -> int:
    """Run every node test and print the summary; exit 1 if a case fails unexpectedly."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="cpu", choices=("cpu", "reference"))
    parser.add_argument("--op", default=None, help="only this op type's cases")
    args = parser.parse_args(argv)
    from .known_failures import KNOWN_FAILURES

    outcomes = run_all(node_cases(args.op), args.backend)
    passed = [o for o in outcomes if o.status == "pass"]
    failed = [o for o in outcomes if o.status == "fail"]
    skipped = [o for o in outcomes if o.status == "skip"]
    unexpected = [o for o in failed if o.name not in KNOWN_FAILURES]
    fixed = [o for o in passed if o.name in KNOWN_FAILURES]
    for o in failed:
        tag = "known" if o.name in KNOWN_FAILURES else "NEW"
        print(f"FAIL ({tag}) {o.name}: {o.detail}")
    ops = sorted({op for o in skipped for op in o.detail.removeprefix("no converter for ").split(", ")})
    print(f"\nskipped {len(skipped)} case(s) for ops without a converter: {', '.join(ops)}")
    for o in fixed:
        print(f"now passes (drop from KNOWN_FAILURES): {o.name}")
    print(
        f"node tests: {len(passed)} passed, {len(failed)} failed ({len(unexpected)} new), "
        f"{len(skipped)} skipped"
    )
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
