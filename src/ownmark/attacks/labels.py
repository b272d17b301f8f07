"""Fine-tuning with altered labels: label smoothing and label noise (the SoK's model-modification group).

Both fine-tune all layers of a copy of the victim on the attacker's data, as FTAL does, but change
what the labels ask for: label smoothing trains towards ``(1 - s)`` on the true class and ``s``
spread over all classes, which flattens the confident answers a trigger set relies on; label noise
replaces a seeded share of the attacker's labels with random classes, which loosens memorised
input-label pairs. Written here: both are a loss or a relabelling around ownmark's own training
loop (torch's ``cross_entropy(label_smoothing=...)`` is used for ordinary classifiers).

Reference:
    Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
    Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (label smoothing and label noise as removal
    attacks); Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016,
    arXiv:1512.00567 (label smoothing).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.finetune import FineTuneConfig
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import require_in_range
from ownmark.models.injected import InjectedModel, fit_loss
from ownmark.train import Engine, fit, key_seed

LABEL_NOISE_STREAM = 0x4C4E4F49


@dataclass(frozen=True)
class LabelSmoothConfig(FineTuneConfig):
    """Fine-tuning (as :class:`FineTuneConfig`) with label smoothing ``smoothing`` in [0, 1)."""

    smoothing: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require_in_range(self, "smoothing", 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class LabelNoiseConfig(FineTuneConfig):
    """Fine-tuning (as :class:`FineTuneConfig`) with a share ``noise`` of labels redrawn at random."""

    noise: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require_in_range(self, "noise", 0.0, 1.0)


def log_probs(model: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of a classifier's output: log-softmax of logits, or for an injected
    (PTYNet) model, of its scores normalised to sum to one."""
    if isinstance(model, InjectedModel):
        scores = out.clamp_min(1e-12)
        return scores.log() - scores.sum(1, keepdim=True).log()
    return F.log_softmax(out, dim=1)


def noisy_labels(data: ImageSet, share: float, seed: int) -> ImageSet:
    """``data`` with ``round(share * N)`` seeded images relabelled uniformly among the other classes.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> d = toy_images(); n = noisy_labels(d, 0.25, seed=0)
        >>> int((n.y != d.y).sum()), torch.equal(n.x, d.x)
        (16, True)
    """
    g = torch.Generator().manual_seed(key_seed(seed, LABEL_NOISE_STREAM))
    count = round(share * len(data))
    idx = torch.randperm(len(data), generator=g)[:count]
    shift = torch.randint(1, data.num_classes, (count,), generator=g)  # never the true class
    y = data.y.clone()
    y[idx] = (y[idx] + shift) % data.num_classes
    return data.relabel(y, data.num_classes)


class _LabelFineTune:
    """Fine-tuning of all layers of a copy of the victim; subclasses choose the data and the loss."""

    access = "white-box"
    group = "modification"
    families = ("classifier",)
    presets: dict = {}

    def __init__(self, config: object | None = None) -> None:
        self.config = self.config_class() if config is None else config

    def prepare(self, attacked: nn.Module, data: ImageSet, seed: int) -> tuple[ImageSet, Any, dict]:
        """(training data, loss for :func:`ownmark.train.fit`, details for the cost)."""
        raise NotImplementedError

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        attacked, cost = copy.deepcopy(model), Cost()
        train, loss, details = self.prepare(attacked, data, seed)
        with timed(cost):
            fit(attacked, train, self.config.train_config(), seed=seed, engine=engine, loss=loss)
        cost.epochs = float(self.config.epochs)
        cost.details.update(details)
        return attacked, cost


@ATTACKS.register("label-smooth")
class LabelSmooth(_LabelFineTune):
    """Fine-tune all layers of a copy of the victim with label smoothing.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> attacked, cost = LabelSmooth(LabelSmoothConfig(epochs=1))(ModelSpec("cnn2", 3, 4, 16).build(),
        ...                                                           toy_images(), seed=0)
        >>> cost.epochs, cost.details["smoothing"]
        (1.0, 0.2)
    """

    config_class = LabelSmoothConfig

    def prepare(self, attacked: nn.Module, data: ImageSet, seed: int) -> tuple[ImageSet, Any, dict]:
        s = self.config.smoothing

        def loss(forward, x: torch.Tensor, y: torch.Tensor, _step: int) -> torch.Tensor:
            logp = log_probs(attacked, forward(x))
            return (1 - s) * F.nll_loss(logp, y) - s * logp.mean(1).mean()

        return data, loss, {"smoothing": s}


@ATTACKS.register("label-noise")
class LabelNoise(_LabelFineTune):
    """Fine-tune all layers of a copy of the victim on the attacker's data with a share of labels redrawn.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> attacked, cost = LabelNoise(LabelNoiseConfig(epochs=1))(ModelSpec("cnn2", 3, 4, 16).build(),
        ...                                                         toy_images(), seed=0)
        >>> cost.details["relabelled"]
        13
    """

    config_class = LabelNoiseConfig

    def prepare(self, attacked: nn.Module, data: ImageSet, seed: int) -> tuple[ImageSet, Any, dict]:
        noisy = noisy_labels(data, self.config.noise, seed)
        return noisy, fit_loss(attacked), {"relabelled": int((noisy.y != data.y).sum())}
