"""The ``graphc`` command: compile, dump, export, run and bench models."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

from graphc.ir import GraphcError, graph_to_dot, graph_to_json, print_graph

STAGES = ("traced", "optimized", "scheduled")
FORMATS = ("text", "dot", "svg", "json")


def _render(graph, fmt: str) -> str:
    if fmt == "text":
        return print_graph(graph)
    if fmt == "json":
        return json.dumps(graph_to_json(graph), indent=1)
    dot = graph_to_dot(graph)
    if fmt == "dot":
        return dot
    if shutil.which("dot") is None:
        raise GraphcError(
            "--format svg needs Graphviz's 'dot' program: install it with `apt-get install graphviz` "
            "(or use --format dot)"
        )
    return subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True).stdout


def memory_table(memory_plan) -> str:
    """The memory plan as a table: buffer, size, offset, live range."""
    rows = [f"{'buffer':<24} {'bytes':>10} {'offset':>10}  live", "-" * 60]
    for buf in sorted(memory_plan.buffers.values(), key=lambda b: (b.start, b.offset)):
        alias = f"  (alias of %{buf.alias_of})" if buf.alias_of else ""
        rows.append(f"%{buf.value:<23} {buf.size:>10} {buf.offset:>10}  [{buf.start}, {buf.end}]{alias}")
    rows.append(memory_plan.summary())
    return "\n".join(rows)


def cmd_dump(args: argparse.Namespace) -> None:
    """Print a model's graph at a stage."""
    from graphc import passes
    from graphc.modelfile import load_model
    from graphc.tracing import trace

    model, inputs = load_model(args.model)
    graph = trace(model, *inputs)
    if args.stage == "traced":
        print(_render(graph, args.format))
        return

    def dump_after(name: str, g) -> None:
        print(f"// ---- after {name}: {len(g.nodes)} nodes")
        print(_render(g, args.format))

    optimized = passes.optimize(graph, freeze=args.freeze, dump=dump_after if args.after_each_pass else None)
    if args.stage == "optimized":
        print(_render(optimized, args.format))
        return
    scheduled = passes.schedule(optimized)
    print(_render(scheduled, args.format))
    if args.format == "text":
        print()
        print(memory_table(passes.plan_memory(scheduled)))


def cmd_compile(args: argparse.Namespace) -> None:
    """Compile a model and write its plan file."""
    import graphc.compiler
    from graphc.modelfile import load_model

    model, inputs = load_model(args.model)
    plan = graphc.compiler.compile(model, *inputs, freeze=args.freeze)
    out = args.output or os.path.splitext(os.path.basename(args.model.partition(":")[0]))[0] + ".gcp"
    plan.save(out)
    print(f"wrote {out}: {len(plan.steps)} kernels; {plan.memory_report()}")


def cmd_export(args: argparse.Namespace) -> None:
    """Trace a model and write it as an ONNX file."""
    from graphc.modelfile import load_model

    try:
        from graphc import onnx as graphc_onnx
    except ImportError:
        raise GraphcError("graphc export needs the onnx extra (pip install 'graphc[onnx]')") from None
    model, inputs = load_model(args.model)
    out = args.output or os.path.splitext(os.path.basename(args.model.partition(":")[0]))[0] + ".onnx"
    proto = graphc_onnx.export(model, *inputs, path=out, opset=args.opset)
    print(f"wrote {out}: {len(proto.graph.node)} ONNX nodes, opset {args.opset}")


def _load_npy(name: str, path: str) -> np.ndarray:
    """The array in one .npy file, or a GraphcError naming the input and the file."""
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise GraphcError(f"--input {name}: no such file {path}") from None
    except (OSError, ValueError, EOFError) as err:  # truncated, not .npy, pickled objects
        raise GraphcError(f"--input {name}: {path} is not a readable .npy file ({err})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise GraphcError(f"--input {name}: {path} is an .npz archive, not a .npy file")
    return arr


def cmd_run(args: argparse.Namespace) -> None:
    """Run a saved plan on .npy inputs."""
    from graphc.compiler import load_plan

    if args.output:
        folder = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(folder):
            raise GraphcError(f"-o {args.output}: the folder {folder} does not exist")
    plan = load_plan(args.plan)
    given = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep:
            raise GraphcError(f"--input takes name=file.npy, got {item!r}")
        given[name] = _load_npy(name, path)
    expected = [v.name for v in plan.graph.data_inputs]
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in expected]
    if missing or unknown:
        raise GraphcError(f"plan inputs are {expected}; missing {missing}, unknown {unknown}")
    result = plan(*(given[n] for n in expected))
    results = result if isinstance(result, tuple) else (result,)
    if args.output:
        try:
            np.savez(args.output, **{f"output{i}": r for i, r in enumerate(results)})
        except OSError as err:
            raise GraphcError(f"cannot write {args.output}: {err.strerror or err}") from None
        print(f"wrote {args.output}")
    else:
        for i, r in enumerate(results):
            print(f"output{i}: {r.dtype}{list(r.shape)}\n{r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the graphc command."""
    parser = argparse.ArgumentParser(prog="graphc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("dump", help="print a model's graph")
    p.add_argument(
        "model", help="file.py (defining model() and example_inputs()), file.py:factory or model.onnx"
    )
    p.add_argument("--stage", choices=STAGES, default="optimized")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--after-each-pass", action="store_true", help="dump the graph after every pass")
    p.add_argument("--freeze", action="store_true", help="treat parameters as constants")
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser("compile", help="compile a model to a plan file")
    p.add_argument("model")
    p.add_argument("-o", "--output", help="plan file to write (default: MODEL's name + .gcp)")
    p.add_argument("--freeze", action="store_true")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("export", help="write a model's traced graph as an ONNX file")
    p.add_argument("model", help="file.py (defining model() and example_inputs()), file.py:factory or .onnx")
    p.add_argument("-o", "--output", help="ONNX file to write (default: MODEL's name + .onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version, 13 to 21 (default 17)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("run", help="run a plan file")
    p.add_argument("plan")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy")
    p.add_argument("-o", "--output", help="write outputs to this .npz")
    p.set_defaults(func=cmd_run)

    from graphc.bench.cli import add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the graphc command."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except GraphcError as err:
        print(f"graphc: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
