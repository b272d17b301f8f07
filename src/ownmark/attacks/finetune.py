"""Fine-tuning removal attacks."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, require_choice, require_non_negative, require_positive
from ownmark.train import Engine, TrainConfig, fit


@dataclass(frozen=True)
class FineTuneConfig:
    """Fine-tuning on the attacker's data at a realistic learning rate (1e-3 to 1e-2)."""

    epochs: int = 5
    lr: float = 0.01
    optimizer: str = "sgd"
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        require_positive(self, "epochs", "lr", "batch_size")
        if not isinstance(self.epochs, int) or not isinstance(self.batch_size, int):
            raise ConfigError(f"FineTuneConfig.epochs and batch_size must be ints, got {self.epochs!r}, {self.batch_size!r}")
        require_non_negative(self, "momentum", "weight_decay")
        require_choice(self, "optimizer", ("sgd", "adam"))


@ATTACKS.register("ftal")
class FineTune:
    """FTAL: fine-tune all layers of a copy of the victim on the attacker's data.

    Reference:
        Adi, Baum, Cisse, Pinkas, Keshet, "Turning Your Weakness Into a Strength: Watermarking
        Deep Neural Networks by Backdooring", USENIX Security 2018, arXiv:1802.04633.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> victim = ModelSpec("cnn2", 3, 4, 16).build()
        >>> attacked, cost = FineTune(FineTuneConfig(epochs=1))(victim, toy_images(), seed=0)
        >>> cost.epochs
        1.0
    """

    access = "white-box"
    config_class = FineTuneConfig
    presets: dict = {}

    def __init__(self, config: FineTuneConfig = FineTuneConfig()) -> None:
        self.config = config

    def __call__(self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()) -> tuple[nn.Module, Cost]:
        cfg = self.config
        attacked = copy.deepcopy(model)
        train = TrainConfig(
            epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
            momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        )  # fmt: skip
        cost = Cost()
        with timed(cost):
            fit(attacked, data, train, seed=seed, engine=engine)
        cost.epochs = float(cfg.epochs)
        return attacked, cost
