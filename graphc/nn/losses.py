"""Loss and distance layers beyond MSELoss/L1Loss/CrossEntropyLoss/NLLLoss, plus GLU, Softmin,
Unfold/Fold and the UpsamplingNearest2d/UpsamplingBilinear2d shorthands (torch.nn's names)."""

from __future__ import annotations

from typing import Any

from graphc import functional as F
from graphc import functional_extras as FX
from graphc import resize

from .module import Module


class SmoothL1Loss(Module):
    """F.smooth_l1_loss as a module."""

    def __init__(
        self, size_average: Any = None, reduce: Any = None, reduction: str = "mean", beta: float = 1.0
    ):
        super().__init__()
        self.reduction, self.beta = reduction, beta

    def forward(self, input: Any, target: Any) -> Any:
        """Loss."""
        return FX.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(Module):
    """F.huber_loss as a module."""

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__()
        self.reduction, self.delta = reduction, delta

    def forward(self, input: Any, target: Any) -> Any:
        """Loss."""
        return FX.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class BCELoss(Module):
    """F.binary_cross_entropy as a module."""

    def __init__(
        self, weight: Any = None, size_average: Any = None, reduce: Any = None, reduction: str = "mean"
    ):
        super().__init__()
        self.reduction = reduction
        self.register_buffer("weight", weight)

    def forward(self, input: Any, target: Any) -> Any:
        """Loss."""
        return FX.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(Module):
    """F.binary_cross_entropy_with_logits as a module."""

    def __init__(
        self,
        weight: Any = None,
        size_average: Any = None,
        reduce: Any = None,
        reduction: str = "mean",
        pos_weight: Any = None,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Any, target: Any) -> Any:
        """Loss."""
        return F.binary_cross_entropy_with_logits(
            input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight
        )


class KLDivLoss(Module):
    """F.kl_div as a module."""

    def __init__(
        self, size_average: Any = None, reduce: Any = None, reduction: str = "mean", log_target: bool = False
    ) -> None:
        super().__init__()
        self.reduction, self.log_target = reduction, log_target

    def forward(self, input: Any, target: Any) -> Any:
        """Loss."""
        return FX.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class CosineSimilarity(Module):
    """F.cosine_similarity as a module."""

    def __init__(self, dim: int = 1, eps: float = 1e-8) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1: Any, x2: Any) -> Any:
        """Similarity."""
        return FX.cosine_similarity(x1, x2, self.dim, self.eps)


class PairwiseDistance(Module):
    """F.pairwise_distance as a module."""

    def __init__(self, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> None:
        super().__init__()
        self.norm, self.eps, self.keepdim = p, eps, keepdim

    def forward(self, x1: Any, x2: Any) -> Any:
        """Distance."""
        return FX.pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)


class GLU(Module):
    """F.glu as a module."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Any) -> Any:
        """Gate."""
        return FX.glu(input, self.dim)


class Softmin(Module):
    """F.softmin as a module."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Any) -> Any:
        """softmax(-input)."""
        return FX.softmin(input, self.dim)


class Unfold(Module):
    """F.unfold as a module."""

    def __init__(self, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1) -> None:
        super().__init__()
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, input: Any) -> Any:
        """Sliding blocks."""
        return FX.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)


class Fold(Module):
    """F.fold as a module."""

    def __init__(
        self, output_size: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
    ) -> None:
        super().__init__()
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, input: Any) -> Any:
        """Sum the blocks back."""
        return FX.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)


class UpsamplingNearest2d(Module):
    """Nearest upsampling (F.interpolate mode='nearest')."""

    def __init__(self, size: Any = None, scale_factor: Any = None) -> None:
        super().__init__()
        self.size, self.scale_factor = size, scale_factor

    def forward(self, input: Any) -> Any:
        """Resize."""
        return resize.interpolate(input, self.size, self.scale_factor, "nearest")


class UpsamplingBilinear2d(Module):
    """Bilinear upsampling with align_corners=True, as torch's."""

    def __init__(self, size: Any = None, scale_factor: Any = None) -> None:
        super().__init__()
        self.size, self.scale_factor = size, scale_factor

    def forward(self, input: Any) -> Any:
        """Resize."""
        return resize.interpolate(input, self.size, self.scale_factor, "bilinear", align_corners=True)
