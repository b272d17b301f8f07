"""Removal attacks on encoders: downstream fine-tuning and continued self-supervised training.

Pruning needs no encoder-specific code: the ``prune`` attack prunes any network's conv and linear
weights. The two here change the encoder by training: ``enc-finetune`` fine-tunes it end to end
with a fresh linear head on the attacker's labelled downstream data (what a user adapting a
bought encoder does; with ``augment`` every batch is a random crop / warp / jitter view first, the
fine-tuning with augmentation a thief uses against marks tied to exact pixels), ``enc-ssl``
continues contrastive pre-training on the attacker's unlabelled data (an attacker who wants to wash
a stolen encoder without labels). Both return a changed copy.

Reference:
    The removal attacks AWEncoder is evaluated against: Zhang, Wu, Lu, Sun, Applied Sciences 2023,
    arXiv:2208.03948 (Sec. 5, fine-tuning and pruning).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, require_choice, require_positive
from ownmark.train import Engine, TrainConfig, cpu_seeded, fit, key_seed
from ownmark.train.ssl import SSLConfig, augmenter, feature_dim, keyed_views, pretrain

HEAD_STREAM, AUGMENT_STREAM = 0x48454144, 0x41554746


def _check_encoder(model: nn.Module, data: ImageSet) -> None:
    from ownmark.families import FAMILIES

    FAMILIES.get("encoder").require(model, "this attack")
    if len(data) == 0:
        raise ConfigError("the attacker's data is empty")


@dataclass(frozen=True)
class EncoderFineTuneConfig:
    """End-to-end fine-tuning of encoder + fresh linear head on labelled downstream data."""

    epochs: int = 3
    lr: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 64
    augment: bool = False  # each batch through the SSL views' kornia recipe (crop scale 0.8), keyed by step

    def __post_init__(self) -> None:
        require_positive(self, "epochs", "lr", "batch_size")
        require_choice(self, "optimizer", ("sgd", "adam"))
        if not isinstance(self.augment, bool):
            raise ConfigError(f"enc-finetune augment must be true or false, got {self.augment!r}")


class _WithHead(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@ATTACKS.register("enc-finetune")
class EncoderFineTune:
    """Fine-tune the whole encoder with a fresh linear head on the attacker's labelled data.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> enc = ModelSpec("conv4", 3, 16, 16, family="encoder").build()
        >>> tuned, cost = EncoderFineTune(EncoderFineTuneConfig(epochs=1))(enc, toy_images(), seed=0)
        >>> tuned(torch.rand(2, 3, 16, 16)).shape, cost.epochs
        (torch.Size([2, 16]), 1.0)
    """

    access = "white-box"
    group = "modification"
    families = ("encoder",)
    config_class = EncoderFineTuneConfig
    presets: dict = {}

    def __init__(self, config: EncoderFineTuneConfig = EncoderFineTuneConfig()) -> None:
        self.config = config

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        _check_encoder(model, data)
        cfg, cost = self.config, Cost()
        encoder = copy.deepcopy(model)
        with timed(cost), cpu_seeded(key_seed(seed, HEAD_STREAM)):
            head = nn.Linear(feature_dim(encoder, data.shape), data.num_classes)
        with timed(cost):
            train = TrainConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.optimizer, weight_decay=0.0)
            hook = _augment_hook(data, seed) if cfg.augment else None
            fit(_WithHead(encoder, head), data, train, seed=seed, engine=engine, batch_hook=hook)
        cost.epochs = float(cfg.epochs)
        return encoder.eval(), cost


def _augment_hook(data: ImageSet, seed: int):
    """A batch hook that replaces each batch by an augmented view (random resized crop at scale >= 0.8
    and the recipe's flip / jitter / small warp), drawn from a generator keyed by ``(seed, step)``: the
    fine-tuning with augmentation an attacker uses to wash a mark tied to exact pixels."""
    augment = augmenter(data.shape[0], data.shape[1], crop_scale=0.8)

    def hook(x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return keyed_views(augment, x, key_seed(seed, step, AUGMENT_STREAM), 1)[0], y

    return hook


def finetuned_variants(
    name: str, encoder: nn.Module, data: ImageSet, lrs: tuple[float, ...] | list[float], *, seed: int
) -> dict[str, nn.Module]:
    """``encoder`` fine-tuned downstream on ``data`` (``enc-finetune``, Adam, 3 epochs) at each rate in
    ``lrs``, named ``{name}+finetuned-lr{lr:g}``: negative controls adapted as a suspect would be."""
    return {
        f"{name}+finetuned-lr{float(lr):g}": EncoderFineTune(EncoderFineTuneConfig(lr=float(lr)))(
            encoder, data, seed=seed
        )[0]
        for lr in lrs
    }


@dataclass(frozen=True)
class EncoderSSLConfig:
    """Continued contrastive training on the attacker's unlabelled data."""

    ssl: SSLConfig = field(default_factory=lambda: SSLConfig(epochs=3))

    def __post_init__(self) -> None:
        if isinstance(self.ssl, dict):
            object.__setattr__(self, "ssl", SSLConfig(**self.ssl))
        if not isinstance(self.ssl, SSLConfig):
            raise ConfigError(f"EncoderSSLConfig.ssl must be an SSLConfig, got {type(self.ssl).__name__}")


@ATTACKS.register("enc-ssl")
class EncoderSSL:
    """Continue self-supervised training of the encoder on the attacker's images (labels unused).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> enc = ModelSpec("conv4", 3, 16, 16, family="encoder").build()
        >>> tuned, cost = EncoderSSL(EncoderSSLConfig(SSLConfig(epochs=1, batch_size=32)))(enc, toy_images(), seed=0)
        >>> cost.epochs
        1.0
    """

    access = "white-box"
    group = "modification"
    families = ("encoder",)
    config_class = EncoderSSLConfig
    presets: dict = {}

    def __init__(self, config: EncoderSSLConfig = EncoderSSLConfig()) -> None:
        self.config = config

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        _check_encoder(model, data)
        cost, encoder = Cost(), copy.deepcopy(model)
        with timed(cost):
            pretrain(encoder, data, self.config.ssl, seed=seed, engine=engine)
        cost.epochs = float(self.config.ssl.epochs)
        return encoder.eval(), cost
