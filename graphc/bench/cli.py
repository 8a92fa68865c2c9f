"""The ``graphc bench`` subcommand: its options, and the command itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from graphc.ir import GraphcError

from .engines import PEERS


def _parse_compare(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if items == ["all"]:
        return list(PEERS)
    bad = [s for s in items if s not in PEERS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown engine(s) {bad}; choose from {', '.join(PEERS)} or all")
    return items


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the graphc CLI's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="time model files, or the benchmark suite, against PyTorch, torch.compile and ONNX Runtime",
        description="Time graphc on model files (MODEL.py defining model() and example_inputs(); see "
        "docs/BENCHMARKS.md), or on the suite's workloads (benchmarks/*.py; all of them when none is "
        "named), optionally next to PyTorch eager, torch.compile and ONNX Runtime.",
    )
    p.add_argument(
        "workloads", nargs="*", metavar="MODEL.py|WORKLOAD", help="model files or suite workload names"
    )
    p.add_argument(
        "--compare",
        type=_parse_compare,
        default=[],
        metavar="ENGINES",
        help=f"comma list of {','.join(PEERS)}, or all",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument(
        "--threads", type=_positive, default=None, help="CPU threads for every engine (default: all)"
    )
    p.add_argument("--repeat", type=_positive, default=15, help="timed rounds per engine (default 15)")
    p.add_argument("--warmup", type=_positive, default=3, help="untimed steps first (default 3)")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per timed block (default 0.05)")
    p.add_argument(
        "--settle", type=float, default=0.2, help="seconds of rest before each timed block (default 0.2)"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--suite", type=Path, default=None, metavar="DIR", help="the suite's folder (default: benchmarks/)"
    )
    p.add_argument(
        "--list", action="store_true", help="list the suite's workloads and other scripts, then stop"
    )
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the ratios (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="tiny repeat counts (tests, smoke runs)")
    p.add_argument("--no-compile-time", action="store_true", help="skip the cold/warm compile subprocesses")
    p.add_argument("--profile", action="store_true", help="per-kernel times of graphc's plans")
    p.set_defaults(func=cmd_bench)
    return p


def _list(folder: Path | None) -> None:
    from .workloads import describe, other_scripts, suite_dir, suite_files

    folder = folder or suite_dir()
    print(f"suite folder: {folder or 'none (not a source checkout; use --suite DIR)'}")
    for kind, title in (("model", "model workloads"), ("custom", "custom workloads (time themselves)")):
        files = suite_files(folder, kind)
        if files:
            print(f"{title}:")
        for p in files:
            print(f"  {p.stem:<22} {describe(p)}")
    others = other_scripts(folder)
    if others:
        print("other benchmark scripts (run with python):", ", ".join(p.name for p in others))


def cmd_bench(args: argparse.Namespace) -> None:
    """Run `graphc bench` from parsed arguments; GraphcError (exit 2) when graphc failed on a workload."""
    from .report import format_table, plot, write_json
    from .runner import graphc_failures, run_bench

    if args.list:
        _list(args.suite)
        return

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    data = run_bench(
        args.workloads or None,
        args.compare,
        threads=args.threads,
        repeat=args.repeat,
        warmup=args.warmup,
        min_time=args.min_time,
        settle=args.settle,
        device=args.device,
        compile_time=not args.no_compile_time,
        profile=args.profile,
        quick=args.quick,
        suite=args.suite,
        log=log,
    )
    print(format_table(data))
    if args.json:
        write_json(data, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        print(plot(data, args.plot))
    failures = graphc_failures(data)
    if failures:
        raise GraphcError("graphc failed on " + "; ".join(failures))
