"""Input transforms at verification time: the thief serves its copy behind a preprocessing step.

Each attack returns ``TransformedModel(copy, transform)``: the victim's weights are untouched, only
what reaches them changes. The wrapper keeps the victim's ``spec``, so shape checks such as
``LabelOracle``'s still apply. The attacks cost nothing (no epochs, no queries).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import kornia
import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, require_in_range, require_non_negative, require_positive
from ownmark.train import Engine


class TransformedModel(nn.Module):
    """``model(transform(x).clamp(0, 1))``: a model behind an input transform.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> wrapped = TransformedModel(ModelSpec("cnn2", 3, 4, 16).build(), HorizontalFlip())
        >>> wrapped(torch.rand(2, 3, 16, 16)).shape, wrapped.spec.input_shape
        (torch.Size([2, 4]), (3, 16, 16))
    """

    def __init__(self, model: nn.Module, transform: nn.Module) -> None:
        super().__init__()
        self.model, self.transform = model, transform
        if hasattr(model, "spec"):
            self.spec = model.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x).clamp(0, 1))


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise drawn from a generator seeded afresh on every call.

    The noise depends only on ``seed`` and the batch's shape, so repeating a query repeats the
    answer (averaging repeated queries cannot remove it), and image ``i`` of equally shaped batches
    gets the same noise.
    """

    def __init__(self, std: float, seed: int) -> None:
        super().__init__()
        self.std, self.seed = std, seed

    def extra_repr(self) -> str:
        return f"std={self.std}, seed={self.seed}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return x
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        return x + self.std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class GaussianBlur(nn.Module):
    """A ``kernel_size`` x ``kernel_size`` Gaussian blur of width ``sigma`` pixels (reflected borders)."""

    def __init__(self, kernel_size: int, sigma: float) -> None:
        super().__init__()
        self.kernel_size, self.sigma = kernel_size, sigma

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size, sigma = (self.kernel_size,) * 2, (float(self.sigma),) * 2
        return kornia.filters.gaussian_blur2d(x, size, sigma, border_type="reflect")


class HorizontalFlip(nn.Module):
    """Mirrors images left to right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kornia.geometry.transform.hflip(x)


class JpegCodec(nn.Module):
    """JPEG compression and decompression at ``quality`` (kornia's differentiable codec).

    The codec takes RGB; grey images are coded as three equal channels, averaged back.
    """

    def __init__(self, quality: float) -> None:
        super().__init__()
        self.quality = quality

    def extra_repr(self) -> str:
        return f"quality={self.quality}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        quality = torch.tensor([float(self.quality)], device=x.device, dtype=x.dtype)
        if x.shape[1] == 1:  # grey: three equal channels are coded as pure luma
            return kornia.enhance.jpeg_codec_differentiable(x.expand(-1, 3, -1, -1), quality).mean(1, keepdim=True)
        return kornia.enhance.jpeg_codec_differentiable(x, quality)


def require_odd_kernel(config: object) -> None:
    """Raise ConfigError unless ``config.kernel_size`` is an odd positive int (a filter with a centre)."""
    k = config.kernel_size
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ConfigError(f"{type(config).__name__}.kernel_size must be an odd positive int, got {k!r}")


@dataclass(frozen=True)
class NoiseConfig:
    """Standard deviation of the Gaussian noise, in pixel units of [0, 1] images."""

    std: float = 0.05

    def __post_init__(self) -> None:
        require_non_negative(self, "std")


@dataclass(frozen=True)
class BlurConfig:
    """Odd kernel size in pixels and the Gaussian's standard deviation in pixels."""

    kernel_size: int = 3
    sigma: float = 1.0

    def __post_init__(self) -> None:
        require_odd_kernel(self)
        require_positive(self, "sigma")


@dataclass(frozen=True)
class FlipConfig:
    """A horizontal flip has no settings."""


@dataclass(frozen=True)
class JpegConfig:
    """JPEG quality in [1, 100]; lower compresses harder."""

    quality: float = 50.0

    def __post_init__(self) -> None:
        require_in_range(self, "quality", 1, 100)


class InputTransform:
    """What the four transform attacks share: wrap a copy of the victim behind ``transform``.

    Reference:
        Riba, Mishkin, Ponsa, Rublee, Bradski, "Kornia: an Open Source Differentiable Computer
        Vision Library for PyTorch", WACV 2020, arXiv:1910.02190; Lukas, Jiang, Li, Kerschbaum,
        "SoK: How Robust is Image Classification Deep Neural Network Watermarking?", IEEE S&P 2022,
        arXiv:2108.04974 (input preprocessing as a removal attack).
    """

    access = "black-box"  # the thief only controls what reaches the model
    group = "preprocessing"
    families = ("classifier",)
    input_transform = True  # applied at verification time (`ownmark verify --transform`)
    presets: dict = {}

    def __init__(self, config: object | None = None) -> None:
        self.config = self.config_class() if config is None else config

    def transform(self, seed: int) -> nn.Module:
        raise NotImplementedError

    def __call__(
        self, model: nn.Module, data: ImageSet | None, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cost = Cost()
        with timed(cost):
            wrapped = TransformedModel(copy.deepcopy(model), self.transform(seed)).eval()
        return wrapped, cost


@ATTACKS.register("noise")
class Noise(InputTransform):
    """Add seeded Gaussian noise to every input before the model sees it.

    Reference:
        Lukas et al., IEEE S&P 2022, arXiv:2108.04974.
    Example:
        >>> from ownmark.models import ModelSpec
        >>> victim, x = ModelSpec("cnn2", 3, 4, 16).build().eval(), torch.rand(2, 3, 16, 16)
        >>> noisy, cost = Noise(NoiseConfig(std=0.1))(victim, None, seed=0)
        >>> torch.equal(noisy(x), noisy(x)), torch.equal(noisy(x), victim(x)), cost.epochs
        (True, False, 0.0)
    """

    config_class = NoiseConfig

    def transform(self, seed: int) -> nn.Module:
        return GaussianNoise(self.config.std, seed)


@ATTACKS.register("blur")
class Blur(InputTransform):
    """Blur every input with a Gaussian kernel before the model sees it.

    Reference:
        Riba et al., WACV 2020, arXiv:1910.02190; Lukas et al., IEEE S&P 2022, arXiv:2108.04974.
    Example:
        >>> from ownmark.models import ModelSpec
        >>> blurred, _ = Blur(BlurConfig(kernel_size=5, sigma=1.5))(ModelSpec("cnn2", 3, 4, 16).build(), None, seed=0)
        >>> blurred.transform
        GaussianBlur(kernel_size=5, sigma=1.5)
    """

    config_class = BlurConfig

    def transform(self, seed: int) -> nn.Module:
        return GaussianBlur(self.config.kernel_size, self.config.sigma)


@ATTACKS.register("flip")
class Flip(InputTransform):
    """Mirror every input left to right before the model sees it.

    Reference:
        Riba et al., WACV 2020, arXiv:1910.02190; Lukas et al., IEEE S&P 2022, arXiv:2108.04974.
    Example:
        >>> from ownmark.models import ModelSpec
        >>> victim, x = ModelSpec("cnn2", 3, 4, 16).build().eval(), torch.rand(2, 3, 16, 16)
        >>> flipped, _ = Flip()(victim, None, seed=0)
        >>> torch.equal(flipped(x), victim(x.flip(-1)))
        True
    """

    config_class = FlipConfig

    def transform(self, seed: int) -> nn.Module:
        return HorizontalFlip()


@ATTACKS.register("jpeg")
class Jpeg(InputTransform):
    """JPEG-compress every input before the model sees it.

    kornia's codec is differentiable: it rounds with a smooth approximation, so its output is close
    to, not bit-equal with, a libjpeg round trip at the same quality.

    Reference:
        Riba et al., WACV 2020, arXiv:1910.02190; Reich, Debnath, Patel, Chakradhar,
        "Differentiable JPEG: The Devil is in the Details", WACV 2024, arXiv:2309.06978;
        Lukas et al., IEEE S&P 2022, arXiv:2108.04974.
    Example:
        >>> from ownmark.models import ModelSpec
        >>> coded, _ = Jpeg(JpegConfig(quality=30))(ModelSpec("cnn2", 1, 10, 28).build(), None, seed=0)
        >>> coded(torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 10])
    """

    config_class = JpegConfig

    def transform(self, seed: int) -> nn.Module:
        return JpegCodec(self.config.quality)
