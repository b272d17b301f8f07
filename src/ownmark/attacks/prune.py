"""Pruning removal attacks."""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.chain import Chain
from ownmark.attacks.finetune import FineTune, FineTuneConfig
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import require_in_range
from ownmark.train import Engine


@dataclass(frozen=True)
class PruneConfig:
    """Share of prunable weights (conv and linear weights, all layers together) set to zero."""

    amount: float = 0.5

    def __post_init__(self) -> None:
        require_in_range(self, "amount", 0.0, 1.0, high_open=True)


def prunable_weights(model: nn.Module) -> list[torch.Tensor]:
    """Weights of every conv and linear layer (biases and normalisation are kept)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def global_l1_prune(model: nn.Module, amount: float) -> int:
    """Zero the ``amount`` share of prunable weights with the smallest magnitude, ranked across
    all layers together; returns how many weights were zeroed. Changes ``model`` in place."""
    weights = prunable_weights(model)
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    count = int(amount * magnitudes.numel())
    if count == 0:
        return 0
    # rank by magnitude, ties broken by position, so exactly ``count`` weights are zeroed
    drop = torch.zeros(magnitudes.numel(), dtype=torch.bool)
    drop[torch.argsort(magnitudes, stable=True)[:count]] = True
    with torch.no_grad():
        start = 0
        for w in weights:
            size = w.numel()
            w.view(-1)[drop[start : start + size]] = 0.0
            start += size
    return count


class WeightEdit:
    """What the data-free weight edits (pruning, quantization) share: a copy of the victim is edited
    in place by :meth:`edit`, which returns the details to report; no epochs, no queries."""

    access = "white-box"
    group = "modification"
    families = ("classifier", "encoder", "image2image")  # weights of any model
    presets: dict = {}

    def __init__(self, config: object | None = None) -> None:
        self.config = self.config_class() if config is None else config

    def edit(self, model: nn.Module) -> dict:
        raise NotImplementedError

    def __call__(
        self, model: nn.Module, data: ImageSet | None, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        attacked = copy.deepcopy(model)
        cost = Cost()
        with timed(cost):
            cost.details.update(self.edit(attacked))
        return attacked.eval(), cost


@ATTACKS.register("prune")
class Prune(WeightEdit):
    """Global L1 unstructured pruning of a copy of the victim (no data needed).

    Reference:
        Han, Pool, Tran, Dally, "Learning both Weights and Connections for Efficient Neural
        Networks", NeurIPS 2015, arXiv:1506.02626; used as a removal attack by Uchida et al. 2017
        and Lukas et al., "SoK: How Robust is Image Classification Deep Neural Network
        Watermarking?", IEEE S&P 2022, arXiv:2108.04974.
    Example:
        >>> from ownmark.models import ModelSpec
        >>> pruned, cost = Prune(PruneConfig(amount=0.5))(ModelSpec("cnn2", 1, 10, 28).build(), None, seed=0)
        >>> cost.details["zeroed"] > 0
        True
    """

    config_class = PruneConfig

    def edit(self, model: nn.Module) -> dict:
        return {"zeroed": global_l1_prune(model, self.config.amount), "amount": self.config.amount}


@dataclass(frozen=True)
class FinePruneConfig(FineTuneConfig):
    """Pruning ``amount`` (as :class:`PruneConfig`), then fine-tuning (as :class:`FineTuneConfig`)."""

    amount: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        require_in_range(self, "amount", 0.0, 1.0, high_open=True)


@ATTACKS.register("fineprune")
class FinePrune:
    """Fine-pruning: global L1 pruning of a copy of the victim, then fine-tuning of all layers.

    Pruning removes weights the watermark may rely on; fine-tuning on the attacker's data wins
    back the accuracy pruning cost. This is ``Chain([Prune, FineTune])``. Liu et al. prune the
    channels of the last conv layer that stay dormant on clean data; like the SoK's suite, this
    unit prunes weights by magnitude across all layers instead. Pruned weights are free to grow
    back while fine-tuning (no mask is kept).

    Reference:
        Liu, Dolan-Gavitt, Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep
        Neural Networks", RAID 2018, arXiv:1805.12185; Lukas et al., IEEE S&P 2022, arXiv:2108.04974.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> attacked, cost = FinePrune(FinePruneConfig(amount=0.5, epochs=1))(
        ...     ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> cost.epochs, cost.details["zeroed"] > 0
        (1.0, True)
    """

    access = "white-box"
    group = "modification"
    families = ("classifier",)
    config_class = FinePruneConfig
    presets: dict = {}

    def __init__(self, config: FinePruneConfig = FinePruneConfig()) -> None:
        self.config = config

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        finetune = {f.name: getattr(self.config, f.name) for f in fields(FineTuneConfig)}
        chain = Chain([Prune(PruneConfig(amount=self.config.amount)), FineTune(FineTuneConfig(**finetune))])
        return chain(model, data, seed=seed, engine=engine)
