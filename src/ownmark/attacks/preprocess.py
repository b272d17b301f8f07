"""More input preprocessing at query time: bit-depth squeezing, median and mean smoothing, occlusion.

The thief serves its copy behind a transform that destroys fine detail a trigger may rely on while
the task survives: the input-preprocessing group of the SoK's removal attacks. Like
:mod:`ownmark.attacks.transforms`, each returns ``TransformedModel(copy, transform)``: weights
untouched, no epochs, no queries; each is also a verification-time transform
(``ownmark verify --transform squeeze --set bits=1``).

Written here: median and mean smoothing are kornia's filters; bit-depth squeezing is one line of
rounding (IBM ART's ``FeatureSqueezing`` computes the same thing, and the optional test in
``tests/attacks/test_preprocess.py`` checks they agree when ART is installed); seeded occlusion has
no maintained implementation that is deterministic per query, so it is written by hand.

Reference:
    Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
    Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (input quantization, smoothing, occlusion as
    removal attacks); Xu, Evans, Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep
    Neural Networks", NDSS 2018, arXiv:1704.01155 (bit-depth reduction, median smoothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
from torch import nn

from ownmark.attacks.base import ATTACKS
from ownmark.attacks.transforms import InputTransform, require_odd_kernel
from ownmark.errors import ConfigError, require_in_range


class BitDepth(nn.Module):
    """Rounds each pixel of [0, 1] images to ``bits`` bits: 2**bits levels (1 bit: black or white)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def extra_repr(self) -> str:
        return f"bits={self.bits}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x.clamp(0, 1) * levels) / levels


class Smooth(nn.Module):
    """A ``kernel_size`` x ``kernel_size`` median or mean filter (kornia; reflected borders for the mean)."""

    def __init__(self, kind: str, kernel_size: int) -> None:
        super().__init__()
        self.kind, self.kernel_size = kind, kernel_size

    def extra_repr(self) -> str:
        return f"kind={self.kind}, kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        if self.kind == "median":
            return kornia.filters.median_blur(x, (k, k))
        return kornia.filters.box_blur(x, (k, k), border_type="reflect")


class Occlusion(nn.Module):
    """Fills one ``size`` x ``size`` square per image with ``fill``, at a position drawn from a
    generator seeded afresh on every call: image ``i`` of equally shaped batches gets the same
    square, so repeating a query repeats the answer."""

    def __init__(self, size: int, fill: float, seed: int) -> None:
        super().__init__()
        self.size, self.fill, self.seed = size, fill, seed

    def extra_repr(self) -> str:
        return f"size={self.size}, fill={self.fill}, seed={self.seed}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s = min(self.size, h, w)
        g = torch.Generator().manual_seed(self.seed)
        top = torch.randint(0, h - s + 1, (n,), generator=g).tolist()
        left = torch.randint(0, w - s + 1, (n,), generator=g).tolist()
        out = x.clone()
        for i, (r, c) in enumerate(zip(top, left, strict=True)):
            out[i, :, r : r + s, c : c + s] = self.fill
        return out


@dataclass(frozen=True)
class SqueezeConfig:
    """Bits per pixel kept, 1 to 8 (1: every pixel black or white)."""

    bits: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise ConfigError(f"SqueezeConfig.bits must be an int from 1 to 8, got {self.bits!r}")


@dataclass(frozen=True)
class SmoothConfig:
    """Odd kernel size in pixels."""

    kernel_size: int = 3

    def __post_init__(self) -> None:
        require_odd_kernel(self)


@dataclass(frozen=True)
class OcclusionConfig:
    """Side of the square in pixels and its fill value in [0, 1]."""

    size: int = 8
    fill: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"OcclusionConfig.size must be a positive int (pixels), got {self.size!r}")
        require_in_range(self, "fill", 0.0, 1.0)


@ATTACKS.register("squeeze")
class Squeeze(InputTransform):
    """Feature squeezing: reduce every input to ``bits`` bits per pixel before the model sees it.

    Reference:
        Xu, Evans, Qi, NDSS 2018, arXiv:1704.01155; Lukas et al., IEEE S&P 2022, arXiv:2108.04974.
    Example:
        >>> from ownmark.models import ModelSpec
        >>> squeezed, cost = Squeeze(SqueezeConfig(bits=1))(ModelSpec("cnn2", 1, 4, 8).build(), None, seed=0)
        >>> squeezed.transform(torch.tensor([[[[0.2, 0.6]]]])).tolist(), cost.queries
        ([[[[0.0, 1.0]]]], 0)
    """

    config_class = SqueezeConfig

    def transform(self, seed: int) -> nn.Module:
        return BitDepth(self.config.bits)


@ATTACKS.register("median")
class Median(InputTransform):
    """Median-filter every input before the model sees it.

    Reference:
        Xu, Evans, Qi, NDSS 2018, arXiv:1704.01155; Riba et al., WACV 2020, arXiv:1910.02190;
        Lukas et al., IEEE S&P 2022, arXiv:2108.04974.
    Example:
        >>> from ownmark.models import ModelSpec
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1.0        # one bright pixel
        >>> med, _ = Median(SmoothConfig(kernel_size=3))(ModelSpec("cnn2", 1, 4, 5).build(), None, seed=0)
        >>> float(med.transform(x).max())
        0.0
    """

    config_class = SmoothConfig

    def transform(self, seed: int) -> nn.Module:
        return Smooth("median", self.config.kernel_size)


@ATTACKS.register("mean")
class Mean(InputTransform):
    """Mean-filter (box blur) every input before the model sees it.

    Reference:
        Riba et al., WACV 2020, arXiv:1910.02190; Lukas et al., IEEE S&P 2022, arXiv:2108.04974.
    Example:
        >>> from ownmark.models import ModelSpec
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 0.9
        >>> mean, _ = Mean(SmoothConfig(kernel_size=3))(ModelSpec("cnn2", 1, 4, 5).build(), None, seed=0)
        >>> round(float(mean.transform(x)[0, 0, 2, 2]), 3)
        0.1
    """

    config_class = SmoothConfig

    def transform(self, seed: int) -> nn.Module:
        return Smooth("mean", self.config.kernel_size)


@ATTACKS.register("occlusion")
class Occlude(InputTransform):
    """Cover a seeded random square of every input before the model sees it.

    Reference:
        Lukas et al., IEEE S&P 2022, arXiv:2108.04974 (random occlusion as input preprocessing).
    Example:
        >>> from ownmark.models import ModelSpec
        >>> occ, _ = Occlude(OcclusionConfig(size=4))(ModelSpec("cnn2", 1, 4, 8).build(), None, seed=0)
        >>> y = occ.transform(torch.ones(2, 1, 8, 8))
        >>> int((y == 0).sum()), torch.equal(y, occ.transform(torch.ones(2, 1, 8, 8)))
        (32, True)
    """

    config_class = OcclusionConfig

    def transform(self, seed: int) -> nn.Module:
        return Occlusion(self.config.size, self.config.fill, seed)
