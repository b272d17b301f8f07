"""Attacks on image-to-image models: surrogate training on the victim's outputs, output noise and JPEG.

The surrogate attack is the threat deep output watermarking is built for: an attacker queries the
victim with its own inputs (disjoint from the owner's) and trains a model of its own choosing on the
(input, output) pairs. Architectures: ``encdec``, ``resnet-i2i``, ``unet``; losses: ``l1``, ``l2``,
``l2+gan``, ``ssim+gan`` (SSIM is the offline stand-in for a VGG perceptual loss); optionally with
rotate / crop / resize augmentation. Output noise and JPEG perturb what the victim's API returns.

Reference:
    Zhang, Chen, Liao, Zhang, Feng, Hua, Yu, "Deep Model Intellectual Property Protection via
    Deep Watermarking", IEEE TPAMI 2021, arXiv:2103.04980 (surrogates trained on the victim's outputs,
    with these losses and augmentations).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.core import Cost
from ownmark.errors import (
    ConfigError,
    ShapeError,
    require_choice,
    require_in_range,
    require_non_negative,
    require_positive,
)
from ownmark.models.image2image import check_i2i_arch
from ownmark.models.store import ModelSpec
from ownmark.train.image2image import LOSSES, I2ITrainConfig, fit_i2i, predict, seeded
from ownmark.train.loop import key_seed


@dataclass(frozen=True)
class SurrogateConfig:
    """The attacker's surrogate: architecture, loss, epochs, augmentation."""

    arch: str = "unet"
    loss: str = "l2"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    gan_weight: float = 0.01
    augment: bool = False

    def __post_init__(self) -> None:
        check_i2i_arch(self.arch)
        require_choice(self, "loss", LOSSES)
        require_positive(self, "epochs", "batch_size", "lr")
        require_non_negative(self, "gan_weight")

    def train_config(self) -> I2ITrainConfig:
        return I2ITrainConfig(self.epochs, self.batch_size, self.lr, self.loss, self.gan_weight, self.augment)


def _inputs(data: Any) -> torch.Tensor:
    x = data.x if hasattr(data, "x") else data
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ShapeError(f"a surrogate attack needs the attacker's input images (N, C, H, W), got {type(x).__name__}")
    return x


@ATTACKS.register("surrogate")
class Surrogate:
    """Train a surrogate on (attacker input, victim output) pairs (Zhang et al., TPAMI 2021, Sec. 3).

    Example:
        >>> from ownmark.models import ModelSpec
        >>> victim = ModelSpec("conv3", 3, 3, 16, family="image2image").build()
        >>> stolen, cost = Surrogate(SurrogateConfig(arch="conv3", epochs=1))(victim, torch.rand(32, 3, 16, 16), seed=0)
        >>> stolen(torch.rand(2, 3, 16, 16)).shape, cost.queries
        (torch.Size([2, 3, 16, 16]), 32)
    """

    access = "black-box"
    group = "extraction"
    families = ("image2image",)
    config_class = SurrogateConfig
    presets: dict = {}

    def __init__(self, config: SurrogateConfig = SurrogateConfig()) -> None:
        self.config = config

    def __call__(self, model: Any, data: Any, *, seed: int, engine: Any = None) -> tuple[nn.Module, Cost]:
        """Train the surrogate on the victim's answers (on ``engine``'s device; the CPU by default)."""
        from ownmark.train import Engine

        x = _inputs(data)
        cost = Cost()
        with timed(cost):
            y = predict(model, x)  # the victim answers as an API: only its outputs are used
            if y.shape[-2:] != x.shape[-2:]:
                raise ShapeError(f"the victim maps {tuple(x.shape[1:])} to {tuple(y.shape[1:])}; not an i2i model")
            spec = ModelSpec(self.config.arch, x.shape[1], y.shape[1], x.shape[-1], family="image2image")
            surrogate = seeded(spec.build, seed, 21)
            surrogate.spec = spec
            fit_i2i(surrogate, x, y, self.config.train_config(), seed=key_seed(seed, 22), engine=engine or Engine())
        cost.queries, cost.epochs = len(x), float(self.config.epochs)
        cost.details = {"arch": self.config.arch, "loss": self.config.loss, "augment": self.config.augment}
        return surrogate.eval(), cost


@dataclass(frozen=True)
class OutputNoiseConfig:
    """Gaussian noise of std ``std`` added to every output (clamped to [0, 1])."""

    std: float = 0.02

    def __post_init__(self) -> None:
        require_non_negative(self, "std")


@dataclass(frozen=True)
class OutputJpegConfig:
    """JPEG compression of every output at ``quality`` (1-95)."""

    quality: int = 75

    def __post_init__(self) -> None:
        require_in_range(self, "quality", 1, 95)
        if not isinstance(self.quality, int):
            raise ConfigError(f"OutputJpegConfig.quality must be an int, got {self.quality!r}")


@dataclass(frozen=True)
class OutputSqueezeConfig:
    """Every output rounded to ``bits`` bits per channel (2**bits levels), 1-8."""

    bits: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8:
            raise ConfigError(f"OutputSqueezeConfig.bits must be an int in 1..8, got {self.bits!r}")


class PerturbedOutputs(nn.Module):
    """A victim whose outputs pass through ``perturb`` (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, model: nn.Module, perturb: Any) -> None:
        super().__init__()
        self.model, self.perturb = model, perturb
        if hasattr(model, "spec"):
            self.spec = model.spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.perturb(self.model(x).clamp(0, 1))


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress RGB or grey images (N, C, H, W) in [0, 1] with Pillow and decode them again.

    Example:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> 0 < (jpeg(x, 75) - x).abs().mean().item() < 0.3
        True
    """
    import numpy as np
    from PIL import Image

    out = []
    for img in images.detach().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy():
        buf = io.BytesIO()
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=quality)
        decoded = torch.from_numpy(np.array(Image.open(io.BytesIO(buf.getvalue())))).float() / 255
        out.append(decoded.reshape(img.shape).permute(2, 0, 1))
    return torch.stack(out)


@ATTACKS.register("output-noise")
class OutputNoise:
    """Gaussian noise on the victim's outputs (an API-side perturbation; the victim is unchanged)."""

    access = "black-box"
    group = "preprocessing"
    families = ("image2image",)
    config_class = OutputNoiseConfig
    presets: dict = {}

    def __init__(self, config: OutputNoiseConfig = OutputNoiseConfig()) -> None:
        self.config = config

    def __call__(self, model: nn.Module, data: Any, *, seed: int, **_engine: Any) -> tuple[nn.Module, Cost]:
        std = self.config.std

        def perturb(y: torch.Tensor) -> torch.Tensor:
            g = torch.Generator().manual_seed(key_seed(seed, len(y), 23))
            return (y + std * torch.randn(y.shape, generator=g)).clamp(0, 1)

        return PerturbedOutputs(model, perturb).eval(), Cost(details={"std": std})


@ATTACKS.register("output-jpeg")
class OutputJpeg:
    """JPEG compression of the victim's outputs (an API-side perturbation; the victim is unchanged)."""

    access = "black-box"
    group = "preprocessing"
    families = ("image2image",)
    config_class = OutputJpegConfig
    presets: dict = {}

    def __init__(self, config: OutputJpegConfig = OutputJpegConfig()) -> None:
        self.config = config

    def __call__(self, model: nn.Module, data: Any, *, seed: int, **_engine: Any) -> tuple[nn.Module, Cost]:
        quality = self.config.quality
        return PerturbedOutputs(model, lambda y: jpeg(y, quality)).eval(), Cost(details={"quality": quality})


@ATTACKS.register("output-squeeze")
class OutputSqueeze:
    """Bit-depth reduction of the victim's outputs (the output-side analogue of the SoK's input quantization;
    an API-side perturbation, the victim is unchanged): a residual mark fainter than one level is rounded away."""

    access = "black-box"
    group = "preprocessing"
    families = ("image2image",)
    config_class = OutputSqueezeConfig
    presets: dict = {}

    def __init__(self, config: OutputSqueezeConfig = OutputSqueezeConfig()) -> None:
        self.config = config

    def __call__(self, model: nn.Module, data: Any, *, seed: int, **_engine: Any) -> tuple[nn.Module, Cost]:
        from ownmark.attacks.preprocess import BitDepth

        return PerturbedOutputs(model, BitDepth(self.config.bits)).eval(), Cost(details={"bits": self.config.bits})
