"""Self-supervised pre-training of encoders: SimCLR by default, MoCo v2 and BYOL as options.

Losses and heads come from lightly, augmentations from kornia, and the loop is the shared
Fabric loop of :mod:`ownmark.train.loop` (resumable, same engine on CPU or GPUs). The two views
of every batch are drawn from a generator keyed by ``(seed, step)``, so a resumed run sees the
views an uninterrupted one would.

References:
    Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations" (SimCLR), ICML 2020, arXiv:2002.05709; Chen, Fan, Girshick, He, "Improved
    Baselines with Momentum Contrastive Learning" (MoCo v2), arXiv:2003.04297; Grill et al.,
    "Bootstrap Your Own Latent" (BYOL), NeurIPS 2020, arXiv:2006.07733.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ownmark.data import ImageSet
from ownmark.errors import ConfigError, require_choice, require_in_range, require_positive
from ownmark.train.loop import Engine, TrainConfig, TrainResult, cpu_seeded, fit, key_seed

METHODS = ("simclr", "moco", "byol")
VIEW_STREAM, HEAD_STREAM = 0x56494557, 0x48454144


@dataclass(frozen=True)
class SSLConfig:
    """A self-supervised pre-training run.

    Args:
        method: ``simclr`` (NT-Xent, temperature 0.5 as in METHODS.md), ``moco`` (MoCo v2: momentum
            encoder and a memory bank of ``memory_bank`` keys) or ``byol`` (momentum target,
            predictor, negative cosine similarity).
        momentum: EMA factor of the momentum encoder (MoCo, BYOL).
        crop_scale: smallest area share of the random resized crop.
        flip: horizontal flips; None flips colour images only (digits are not mirror-symmetric).
    """

    method: str = "simclr"
    epochs: int = 10  # conv4 on mnist5k's owner part: ~15 s here, linear probe 93% (pixels 86.5%)
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-6
    temperature: float = 0.5
    proj_dim: int = 64
    hidden_dim: int = 256
    momentum: float = 0.99
    memory_bank: int = 1024
    crop_scale: float = 0.5
    flip: bool | None = None

    def __post_init__(self) -> None:
        require_choice(self, "method", METHODS)
        require_positive(self, "epochs", "batch_size", "lr", "temperature", "proj_dim", "hidden_dim", "memory_bank")
        require_in_range(self, "momentum", 0.0, 1.0)
        require_in_range(self, "crop_scale", 0.05, 1.0)

    def train_config(self) -> TrainConfig:
        return TrainConfig(self.epochs, self.batch_size, self.lr, self.optimizer, weight_decay=self.weight_decay)


def augmenter(channels: int, size: int, *, crop_scale: float = 0.5, flip: bool | None = None) -> nn.Module:
    """SimCLR-style views: random resized crop, (flip), colour jitter and grayscale for colour
    images, brightness/contrast jitter and a small affine warp for grey digits."""
    import kornia.augmentation as K

    flip = channels == 3 if flip is None else flip
    steps: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=(crop_scale, 1.0))]
    if flip:
        steps.append(K.RandomHorizontalFlip())
    if channels == 3:
        steps += [K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)]
    else:
        steps += [K.RandomAffine(degrees=10.0, translate=(0.1, 0.1)), K.ColorJitter(0.4, 0.4, p=0.8)]
    return nn.Sequential(*steps)


def keyed_views(augment: nn.Module, x: torch.Tensor, key: int, count: int) -> tuple[torch.Tensor, ...]:
    """``count`` augmented views of ``x`` in [0, 1], drawn one after another from a CPU generator seeded
    with ``key`` (the caller's ``key_seed(...)``); the global generator is left as it was."""
    with cpu_seeded(key), torch.no_grad():
        return tuple(augment(x).clamp(0, 1) for _ in range(count))


def two_views(augment: nn.Module, x: torch.Tensor, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views of ``x`` drawn from a generator keyed by ``(seed, step)``."""
    return keyed_views(augment, x, key_seed(seed, step, VIEW_STREAM), 2)


class SSLModel(nn.Module):
    """An encoder with the heads (and momentum copies) of one self-supervised method.

    ``forward(v0, v1)`` returns the method's loss on two views of a batch (symmetrised for BYOL
    and MoCo), so the module can be trained by the shared loop, under DDP too.
    """

    def __init__(self, encoder: nn.Module, dim: int, config: SSLConfig) -> None:
        from lightly import loss as L
        from lightly.models import modules as M

        super().__init__()
        self.encoder, self.method = encoder, config.method
        if config.method == "simclr":
            self.head = M.SimCLRProjectionHead(dim, config.hidden_dim, config.proj_dim)
            self.criterion: nn.Module = L.NTXentLoss(temperature=config.temperature)
        elif config.method == "moco":
            self.head = M.MoCoProjectionHead(dim, config.hidden_dim, config.proj_dim)
            self.criterion = L.NTXentLoss(
                temperature=config.temperature, memory_bank_size=(config.memory_bank, config.proj_dim)
            )
        else:
            self.head = M.BYOLProjectionHead(dim, config.hidden_dim, config.proj_dim)
            self.predictor = M.BYOLPredictionHead(config.proj_dim, config.hidden_dim, config.proj_dim)
            self.criterion = L.NegativeCosineSimilarity()
        if config.method in ("moco", "byol"):
            self.encoder_m, self.head_m = copy.deepcopy(encoder), copy.deepcopy(self.head)
            for p in [*self.encoder_m.parameters(), *self.head_m.parameters()]:
                p.requires_grad_(False)
        self.momentum = config.momentum

    def momentum_step(self) -> None:
        """Move the momentum encoder and head towards the online ones (MoCo, BYOL)."""
        if self.method == "simclr":
            return
        from lightly.models.utils import update_momentum

        update_momentum(self.encoder, self.encoder_m, self.momentum)
        update_momentum(self.head, self.head_m, self.momentum)

    def _target(self, v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.head_m(self.encoder_m(v)).detach()

    def forward(self, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
        if self.method == "simclr":
            return self.criterion(self.head(self.encoder(v0)), self.head(self.encoder(v1)))
        if self.method == "moco":
            return self.criterion(self.head(self.encoder(v0)), self._target(v1))
        p0, p1 = self.predictor(self.head(self.encoder(v0))), self.predictor(self.head(self.encoder(v1)))
        return 0.5 * (self.criterion(p0, self._target(v1)) + self.criterion(p1, self._target(v0)))


def feature_dim(encoder: nn.Module, shape: tuple[int, ...]) -> int:
    """Output size of ``encoder`` on images of ``shape`` (C, H, W)."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        out = encoder(torch.zeros(1, *shape))
    encoder.train(was_training)
    if out.ndim != 2:
        raise ConfigError(f"an encoder must return (N, D) features, got {tuple(out.shape)}")
    return int(out.shape[1])


def ssl_model(encoder: nn.Module, shape: tuple[int, ...], config: SSLConfig, seed: int) -> SSLModel:
    """``encoder`` with freshly initialised heads of ``config.method`` (seeded)."""
    dim = feature_dim(encoder, shape)
    with cpu_seeded(key_seed(seed, HEAD_STREAM)):
        return SSLModel(encoder, dim, config)


def pretrain(
    encoder: nn.Module,
    data: ImageSet,
    config: SSLConfig = SSLConfig(),
    *,
    seed: int,
    engine: Engine = Engine(),
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Pre-train ``encoder`` in place on unlabelled ``data`` (labels are ignored).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> enc = ModelSpec("conv4", 3, 16, 16, family="encoder").build()
        >>> pretrain(enc, toy_images(), SSLConfig(epochs=1, batch_size=32), seed=0).epochs_run
        1
    """
    if len(data) < 2:
        raise ConfigError(f"self-supervised pre-training needs at least 2 images, got {len(data)}")
    model = ssl_model(encoder, data.shape, config, seed)
    augment = augmenter(data.shape[0], data.shape[1], crop_scale=config.crop_scale, flip=config.flip)

    def loss(forward: nn.Module, x: torch.Tensor, _y: torch.Tensor, step: int) -> torch.Tensor:
        return forward(*two_views(augment, x, seed, step))

    result = fit(
        model, data, config.train_config(), seed=seed, engine=engine, checkpoint=checkpoint, resume=resume,
        step_hook=lambda m, _step: m.momentum_step(), loss=loss,
    )  # fmt: skip
    encoder.eval()
    return result
