"""graphc.nn: Module, Parameter, containers and layers with PyTorch's names and defaults."""

from . import functional, init
from .activation import (
    CELU,
    ELU,
    SELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LogSigmoid,
    Mish,
    ReLU6,
    Softplus,
    Softsign,
)
from .attention import (
    MultiheadAttention,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from .container import ModuleDict, ParameterDict, ParameterList, Unflatten
from .conv import Conv1d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .init import manual_seed
from .layers import (
    GELU,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    CrossEntropyLoss,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    L1Loss,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MaxPool2d,
    MSELoss,
    NLLLoss,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .lazy import LazyConv2d, LazyLinear, LazyModuleMixin
from .losses import (
    GLU,
    BCELoss,
    BCEWithLogitsLoss,
    CosineSimilarity,
    Fold,
    HuberLoss,
    KLDivLoss,
    PairwiseDistance,
    SmoothL1Loss,
    Softmin,
    Unfold,
    UpsamplingBilinear2d,
    UpsamplingNearest2d,
)
from .module import Module, ModuleList, Parameter, Sequential, UninitializedParameter
from .normalization import GroupNorm, InstanceNorm1d, InstanceNorm2d, RMSNorm
from .padding import *  # noqa: F403  (ZeroPad2d, ReflectionPad2d, ...)
from .padding import __all__ as _padding_names
from .pooling import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool1d, MaxPool1d
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell  # noqa: F401  (recurrent layers)
from .resize import PixelShuffle, PixelUnshuffle, Upsample

__all__ = [
    "GELU",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Embedding",
    "Flatten",
    "Identity",
    "L1Loss",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "functional",
    "init",
    "manual_seed",
    "CELU",
    "ELU",
    "SELU",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "LogSigmoid",
    "Mish",
    "ReLU6",
    "Softplus",
    "Softsign",
    "MultiheadAttention",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "ModuleDict",
    "ParameterDict",
    "ParameterList",
    "Unflatten",
    "Conv1d",
    "ConvTranspose1d",
    "GLU",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CosineSimilarity",
    "Fold",
    "HuberLoss",
    "KLDivLoss",
    "PairwiseDistance",
    "SmoothL1Loss",
    "Softmin",
    "Unfold",
    "UpsamplingBilinear2d",
    "UpsamplingNearest2d",
    "PixelShuffle",
    "PixelUnshuffle",
    "Upsample",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "LazyConv2d",
    "LazyLinear",
    "LazyModuleMixin",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "RMSNorm",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool1d",
    "MaxPool1d",
    "UninitializedParameter",
]
__all__ += _padding_names


def __getattr__(name: str) -> object:
    if name.startswith("__"):
        raise AttributeError(name)
    from graphc.functional import unsupported

    raise unsupported("torch.nn", name)
