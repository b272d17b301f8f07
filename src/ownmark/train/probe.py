"""The utility of an encoder: linear-probe and k-NN accuracy of its frozen features.

A downstream user who bought features trains a linear classifier on them; how well it does on
held-out labelled data is the encoder's utility. The probe standardises the training features,
fits one linear layer by full-batch Adam (deterministic for a seed) and returns it joined to the
frozen encoder, so the result is a classifier module that black-box verification can query.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.data import ImageSet
from ownmark.errors import ConfigError, ShapeError
from ownmark.models.encoder import encode_set
from ownmark.train.loop import cpu_seeded, key_seed

PROBE_STREAM, SHOT_STREAM = 0x50524F42, 0x53484F54


class Downstream(nn.Module):
    """A frozen encoder, feature standardisation and a linear layer: a user's downstream classifier.

    The encoder is shared, not copied, and its ``requires_grad`` flags are left alone (the probe
    only ever optimises the linear layer), so probing an encoder never changes how it trains later.
    """

    def __init__(self, encoder: nn.Module, mean: torch.Tensor, std: torch.Tensor, linear: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.linear = encoder, linear
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((self.encoder(x) - self.mean) / self.std)


@dataclass
class ProbeResult:
    """Accuracy on the test part and the downstream classifier that reached it."""

    accuracy: float
    classifier: Downstream
    train_size: int


def few_shot(data: ImageSet, shots: int, seed: int) -> ImageSet:
    """``shots`` images per class, a seeded random choice."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ConfigError(f"shots must be a whole number of labelled images per class >= 1, got {shots!r}")
    g = torch.Generator().manual_seed(key_seed(seed, SHOT_STREAM))
    picks = []
    for label in range(data.num_classes):
        members = torch.nonzero(data.y == label).flatten()
        if len(members) < shots:
            raise ShapeError(f"few-shot probe needs {shots} images of class {label}, the set has {len(members)}")
        picks.append(members[torch.randperm(len(members), generator=g)[:shots]])
    return data.subset(torch.cat(picks))


def linear_probe(
    encoder: nn.Module,
    train: ImageSet,
    test: ImageSet,
    *,
    seed: int = 0,
    shots: int | None = None,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-4,
) -> ProbeResult:
    """Fit a linear classifier on frozen features of ``train`` and measure it on ``test``.

    Args:
        shots: labelled images per class for a few-shot probe; None uses all of ``train``.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> enc = ModelSpec("conv4", 3, 16, 16, family="encoder").build()
        >>> res = linear_probe(enc, toy_images(seed=0), toy_images(seed=1), steps=20)
        >>> 0.0 <= res.accuracy <= 1.0, res.classifier(torch.rand(2, 3, 16, 16)).shape
        (True, torch.Size([2, 4]))
    """
    if train.shape != test.shape or train.num_classes != test.num_classes:
        raise ShapeError(f"probe train {train!r} and test {test!r} must have the same image shape and classes")
    if shots is not None:
        train = few_shot(train, shots, seed)
    feats = encode_set(encoder, train)  # a streamed set: a few batches at a time
    if feats.ndim != 2:
        raise ConfigError(f"an encoder must return (N, D) features, got {tuple(feats.shape)}")
    mean = feats.mean(0)
    std = feats.std(0) if len(feats) > 1 else torch.ones(feats.shape[1])
    # a unit dead on the training images (ReLU) must not blow up on test images: floor its scale
    std = std.clamp_min(max(1e-6, 0.1 * float(std.mean())))
    z = (feats - mean) / std
    with cpu_seeded(key_seed(seed, PROBE_STREAM)):
        linear = nn.Linear(z.shape[1], train.num_classes)
    opt = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(linear(z), train.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    classifier = Downstream(encoder, mean, std, linear).eval()
    with torch.no_grad():
        acc = (classifier.linear((encode_set(encoder, test) - mean) / std).argmax(1) == test.y).float().mean().item()
    return ProbeResult(acc, classifier, len(train))


def knn_accuracy(encoder: nn.Module, train: ImageSet, test: ImageSet, *, k: int = 20) -> float:
    """Accuracy of a k-nearest-neighbour vote (cosine similarity) on frozen features."""
    if k < 1:
        raise ConfigError(f"knn_accuracy k must be a positive int, got {k!r}")
    bank = F.normalize(encode_set(encoder, train), dim=1)
    query = F.normalize(encode_set(encoder, test), dim=1)
    nearest = (query @ bank.T).topk(min(k, len(bank)), dim=1).indices
    votes = F.one_hot(train.y[nearest], train.num_classes).sum(1)
    return (votes.argmax(1) == test.y).float().mean().item()


def pixel_probe(train: ImageSet, test: ImageSet, *, seed: int = 0, shots: int | None = None) -> float:
    """The same linear probe on raw pixels: the floor an encoder must beat to be worth stealing."""
    return linear_probe(nn.Flatten(), train, test, seed=seed, shots=shots).accuracy
