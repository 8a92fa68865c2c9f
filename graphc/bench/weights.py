"""One set of initial weights for every engine: graphc's seeded initializers, loaded by name."""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir import GraphcError

SEED = 0


def to_numpy(value: Any) -> np.ndarray:
    """A copy of a graphc array or torch tensor as a NumPy array."""
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy().copy()
    if not isinstance(value, np.ndarray) and hasattr(value, "data"):
        value = value.data
    return np.array(value, copy=True)


def state_of(model: Any) -> dict[str, np.ndarray]:
    """A model's state_dict as NumPy arrays ({} for a plain function)."""
    if not hasattr(model, "state_dict"):
        return {}
    return {k: to_numpy(v) for k, v in model.state_dict().items()}


def seeded_graphc_model(make: Any) -> Any:
    """``make()`` with graphc's initializers seeded, so every run starts from the same weights."""
    from graphc import nn

    nn.init.manual_seed(SEED)
    return make()


def load_state(model: Any, state: dict[str, np.ndarray], library: str, where: str) -> None:
    """Load NumPy weights into a graphc or torch Module by name (GraphcError naming ``where`` if unfit)."""
    if not hasattr(model, "state_dict"):
        if state:
            raise GraphcError(
                f"{where}: the {library} model is a function, graphc's has weights {list(state)}"
            )
        return
    own = model.state_dict()
    if list(own) != list(state) and set(own) != set(state):
        raise GraphcError(
            f"{where}: the {library} model's parameters {list(own)} are not graphc's {list(state)} "
            "(torch_model() must have the state_dict keys of model())"
        )
    for k, v in state.items():
        shape = tuple(to_numpy(own[k]).shape)
        if shape != v.shape:
            raise GraphcError(
                f"{where}: {k} is {list(shape)} in the {library} model, {list(v.shape)} in graphc's"
            )
    if library == "torch":
        import torch

        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    else:
        model.load_state_dict({k: v.copy() for k, v in state.items()})
