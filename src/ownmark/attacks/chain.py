"""Attacks run one after another, as one attack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError
from ownmark.train import Engine, key_seed


class Chain:
    """An attack made of attacks: each one attacks the previous one's output, and the costs add up.

    Stage ``i`` draws its randomness from ``key_seed(seed, i)``, so two stages of the same kind do
    not repeat each other's batch order. Every stage works on its own copy, so the victim stays
    untouched. The chain needs white-box access as soon as one stage does.

    Reference:
        Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
        Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (attacks combined into pipelines).
    Example:
        >>> from ownmark.attacks import FineTune, FineTuneConfig, Prune, PruneConfig
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> chain = Chain([Prune(PruneConfig(amount=0.5)), FineTune(FineTuneConfig(epochs=1))])
        >>> attacked, cost = chain(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> cost.epochs, cost.details["amount"]
        (1.0, 0.5)
    """

    def __init__(self, attacks: Sequence[Any]) -> None:
        if isinstance(attacks, (str, bytes)) or not isinstance(attacks, Sequence) or not attacks:
            raise ConfigError(f"Chain needs a non-empty list of attacks, got {attacks!r}")
        for attack in attacks:
            if not callable(attack):
                raise TypeError(f"Chain stages must be attacks (callables), got {type(attack).__name__}")
        self.attacks = list(attacks)
        accesses = {getattr(attack, "access", "white-box") for attack in self.attacks}
        self.access = "white-box" if "white-box" in accesses else "black-box"
        self.group = "combined"

    def __repr__(self) -> str:
        return f"Chain([{', '.join(type(a).__name__ for a in self.attacks)}])"

    def __call__(
        self, model: nn.Module, data: ImageSet | None, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        total = Cost()
        for i, attack in enumerate(self.attacks):
            model, cost = attack(model, data, seed=key_seed(seed, i), engine=engine)
            total = total + cost  # details: a later stage's entry wins on a shared name
        return model, total
