"""Fine-tuning removal attacks: FTAL, FTLL, RTLL and RTAL.

The four differ only in two switches, so they are one class and three one-line subclasses:
whether the output layer starts afresh (RT*) and whether everything else is frozen (*LL).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, require_choice, require_non_negative, require_positive
from ownmark.models.injected import fit_loss
from ownmark.train import Engine, TrainConfig, fit, key_seed
from ownmark.train.loop import StepHook

REINIT_STREAM = 0x5245494E  # keys the re-initialisation generator apart from fit()'s (seed, epoch) streams


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
            raise ConfigError(
                f"{type(self).__name__}.epochs and batch_size must be ints, got {self.epochs!r}, {self.batch_size!r}"
            )
        require_non_negative(self, "momentum", "weight_decay")
        require_choice(self, "optimizer", ("sgd", "adam"))

    def train_config(self) -> TrainConfig:
        """The training run this fine-tuning performs."""
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
            momentum=self.momentum, weight_decay=self.weight_decay,
        )  # fmt: skip


def last_linear(model: nn.Module) -> nn.Linear:
    """The output layer: the last ``nn.Linear`` in the model's module order."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise TypeError(f"{type(model).__name__} has no nn.Linear output layer, so it has no last layer to retrain")
    return layers[-1]


def reinitialise(layer: nn.Linear, generator: torch.Generator) -> None:
    """Draw new weights and bias as ``nn.Linear`` does by default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Values are drawn on the CPU and copied, so the same generator serves a layer on any device.
    """
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        for param in (layer.weight, layer.bias):
            if param is not None:
                param.copy_(torch.empty(param.shape).uniform_(-bound, bound, generator=generator))


@contextmanager
def train_only(model: nn.Module, layer: nn.Module) -> Iterator[StepHook]:
    """Freeze every parameter outside ``layer`` for the duration of the block.

    Yields a step hook for :func:`ownmark.train.fit` that puts every module outside ``layer`` back
    into eval mode before each step (fit switches the whole model to train mode), so batch-norm
    statistics and dropout of the frozen feature extractor do not change either. The original
    ``requires_grad`` flags are restored on exit.
    """
    inside = set(layer.modules())
    frozen = [m for m in model.modules() if m not in inside]
    trainable = {id(p) for p in layer.parameters()}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(id(param) in trainable)

    def keep_frozen_in_eval(_model: nn.Module, _step: int) -> None:
        for module in frozen:
            module.training = False  # per module: eval() would recurse into ``layer`` too

    try:
        yield keep_frozen_in_eval
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


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
    group = "modification"
    families = ("classifier",)
    config_class = FineTuneConfig
    presets: dict = {}
    reinit_last = False  # RT*: the output layer starts from a fresh seeded initialisation
    last_only = False  # *LL: only the output layer trains

    def __init__(self, config: FineTuneConfig = FineTuneConfig()) -> None:
        self.config = config

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        attacked = copy.deepcopy(model)
        cost = Cost()
        with timed(cost):
            if self.reinit_last:
                reinitialise(last_linear(attacked), torch.Generator().manual_seed(key_seed(seed, REINIT_STREAM)))
            with train_only(attacked, last_linear(attacked)) if self.last_only else nullcontext() as hook:
                fit(
                    attacked,
                    data,
                    self.config.train_config(),
                    seed=seed,
                    engine=engine,
                    step_hook=hook,
                    loss=fit_loss(attacked),
                )  # an injected (PTYNet) model answers scores, not logits
        cost.epochs = float(self.config.epochs)
        return attacked, cost


@ATTACKS.register("ftll")
class FineTuneLastLayer(FineTune):
    """FTLL: fine-tune only the output layer (the last ``nn.Linear``); everything else stays bit-identical.

    The frozen layers also stay in eval mode while training, so batch-norm statistics keep the
    victim's values.

    Reference:
        Adi et al., USENIX Security 2018, arXiv:1802.04633; Lukas, Jiang, Li, Kerschbaum, "SoK: How
        Robust is Image Classification Deep Neural Network Watermarking?", IEEE S&P 2022,
        arXiv:2108.04974.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> victim = ModelSpec("cnn2", 3, 4, 16).build()
        >>> attacked, _ = FineTuneLastLayer(FineTuneConfig(epochs=1))(victim, toy_images(), seed=0)
        >>> [torch.equal(a, b) for a, b in zip(victim.parameters(), attacked.parameters())]
        [True, True, True, True, True, True, False, False]
    """

    last_only = True


@ATTACKS.register("rtll")
class RetrainLastLayer(FineTune):
    """RTLL: re-initialise the output layer from ``seed``, then train only it.

    Reference:
        Adi et al., USENIX Security 2018, arXiv:1802.04633; Lukas et al., IEEE S&P 2022,
        arXiv:2108.04974.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> victim = ModelSpec("cnn2", 3, 4, 16).build()
        >>> attacked, cost = RetrainLastLayer(FineTuneConfig(epochs=1))(victim, toy_images(), seed=0)
        >>> torch.equal(attacked[0].weight, victim[0].weight), torch.equal(attacked[-1].weight, victim[-1].weight)
        (True, False)
    """

    reinit_last = True
    last_only = True


@ATTACKS.register("rtal")
class RetrainAll(FineTune):
    """RTAL: re-initialise the output layer from ``seed``, then train all layers.

    Reference:
        Adi et al., USENIX Security 2018, arXiv:1802.04633; Lukas et al., IEEE S&P 2022,
        arXiv:2108.04974.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> victim = ModelSpec("cnn2", 3, 4, 16).build()
        >>> attacked, cost = RetrainAll(FineTuneConfig(epochs=1))(victim, toy_images(), seed=0)
        >>> torch.equal(attacked[0].weight, victim[0].weight), cost.epochs
        (False, 1.0)
    """

    reinit_last = True
