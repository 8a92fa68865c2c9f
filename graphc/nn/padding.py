"""Padding layers (ZeroPad, ConstantPad, ReflectionPad, ReplicationPad, CircularPad in 1-D/2-D/3-D):
F.pad with PyTorch's argument expansion (an int pads every side)."""

from __future__ import annotations

from typing import Any

from graphc import padding as _padding

from .module import Module


class _PadNd(Module):
    mode = "constant"
    dims = 2

    def __init__(self, padding: Any, value: float = 0.0) -> None:
        super().__init__()
        amounts = [int(padding)] * (2 * self.dims) if isinstance(padding, int) else [int(p) for p in padding]
        self.padding, self.value = tuple(amounts), value

    def forward(self, input: Any) -> Any:
        """Pad."""
        value = self.value if self.mode == "constant" else None
        return _padding.pad(input, self.padding, self.mode, value)

    def extra_repr(self) -> str:
        constant = self.mode == "constant" and not type(self).__name__.startswith("Zero")
        return f"padding={self.padding}, value={self.value}" if constant else f"{self.padding}"


def _layer(name: str, mode: str, dims: int, doc: str) -> type:
    if mode == "constant" and name.startswith("Zero"):

        def init(self: Any, padding: Any) -> None:
            _PadNd.__init__(self, padding, 0.0)

        return type(name, (_PadNd,), {"mode": mode, "dims": dims, "__init__": init, "__doc__": doc})
    return type(name, (_PadNd,), {"mode": mode, "dims": dims, "__doc__": doc})


ZeroPad1d = _layer("ZeroPad1d", "constant", 1, "Pad the last dim with zeros.")
ZeroPad2d = _layer("ZeroPad2d", "constant", 2, "Pad the last two dims with zeros.")
ZeroPad3d = _layer("ZeroPad3d", "constant", 3, "Pad the last three dims with zeros.")
ConstantPad1d = _layer("ConstantPad1d", "constant", 1, "Pad the last dim with a constant.")
ConstantPad2d = _layer("ConstantPad2d", "constant", 2, "Pad the last two dims with a constant.")
ConstantPad3d = _layer("ConstantPad3d", "constant", 3, "Pad the last three dims with a constant.")
ReflectionPad1d = _layer("ReflectionPad1d", "reflect", 1, "Pad the last dim with its reflection.")
ReflectionPad2d = _layer("ReflectionPad2d", "reflect", 2, "Pad the last two dims with their reflection.")
ReflectionPad3d = _layer("ReflectionPad3d", "reflect", 3, "Pad the last three dims with their reflection.")
ReplicationPad1d = _layer("ReplicationPad1d", "replicate", 1, "Pad the last dim with its edge values.")
ReplicationPad2d = _layer("ReplicationPad2d", "replicate", 2, "Pad the last two dims with their edge values.")
ReplicationPad3d = _layer(
    "ReplicationPad3d", "replicate", 3, "Pad the last three dims with their edge values."
)
CircularPad1d = _layer("CircularPad1d", "circular", 1, "Pad the last dim circularly.")
CircularPad2d = _layer("CircularPad2d", "circular", 2, "Pad the last two dims circularly.")
CircularPad3d = _layer("CircularPad3d", "circular", 3, "Pad the last three dims circularly.")

__all__ = [n for n in dir() if n.endswith(("Pad1d", "Pad2d", "Pad3d"))]
