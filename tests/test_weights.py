"""graphc.load_weights: .safetensors and .npz files into a state_dict, without torch or pickle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import graphc
from graphc import nn
from graphc.ir import GraphcError


def _torch_state(seed: int = 0) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
    return model.eval(), {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_load_weights_round_trip_into_a_model(tmp_path, ext):
    tmodel, state = _torch_state()
    path = tmp_path / f"model{ext}"
    if ext == ".safetensors":
        save_file(state, str(path))
    else:
        np.savez(path, **state)
    loaded = graphc.load_weights(path)
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape
        np.testing.assert_array_equal(loaded[key], value)
    ours = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).eval()
    result = ours.load_state_dict(loaded)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        expect = tmodel(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(graphc.compile(ours, x, backend="reference")(x), expect, rtol=1e-5, atol=1e-6)


def test_load_weights_refuses_pickles_and_unknown_files(tmp_path):
    bad = tmp_path / "objects.npz"
    np.savez(bad, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(GraphcError, match="objects.npz is not a readable .npz file"):
        graphc.load_weights(bad)
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04not a pickle we would ever open")
    with pytest.raises(GraphcError, match=r"extension '\.pt'.*unpickling runs code"):
        graphc.load_weights(pt)
    with pytest.raises(GraphcError, match="no such file"):
        graphc.load_weights(tmp_path / "missing.safetensors")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\xff" * 16)
    with pytest.raises(GraphcError, match="not a readable safetensors file"):
        graphc.load_weights(damaged)
