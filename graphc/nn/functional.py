"""``graphc.nn.functional`` is ``graphc.functional`` (as torch.nn.functional is to torch.nn)."""

from typing import Any

from graphc.functional import *  # noqa: F403
from graphc.functional import __all__, unsupported  # noqa: F401


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    raise unsupported("torch.nn.functional", name)
