"""Input reconstruction: the thief serves its copy behind an autoencoder trained on its own images.

The attacker trains a small convolutional autoencoder on its unlabelled images (mean squared
reconstruction error) and passes every query through it before the victim's copy sees it. An
autoencoder reproduces what it was trained on, the data manifold, and little else, so a trigger's
off-manifold pattern is washed out of the input while ordinary images pass nearly unchanged: the
input-preprocessing group of the SoK's removal attacks. The copy's weights are untouched; the cost
is the autoencoder's training (epochs, seconds), no queries. Unlike the data-free transforms of
:mod:`ownmark.attacks.transforms`, it needs the attacker's data, so it is an ordinary attack, not a
verification-time ``--transform``.

Written here: the autoencoder and its loss (a few lines of torch, trained by ownmark's Fabric loop);
no maintained library ships a reconstruction defence for arbitrary input shapes (IBM ART's
preprocessors include none of this kind for PyTorch).

Reference:
    Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
    Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (input reconstruction as a removal attack);
    Meng, Chen, "MagNet: a Two-Pronged Defense against Adversarial Examples", CCS 2017,
    arXiv:1705.09064 (an autoencoder "reformer" in front of a classifier).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.transforms import TransformedModel
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, ShapeError, require_positive
from ownmark.train import Engine, TrainConfig, cpu_seeded, fit, key_seed

AE_STREAM = 0x52454341


@dataclass(frozen=True)
class ReconstructConfig:
    """The autoencoder's bottleneck (a vector of ``bottleneck`` numbers per image), its width (channels
    of its two convolutions) and its training (Adam, no weight decay)."""

    bottleneck: int = 32
    width: int = 16
    epochs: int = 10
    lr: float = 2e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("bottleneck", "width", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ReconstructConfig.{name} must be a positive int, got {value!r}")
        require_positive(self, "lr")


class AutoEncoder(nn.Module):
    """Two stride-2 convolutions, a linear bottleneck of ``bottleneck`` numbers, and the mirror image
    back to the input shape (C, H, W); outputs in [0, 1] (a sigmoid).

    Example:
        >>> AutoEncoder((1, 28, 28), bottleneck=8)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, shape: tuple[int, int, int], bottleneck: int = 32, width: int = 16) -> None:
        super().__init__()
        c, h, w = shape
        self.shape, self.bottleneck = tuple(shape), bottleneck
        self.inner = (2 * width, math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2))  # two stride-2 convs
        flat = self.inner[0] * self.inner[1] * self.inner[2]
        self.encoder = nn.Sequential(
            nn.Conv2d(c, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(flat, bottleneck),
        )  # fmt: skip
        self.expand = nn.Linear(bottleneck, flat)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"shape={self.shape}, bottleneck={self.bottleneck}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.expand(self.encoder(x)).view(len(x), *self.inner)
        out = self.decoder(z)  # (C, 4 * ceil(ceil(H / 2) / 2), ...): crop to the input's size
        return torch.sigmoid(out[..., : self.shape[1], : self.shape[2]])


def reconstruction_loss(forward, x: torch.Tensor, _y: torch.Tensor, _step: int) -> torch.Tensor:
    """Mean squared error between the images and their reconstructions (labels unused)."""
    return F.mse_loss(forward(x), x)


@ATTACKS.register("input-reconstruct")
class InputReconstruct:
    """Pass every query through an autoencoder trained on the attacker's unlabelled images.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> wrapped, cost = InputReconstruct(ReconstructConfig(epochs=1))(ModelSpec("cnn2", 3, 4, 16).build(),
        ...                                                                toy_images(), seed=0)
        >>> wrapped(torch.rand(2, 3, 16, 16)).shape, cost.epochs, cost.queries
        (torch.Size([2, 4]), 1.0, 0)
    """

    access = "black-box"  # the thief only controls what reaches the model
    query_time = True  # the result is the victim behind a trained autoencoder, not one set of weights
    group = "preprocessing"
    families = ("classifier",)
    config_class = ReconstructConfig
    presets: dict = {}

    def __init__(self, config: ReconstructConfig = ReconstructConfig()) -> None:
        self.config = config

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cfg = self.config
        if not isinstance(data, ImageSet) or len(data) == 0:
            raise ConfigError(
                "input-reconstruct trains its autoencoder on the attacker's images; pass a non-empty ImageSet"
            )
        spec = getattr(model, "spec", None)
        if spec is not None and tuple(spec.input_shape) != tuple(data.shape):
            raise ShapeError(f"attacker images of shape {data.shape} but the victim takes {spec.input_shape}")
        cost = Cost()
        with timed(cost):
            with cpu_seeded(key_seed(seed, AE_STREAM)):  # a seeded init that leaves the global generator alone
                autoencoder = AutoEncoder(data.shape, cfg.bottleneck, cfg.width)
            train = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer="adam",
                                weight_decay=0.0)  # fmt: skip
            result = fit(autoencoder, data, train, seed=key_seed(seed, AE_STREAM), engine=engine,
                         loss=reconstruction_loss)  # fmt: skip
            for p in autoencoder.parameters():
                p.requires_grad_(False)
            wrapped = TransformedModel(copy.deepcopy(model), autoencoder.eval()).eval()
        cost.epochs = float(cfg.epochs)
        cost.details.update(bottleneck=cfg.bottleneck, reconstruction_mse=result.losses[-1])
        return wrapped, cost
