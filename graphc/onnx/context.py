"""What a converter sees of one ONNX node: checked attributes, its inputs as Tensors or constants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.ir import GraphcError
from graphc.ir.types import DTYPES
from graphc.tensor import Tensor, TraceContext

from .proto import Attrs, sanitize

_NUMPY_TO_GRAPHC = {v: k for k, v in DTYPES.items()}


@dataclass
class Initializer:
    """A float initializer: a parameter of the module (read as a Tensor, or as its array)."""

    name: str
    array: np.ndarray
    tensor: Any  # a callable giving the traced Tensor


def value_tensor(v: Any, ctx: TraceContext, name: str, where: str) -> Tensor:
    """A converted value (Tensor, initializer or array) as a Tensor of the trace ``ctx``."""
    if isinstance(v, Tensor):
        return v
    if isinstance(v, Initializer):
        return v.tensor()
    arr = np.asarray(v)
    dtype = _NUMPY_TO_GRAPHC.get(arr.dtype)
    if dtype is None:
        raise GraphcError(f"{where}: a constant of dtype {arr.dtype} is not supported")
    if arr.ndim == 0:
        return ctx.const(arr.item(), dtype)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)  # ndim >= 1 here, so the shape is kept
    return ctx.array(arr, name=sanitize(name, "const"), kind="const")


class NodeContext:
    """One node being converted: ``t(i)`` gives input i as a Tensor, ``static(i)`` as an array."""

    def __init__(
        self,
        node,
        opset: int,
        inputs: list[Any],
        ctx: TraceContext,
        n_outputs: int,
        index: int,
        env: dict[str, Any] | None = None,
    ) -> None:
        self.node = node
        self.op_type = node.op_type
        self.opset = opset
        self.env = env if env is not None else {}  # the values in scope (a body reads outer names)
        self.where = f"ONNX node {(node.name or f'#{index}')[:60]!r} ({node.op_type[:40]})"
        self.attrs = Attrs(node, self.where)
        self.inputs = inputs
        self.input_names = list(node.input)
        self.ctx = ctx
        self.n_outputs = n_outputs

    # ------------------------------------------------------------ inputs
    def __len__(self) -> int:
        return len(self.inputs)

    def has(self, i: int) -> bool:
        """Whether optional input ``i`` is given."""
        return i < len(self.inputs) and self.inputs[i] is not None

    def is_static(self, i: int) -> bool:
        """Whether input ``i`` is known while converting (a constant, a folded shape)."""
        return self.has(i) and isinstance(self.inputs[i], np.ndarray)

    def all_static(self) -> bool:
        """Whether every given input is known while converting."""
        return all(v is None or isinstance(v, np.ndarray) for v in self.inputs)

    def static(self, i: int, what: str = "this input") -> np.ndarray:
        """Input ``i``'s value while converting (constants and initializers), or a GraphcError."""
        if not self.has(i):
            raise self.fail(f"input {i} ({what}) is missing")
        v = self.inputs[i]
        if isinstance(v, Initializer):
            return v.array
        if isinstance(v, np.ndarray):
            return v
        raise self.fail(
            f"input {i} ({what}) must be a constant: graphc needs it while compiling, but it is computed "
            "at run time"
        )

    def static_ints(self, i: int, what: str, lo: int = -(2**62), hi: int = 2**62) -> list[int]:
        """Input ``i`` as a list of ints in [lo, hi] (a constant 0-D or 1-D integer tensor)."""
        arr = self.static(i, what)
        if arr.dtype.kind not in "iu" or arr.ndim > 1 or arr.size > 4 * 32:
            raise self.fail(f"{what} must be a short 1-D integer tensor, got {arr.dtype}{list(arr.shape)}")
        values = [int(v) for v in arr.reshape(-1)]
        if any(not lo <= v <= hi for v in values):
            raise self.fail(f"{what} must lie in [{lo}, {hi}], got {values[:8]}")
        return values

    def static_float(self, i: int, what: str, default: float) -> float:
        """Input ``i`` as one number (``default`` when absent)."""
        if not self.has(i):
            return default
        arr = self.static(i, what)
        if arr.size != 1 or (arr.dtype.kind not in "fiub" and arr.dtype not in DTYPES.values()):  # bf16: "V"
            raise self.fail(f"{what} must be one number, got {arr.dtype}{list(arr.shape)}")
        return float(arr.reshape(-1)[0])

    def t(self, i: int) -> Tensor:
        """Input ``i`` as a Tensor of the trace."""
        if not self.has(i):
            raise self.fail(f"input {i} is missing")
        return self.tensor(self.inputs[i], self.input_names[i])

    def tensor(self, v: Any, name: str = "const") -> Tensor:
        """A value (Tensor, initializer or array) as a Tensor of the trace."""
        return value_tensor(v, self.ctx, name, self.where)

    def ts(self) -> list[Tensor]:
        """Every given input as a Tensor."""
        return [self.t(i) for i in range(len(self.inputs)) if self.has(i)]

    def op(self, op: str, *inputs: Tensor, **attrs: object) -> Tensor:
        """Append a graphc primitive op."""
        return self.ctx.op(op, *inputs, **attrs)

    def fail(self, message: str) -> GraphcError:
        """A GraphcError naming this node."""
        return GraphcError(f"{self.where}: {message}")

    def axis(self, axis: int, rank: int, what: str = "axis") -> int:
        """An ONNX axis (negative counts from the end) checked against ``rank``."""
        if not -rank <= axis < max(rank, 1):
            raise self.fail(f"{what} {axis} is out of range for rank {rank}")
        return axis % rank if rank else 0
