"""graphc.pruning: magnitude masks against torch.nn.utils.prune; structured pruning shrinks the
graph and computes what the original computes with the removed units' outgoing weights zeroed."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import graphc
from graphc import functional as F
from graphc import nn, pruning
from graphc.ir import GraphcError

torch = pytest.importorskip("torch")
from torch.nn.utils import prune as torch_prune  # noqa: E402


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 6, 3)
        self.fc1 = nn.Linear(6 * 3 * 3, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        return self.fc2(F.relu(self.fc1(h.reshape(h.shape[0], -1))))


WEIGHTS = ("c1.weight", "c2.weight", "fc1.weight", "fc2.weight")


def _torch_masks(model: Net, amount: float, scope: str) -> dict[str, np.ndarray]:
    params = dict(model.named_parameters())
    holders = {n: torch.nn.Module() for n in WEIGHTS}
    for n, h in holders.items():
        h.weight = torch.nn.Parameter(torch.tensor(np.asarray(params[n])))
    if scope == "layer":
        for h in holders.values():
            torch_prune.l1_unstructured(h, "weight", amount=amount)
    else:
        torch_prune.global_unstructured(
            [(h, "weight") for h in holders.values()],
            pruning_method=torch_prune.L1Unstructured,
            amount=amount,
        )
    return {n: h.weight_mask.numpy().astype(bool) for n, h in holders.items()}


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_masks_match_torch_and_apply_in_place(scope):
    graphc.manual_seed(0)
    model = Net()
    x = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    want = _torch_masks(model, 0.4, scope)
    before = {n: np.array(p) for n, p in model.named_parameters()}
    masks = pruning.magnitude(model, 0.4, scope=scope)
    assert sorted(masks) == sorted(WEIGHTS)
    params = dict(model.named_parameters())
    for n in WEIGHTS:
        np.testing.assert_array_equal(masks[n], want[n], err_msg=n)
        np.testing.assert_array_equal(params[n], before[n] * want[n])
    np.testing.assert_array_equal(params["fc1.bias"], before["fc1.bias"])  # biases untouched
    # The compiled model runs on the pruned weights.
    reference = copy.deepcopy(model)
    np.testing.assert_allclose(graphc.compile(model, x)(x), graphc.compile(reference, x)(x), rtol=1e-6)


def test_apply_masks_reapplies_after_an_update():
    model = Net()
    masks = pruning.magnitude(model, 0.5)
    model.fc1.weight[...] = 1.0
    pruning.apply_masks(model, masks)
    assert (np.asarray(model.fc1.weight) == 0).sum() == (~masks["fc1.weight"]).sum()


def test_structured_pruning_shrinks_the_graph_and_keeps_the_function():
    graphc.manual_seed(1)
    model = Net()
    x = np.random.default_rng(1).random((2, 3, 8, 8)).astype(np.float32)
    small = pruning.structured(model, 0.5, x)
    shapes = {n: np.shape(p) for n, p in small.named_parameters()}
    # c1's channels feed c2 and fc1's units feed fc2: both halve. c2 feeds a flatten and fc2
    # the output: both stay whole.
    assert shapes["c1.weight"] == (4, 3, 3, 3) and shapes["c1.bias"] == (4,)
    assert shapes["c2.weight"] == (6, 4, 3, 3)
    assert shapes["fc1.weight"] == (8, 54) and shapes["fc1.bias"] == (8,)
    assert shapes["fc2.weight"] == (4, 8)
    assert small.c1.out_channels == 4 and small.fc2.in_features == 8
    big_plan, small_plan = graphc.compile(model, x), graphc.compile(small, x)
    size = lambda plan: sum(v.type.numel for v in plan.graph.inputs)  # noqa: E731
    assert size(small_plan) < 0.7 * size(big_plan)

    # Oracle: the original with the dropped units' outgoing weights zeroed (smallest L2 norms).
    zeroed = copy.deepcopy(model)
    for producer, consumer in (("c1", "c2"), ("fc1", "fc2")):
        w = np.asarray(getattr(model, producer).weight)
        norms = np.sqrt((w.reshape(w.shape[0], -1).astype(np.float64) ** 2).sum(axis=1))
        drop = np.argsort(norms)[: w.shape[0] // 2]
        getattr(zeroed, consumer).weight[:, drop] = 0
    np.testing.assert_allclose(small_plan(x), graphc.compile(zeroed, x)(x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(small_plan(x), big_plan(x), atol=1e-6)  # it did remove something


def test_structured_leaves_a_residual_layer_whole():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8)
            self.c = nn.Linear(8, 3)

        def forward(self, x):
            h = F.relu(self.a(x))
            return self.c(h + self.b(h))

    model = Residual()
    x = np.ones((2, 8), np.float32)
    small = pruning.structured(model, 0.5, x)
    assert {n: np.shape(p) for n, p in small.named_parameters()} == {
        n: np.shape(p) for n, p in model.named_parameters()
    }


def test_bad_arguments_are_graphc_errors():
    model = Net()
    with pytest.raises(GraphcError, match=r"amount must be a fraction in \[0, 1\]"):
        pruning.magnitude(model, 1.5)
    with pytest.raises(GraphcError, match="scope must be one of"):
        pruning.magnitude(model, 0.5, scope="row")
    with pytest.raises(GraphcError, match="amount must be"):
        pruning.structured(model, -0.1, np.zeros((1, 3, 8, 8), np.float32))
