"""Structural removal of an injected watermark: drop the proprietary branch, keep the target.

Against PTYNet (Wang et al., ACM MM 2023, arXiv:2210.07809) a thief with the weights sees two
networks side by side and can simply serve the target alone. The mark lives only in the
proprietary branch, so this removes it at no cost to clean accuracy: the issue expects it to
succeed, and the report says so.

Reference:
    Wang, Ren, et al., "Free Fine-tuning: A Plug-and-Play Watermarking Scheme for Deep Neural
    Networks" (PTYNet), ACM MM 2023, arXiv:2210.07809 (the threats this module plays:
    fine-tuning the target alone, serving it without the proprietary branch).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.finetune import FineTune, train_only
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError
from ownmark.models.injected import InjectedModel, fit_loss
from ownmark.train import Engine, fit


def strip_proprietary(model: nn.Module) -> nn.Module:
    """A copy of the target inside an injected model, without the proprietary branch.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> target = ModelSpec("cnn2", 1, 10, 28).build()
        >>> injected = InjectedModel(target, ModelSpec("cnn2", 1, 2, 28).build(), [3], 1.5, 10)
        >>> stripped = strip_proprietary(injected)
        >>> stripped is target, type(stripped).__name__, stripped.spec == target.spec
        (False, 'Sequential', True)
    """
    if not isinstance(model, InjectedModel):
        raise ConfigError(
            f"strip removes the proprietary branch of an injected (PTYNet) model; a {type(model).__name__} "
            "has none: attack it with another attack"
        )
    return copy.deepcopy(model.target).eval()


@dataclass(frozen=True)
class StripConfig:
    """Structural removal has no settings."""


@ATTACKS.register("strip")
class Strip:
    """Structural removal: serve the target of an injected model without its proprietary branch.

    Raises ConfigError for models that have no proprietary branch; ``needs_injected`` says which
    models it takes (the bench runs it only on schemes that make injected models).

    Example:
        >>> from ownmark.models import ModelSpec
        >>> target, proprietary = ModelSpec("cnn2", 1, 10, 28).build(), ModelSpec("cnn2", 1, 2, 28).build()
        >>> stripped, cost = Strip()(InjectedModel(target, proprietary, [3], 1.5, 10), None, seed=0)
        >>> isinstance(stripped, InjectedModel), cost.details["dropped_parameters"] > 0
        (False, True)
    """

    access = "white-box"
    group = "adaptive"
    families = ("classifier",)
    group = "adaptive"
    needs_injected = True  # a target with an injected proprietary branch (PTYNet)
    config_class = StripConfig
    presets: dict = {}

    def __init__(self, config: StripConfig = StripConfig()) -> None:
        self.config = config

    def __call__(
        self, model: nn.Module, data: ImageSet | None, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cost = Cost()
        with timed(cost):
            stripped = strip_proprietary(model)
        cost.details["dropped_parameters"] = sum(p.numel() for p in model.proprietary.parameters())
        return stripped, cost


@ATTACKS.register("ft-target")
class FineTuneTarget(FineTune):
    """Fine-tune only the target inside an injected model, the proprietary branch left as it is.

    The thief who cannot tell the two parts apart fine-tunes end to end (``ftal``); one who can
    adapts the target alone. The mark lives in the proprietary branch, so this is expected to
    keep it (Wang et al., ACM MM 2023, arXiv:2210.07809, Sec. 4).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> import torch
        >>> from ownmark.attacks import FineTuneConfig
        >>> target, proprietary = ModelSpec("cnn2", 3, 4, 16).build(), ModelSpec("cnn2", 3, 2, 16).build()
        >>> injected = InjectedModel(target, proprietary, [1], 1.5, 4)
        >>> attacked, cost = FineTuneTarget(FineTuneConfig(epochs=1))(injected, toy_images(), seed=0)
        >>> kept = zip(attacked.proprietary.parameters(), injected.proprietary.parameters(), strict=True)
        >>> all(torch.equal(a, b) for a, b in kept)
        True
    """

    families = ("classifier",)
    needs_injected = True  # a target with an injected proprietary branch (PTYNet)

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        if not isinstance(model, InjectedModel):
            raise ConfigError(
                f"ft-target fine-tunes the target of an injected (PTYNet) model, not a {type(model).__name__}"
            )
        attacked = copy.deepcopy(model)
        cost = Cost()
        with timed(cost), train_only(attacked, attacked.target) as hook:
            fit(
                attacked,
                data,
                self.config.train_config(),
                seed=seed,
                engine=engine,
                step_hook=hook,
                loss=fit_loss(attacked),
            )
        cost.epochs = float(self.config.epochs)
        return attacked, cost
