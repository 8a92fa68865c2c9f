"""Parameter initialization (PyTorch's nn.init formulas) from one seeded NumPy generator.

``manual_seed(seed)`` reseeds the generator every layer's default initialization draws from, and
a second one that gives each traced dropout its ``seed`` attribute, so a model built and traced
after ``manual_seed`` is the same every run. The functions fill arrays in place and return them.
"""

from __future__ import annotations

import math

import numpy as np

_DEFAULT_SEED = 0
_generator = np.random.default_rng(_DEFAULT_SEED)
_seed_generator = np.random.default_rng([_DEFAULT_SEED, 1])


def manual_seed(seed: int) -> None:
    """Reseed the generators behind default parameter init and dropout seeds."""
    global _generator, _seed_generator
    _generator = np.random.default_rng(int(seed))
    _seed_generator = np.random.default_rng([int(seed), 1])


def generator() -> np.random.Generator:
    """The generator default initialization draws from."""
    return _generator


def next_seed() -> int:
    """A fresh seed for one random op (dropout) in a traced graph."""
    return int(_seed_generator.integers(0, 2**31 - 1))


def calculate_fan_in_and_fan_out(array: np.ndarray) -> tuple[int, int]:
    """PyTorch's fan_in/fan_out: dims 1 and 0 times the receptive field size."""
    if array.ndim < 2:
        raise ValueError("fan in and fan out need an array of at least 2 dimensions")
    receptive = math.prod(array.shape[2:])
    return array.shape[1] * receptive, array.shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """PyTorch's recommended gain for a nonlinearity."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "sigmoid") or nonlinearity.startswith("conv"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity}")


def _fill(array: np.ndarray, values: np.ndarray) -> np.ndarray:
    np.copyto(array, values.astype(array.dtype, copy=False))
    return array


def uniform_(array: np.ndarray, a: float = 0.0, b: float = 1.0) -> np.ndarray:
    """Fill with U(a, b)."""
    return _fill(array, _generator.uniform(a, b, size=array.shape))


def normal_(array: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """Fill with N(mean, std^2)."""
    return _fill(array, _generator.normal(mean, std, size=array.shape))


def constant_(array: np.ndarray, value: float) -> np.ndarray:
    """Fill with a constant."""
    array[...] = value
    return array


def zeros_(array: np.ndarray) -> np.ndarray:
    """Fill with zeros."""
    return constant_(array, 0.0)


def ones_(array: np.ndarray) -> np.ndarray:
    """Fill with ones."""
    return constant_(array, 1.0)


def kaiming_uniform_(
    array: np.ndarray, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> np.ndarray:
    """He uniform init: U(-bound, bound), bound = gain * sqrt(3 / fan)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    fan = fan_in if mode == "fan_in" else fan_out
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan) if fan else 0.0
    return uniform_(array, -bound, bound)


def kaiming_normal_(
    array: np.ndarray, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> np.ndarray:
    """He normal init: N(0, (gain / sqrt(fan))^2)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    fan = fan_in if mode == "fan_in" else fan_out
    return normal_(array, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0)


def xavier_uniform_(array: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Glorot uniform init."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(array, -bound, bound)


def xavier_normal_(array: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """Glorot normal init."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(array)
    return normal_(array, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def trunc_normal_(
    array: np.ndarray, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0
) -> np.ndarray:
    """Fill with N(mean, std^2) truncated to [a, b] (values outside are drawn again)."""
    values = _generator.normal(mean, std, size=array.shape)
    for _ in range(100):
        bad = (values < a) | (values > b)
        if not bad.any():
            break
        values[bad] = _generator.normal(mean, std, size=int(bad.sum()))
    return _fill(array, np.clip(values, a, b))
