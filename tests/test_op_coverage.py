"""Every primitive in the registry has its part in every stage: this test names what is missing."""

import importlib

import pytest

from graphc.ir import REGISTRY

# stage -> (module, attribute holding the table keyed by op name, ops the stage handles apart)
TABLES = {
    "reference kernel": ("graphc.kernels.reference", "KERNELS", {"fused"}),
    "VJP rule": ("graphc.passes.autodiff", "VJP_RULES", {"fused"}),
    "CPU kernel": ("graphc.kernels.cpu", "CPU_KERNELS", set()),
    "CUDA kernel": ("graphc.kernels.cuda", "CUDA_KERNELS", set()),
}


def _table(stage: str) -> set[str]:
    module, attr, apart = TABLES[stage]
    table = set(getattr(importlib.import_module(module), attr)) | apart
    if stage == "VJP rule":
        from graphc.passes.autodiff import NON_DIFFERENTIABLE

        table |= set(NON_DIFFERENTIABLE)
    return table


@pytest.mark.parametrize("stage", sorted(TABLES))
def test_every_op_has_its_part(stage):
    missing = sorted(set(REGISTRY) - _table(stage))
    assert not missing, f"ops with no {stage}: {', '.join(missing)}"


def test_tables_name_only_registered_ops():
    for stage in TABLES:
        unknown = sorted(_table(stage) - set(REGISTRY))
        assert not unknown, f"{stage} table names ops the registry lacks: {unknown}"
