"""Feature permutation: the hidden units of every layer reordered, the function left exactly as it was.

A network's hidden channels carry no order: permuting the output channels of a layer (its weights,
bias and the batch-norm statistics that follow) and the input channels of the next layer the same way
gives another set of weights that computes the same function. The SoK lists this among the model
modifications because it defeats a white-box verifier that reads the owner's mark from particular
weights or units; ownmark's verifications all query the model's answers, which the permutation does
not change (up to float rounding), so it cannot change an ownmark verdict: this unit proves that
rather than assuming it. Handles sequential networks (``cnn2``, ``lenet``, ``conv4``, and any
``nn.Sequential`` of Conv2d / Linear layers with element-wise layers, pooling, batch norm and one
Flatten between them); other architectures are refused. No data, queries or training.

Reference:
    Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
    Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (feature permutation among the model modifications).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.core import Cost
from ownmark.errors import ConfigError
from ownmark.models.injected import InjectedModel
from ownmark.train import Engine, key_seed

PERMUTE_STREAM = 0x5045524D
_PASS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Identity,
)  # fmt: skip  (act on each channel alone)


@dataclass(frozen=True)
class FeaturePermuteConfig:
    """Nothing to set: every hidden layer is permuted with a seeded draw."""


def permute_features(model: nn.Module, generator: torch.Generator) -> int:
    """Permute the hidden units of a sequential network in place; returns how many layers were permuted.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> net = ModelSpec("cnn2", 1, 10, 28).build().eval()
        >>> x = torch.rand(4, 1, 28, 28); before = net(x)
        >>> permute_features(net, torch.Generator().manual_seed(0)), torch.allclose(net(x), before, atol=1e-5)
        (3, True)
    """
    body = model.net if hasattr(model, "net") and isinstance(model.net, nn.Sequential) else model
    if not isinstance(body, nn.Sequential):
        raise ConfigError(
            f"feature-permute handles sequential networks (cnn2, lenet, conv4), not {type(model).__name__}"
        )
    layers = list(body)
    weighted = [i for i, m in enumerate(layers) if isinstance(m, (nn.Conv2d, nn.Linear))]
    count = 0
    with torch.no_grad():
        for a, b in zip(weighted, weighted[1:], strict=False):
            first, second, between = layers[a], layers[b], layers[a + 1 : b]
            flatten = [m for m in between if isinstance(m, nn.Flatten)]
            if any(not isinstance(m, (*_PASS, nn.BatchNorm2d, nn.BatchNorm1d, nn.Flatten)) for m in between):
                raise ConfigError(f"feature-permute cannot see through {[type(m).__name__ for m in between]}")
            units = first.out_channels if isinstance(first, nn.Conv2d) else first.out_features
            perm = torch.randperm(units, generator=generator)
            first.weight.copy_(first.weight[perm])
            if first.bias is not None:
                first.bias.copy_(first.bias[perm])
            for norm in (m for m in between if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d))):
                for t in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
                    if t is not None:
                        t.copy_(t[perm])
            if isinstance(second, nn.Conv2d):
                second.weight.copy_(second.weight[:, perm])
            elif flatten:  # Linear after Flatten: each channel owns a block of in_features
                block = second.in_features // units
                cols = (perm[:, None] * block + torch.arange(block)[None, :]).reshape(-1)
                second.weight.copy_(second.weight[:, cols])
            else:
                second.weight.copy_(second.weight[:, perm])
            count += 1
    return count


@ATTACKS.register("feature-permute")
class FeaturePermute:
    """Feature permutation: hidden units reordered, the function (and every ownmark verdict) unchanged.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> attacked, cost = FeaturePermute()(ModelSpec("lenet", 1, 10, 28).build(), None, seed=0)
        >>> cost.details["permuted_layers"], cost.queries
        (4, 0)
    """

    access = "white-box"
    group = "modification"
    families = ("classifier", "encoder")
    config_class = FeaturePermuteConfig
    presets: dict = {}

    def __init__(self, config: FeaturePermuteConfig = FeaturePermuteConfig()) -> None:
        self.config = config

    def __call__(
        self, model: nn.Module, data: object, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        attacked, cost = copy.deepcopy(model), Cost()
        with timed(cost):
            g = torch.Generator().manual_seed(key_seed(seed, PERMUTE_STREAM))
            # an injected (PTYNet) model: the thief permutes the units of each network inside it
            parts = [attacked.target, attacked.proprietary] if isinstance(attacked, InjectedModel) else [attacked]
            cost.details["permuted_layers"] = sum(permute_features(part, g) for part in parts)
        return attacked.eval(), cost
