"""Every primitive in the registry has its part in every stage: ``missing_parts`` names what is missing.

An elementwise op's CPU and CUDA part is its scalar form (``kernels/scalar_ops.SCALAR_FORMS`` or
the backend's override table), which is what the generators use, not the kernel table derived
from it; every other op's part is its entry in the backend's kernel table.
"""

import dataclasses

import numpy as np
import pytest

from graphc.ir import REGISTRY, Graph, TensorType
from graphc.kernels import cpu, cuda, reference, scalar_ops
from graphc.kernels.cpu.cache import load_kernel
from graphc.kernels.cpu.codegen import CPU_SCALAR_OVERRIDES, Body, pointwise_source
from graphc.kernels.cuda.codegen import CUDA_SCALAR_OVERRIDES
from graphc.kernels.cuda.generators import gen_pointwise
from graphc.kernels.cuda.loops import single_body
from graphc.passes.autodiff import NON_DIFFERENTIABLE, VJP_RULES

ELEMENTWISE = ("pointwise", "broadcast")


def _backend_part(op: str, kernels: dict, overrides: dict) -> bool:
    if REGISTRY[op].fusion in ELEMENTWISE:
        return scalar_ops.has_scalar_form(op, overrides)
    return op in kernels


PARTS = {
    "reference kernel": lambda op: op == "fused" or op in reference.KERNELS,
    "VJP rule": lambda op: op == "fused" or op in VJP_RULES or op in NON_DIFFERENTIABLE,
    "CPU kernel": lambda op: _backend_part(op, cpu.CPU_KERNELS, CPU_SCALAR_OVERRIDES),
    "CUDA kernel": lambda op: _backend_part(op, cuda.CUDA_KERNELS, CUDA_SCALAR_OVERRIDES),
}


def missing_parts() -> dict[str, list[str]]:
    """Part -> the registered ops without it (only parts some op misses)."""
    missing = {part: sorted(op for op in REGISTRY if not has(op)) for part, has in PARTS.items()}
    return {part: ops for part, ops in missing.items() if ops}


def check_coverage() -> None:
    """Fail naming every op and every part it misses."""
    missing = missing_parts()
    assert not missing, "; ".join(f"ops with no {part}: {', '.join(ops)}" for part, ops in missing.items())


def test_every_op_has_its_part():
    check_coverage()


def test_tables_name_only_registered_ops():
    tables = {
        "reference": reference.KERNELS,
        "VJP": VJP_RULES,
        "CPU": cpu.CPU_KERNELS,
        "CUDA": cuda.CUDA_KERNELS,
        "scalar forms": scalar_ops.SCALAR_FORMS,
        "CPU scalar overrides": CPU_SCALAR_OVERRIDES,
        "CUDA scalar overrides": CUDA_SCALAR_OVERRIDES,
        "reductions": scalar_ops.REDUCTIONS,
    }
    for stage, table in tables.items():
        unknown = sorted(set(table) - set(REGISTRY))
        assert not unknown, f"{stage} table names ops the registry lacks: {unknown}"


def test_kernel_tables_follow_the_scalar_table():
    """Each backend generates exactly the elementwise ops its scalar table covers."""
    for kernels, overrides in (
        (cpu.CPU_KERNELS, CPU_SCALAR_OVERRIDES),
        (cuda.CUDA_KERNELS, CUDA_SCALAR_OVERRIDES),
    ):
        elementwise = {op for op, d in REGISTRY.items() if d.fusion in ELEMENTWISE}
        assert elementwise & set(kernels) == {
            op for op in elementwise if scalar_ops.has_scalar_form(op, overrides)
        }


def _twice(dialect, node, args):
    return dialect.wrap(node.outputs[0].dtype, f"{args[0]} + {args[0]}")


def test_a_new_op_is_named_until_each_part_exists(monkeypatch):
    op = "scratch_twice"
    monkeypatch.setitem(REGISTRY, op, dataclasses.replace(REGISTRY["neg"], name=op))

    def failure() -> str:
        with pytest.raises(AssertionError) as err:
            check_coverage()
        return str(err.value)

    for part in PARTS:
        assert f"ops with no {part}: {op}" in failure()
    monkeypatch.setitem(reference.KERNELS, op, lambda xs, attrs: [xs[0] + xs[0]])
    assert "reference" not in failure() and "VJP rule" in failure()
    monkeypatch.setitem(VJP_RULES, op, VJP_RULES["neg"])
    assert "VJP rule" not in failure()
    assert "ops with no CPU kernel: scratch_twice" in failure()
    assert "ops with no CUDA kernel: scratch_twice" in failure()
    monkeypatch.setitem(scalar_ops.SCALAR_FORMS, op, _twice)  # one entry for both backends
    check_coverage()

    # ... and both generators take it with no backend code.
    g = Graph("scratch")
    x = g.add_input("x", TensorType((3, 5), "f32"))
    node = g.add_node(op, [x])
    assert "float32(s_in0 + s_in0)" in gen_pointwise(node, single_body(node)).source
    kernel = load_kernel(pointwise_source(Body([x], [node], node.outputs), op))
    a = np.arange(15, dtype=np.float32).reshape(3, 5) - 7
    out = np.empty_like(a)
    kernel(a, out)
    np.testing.assert_array_equal(out, a + a)
