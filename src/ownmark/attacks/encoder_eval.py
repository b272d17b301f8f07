"""How much of an encoder a theft carried away: downstream accuracy, agreement, similarity, cost.

The StolenEncoder paper judges a stolen encoder by what a downstream user gets from it: the
accuracy of a classifier trained on its frozen features (SA) against the target's (TA), an
encoder pre-trained on the attacker's images alone (PA) and, as the floor, a randomly
initialised encoder of the same architecture (RA). Each is measured with a full linear probe and
a few-shot one. Raw mean cosine between two encoders' features says little (after ReLU and
pooling every feature shares one dominant direction), so similarity is linear CKA.

Reference:
    Liu, Jia, Liu, Gong, "StolenEncoder: Stealing Pre-trained Encoders in Self-supervised
    Learning", ACM CCS 2022, arXiv:2201.05889; Kornblith, Norouzi, Lee, Hinton, "Similarity of
    Neural Network Representations Revisited", ICML 2019, arXiv:1905.00414 (linear CKA).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.attacks.distill import fresh_surrogate
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.defenses import Defense
from ownmark.errors import ShapeError
from ownmark.models import ModelSpec, encode
from ownmark.train import key_seed, predict_logits
from ownmark.train.probe import linear_probe, pixel_probe
from ownmark.train.ssl import SSLConfig, pretrain

DEFENSE_STREAM = 0x44454645


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices of the same images, (N, D1) and (N, D2); in [0, 1].

    Invariant to rotations and isotropic scaling of either side, 1 for features equal up to them.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, other = torch.randn(50, 8, generator=g), torch.randn(50, 4, generator=g)
        >>> round(linear_cka(x, 3 * x), 6), linear_cka(x, other) < 0.5
        (1.0, True)
    """
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ShapeError(f"linear_cka needs (N, D) features of the same N >= 2 images, got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")  # fmt: skip
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    cross = (y.T @ x).pow(2).sum()
    norm = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(cross / norm) if norm > 0 else 0.0


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cosine similarity of paired feature rows (N, D); reported for comparison with the paper."""
    if x.shape != y.shape:
        raise ShapeError(f"mean_cosine needs features of the same shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    return float(F.cosine_similarity(x.float(), y.float(), dim=1).mean())


def agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Share of images ``x`` on which two classifiers predict the same label."""
    return float((predict_logits(a, x).argmax(1) == predict_logits(b, x).argmax(1)).float().mean())


def gain_recovered(stolen: float, target: float, floor: float) -> float:
    """(SA - RA) / (TA - RA): the share of the target's gain over a random encoder that was stolen.

    Example:
        >>> round(gain_recovered(0.9, 0.95, 0.7), 6)
        0.8
    """
    gain = target - floor
    return (stolen - floor) / gain if gain > 0 else float("nan")


@dataclass
class Probes:
    """Downstream accuracy of one feature source: full linear probe and ``shots``-per-class probe."""

    full: float
    few: float


def probe(encoder: nn.Module, train: ImageSet, test: ImageSet, *, seed: int, shots: int = 10) -> tuple[Probes, list]:
    """Both probes of ``encoder``; also returns the two downstream classifiers (full, few-shot)."""
    full = linear_probe(encoder, train, test, seed=seed)
    few = linear_probe(encoder, train, test, seed=seed, shots=shots)
    return Probes(full.accuracy, few.accuracy), [full.classifier, few.classifier]


def pixels(train: ImageSet, test: ImageSet, *, seed: int, shots: int = 10) -> Probes:
    """The same two probes on raw pixels."""
    return Probes(pixel_probe(train, test, seed=seed), pixel_probe(train, test, seed=seed, shots=shots))


def random_encoder(spec: ModelSpec, seed: int) -> nn.Module:
    """A randomly initialised encoder of ``spec`` (RA, the floor), seeded."""
    return fresh_surrogate(spec, key_seed(seed, 0x5241)).eval()


def surrogate_pretrained(
    spec: ModelSpec, data: ImageSet, *, seed: int, config: SSLConfig = SSLConfig()
) -> tuple[nn.Module, float]:
    """An encoder of ``spec`` pre-trained with ``config`` on the attacker's images alone (PA); seconds."""
    encoder = fresh_surrogate(spec, key_seed(seed, 0x5041))
    result = pretrain(encoder, data, config, seed=seed)
    return encoder.eval(), result.seconds


class DefendedEncoder(nn.Module):
    """What a legitimate user of a defended API gets: the encoder's features through ``defense``.

    Lets the probes measure the utility left to honest users under noise, rounding or top-k.
    """

    def __init__(self, encoder: nn.Module, defense: Defense, seed: int = 0) -> None:
        super().__init__()
        self.encoder, self.defense = encoder, defense
        self.generator = torch.Generator().manual_seed(key_seed(seed, DEFENSE_STREAM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.defense(self.encoder(x), self.generator)


@dataclass
class TheftEval:
    """Everything measured on one stolen encoder (accuracies are fractions).

    Attributes:
        recovered_full, recovered_few: (SA - RA) / (TA - RA) of each probe.
        agreement_full, agreement_few: share of test images on which the downstream classifiers
            on the target's and on the stolen encoder's features predict the same label.
        cka: linear CKA of the two encoders' features on the test images.
        query_fraction: queries / pre-training set size.
        compute_fraction: attack seconds / pre-training seconds (None when either is unknown).
    """

    ta: Probes
    sa: Probes
    ra: Probes
    pixels: Probes
    recovered_full: float
    recovered_few: float
    agreement_full: float
    agreement_few: float
    cka: float
    cosine: float
    queries: int
    query_fraction: float
    compute_fraction: float | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def evaluate_theft(
    target: nn.Module,
    stolen: nn.Module,
    train: ImageSet,
    test: ImageSet,
    *,
    seed: int,
    cost: Cost,
    pretrain_size: int,
    pretrain_seconds: float | None = None,
    shots: int = 10,
    target_probes: tuple[Probes, list] | None = None,
) -> TheftEval:
    """TA, SA, RA and pixels on the downstream task ``train`` -> ``test``, agreement, CKA and cost.

    Args:
        pretrain_size: images the target was pre-trained on (queries are a fraction of it).
        pretrain_seconds: wall time of the target's pre-training, for the compute fraction.
        target_probes: the target's :func:`probe` result, to reuse across several stolen copies.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> enc = ModelSpec("conv4", 3, 8, 16, family="encoder").build()
        >>> ev = evaluate_theft(enc, enc, toy_images(0), toy_images(1), seed=0, cost=Cost(queries=8),
        ...                     pretrain_size=64, shots=2)
        >>> ev.agreement_full, round(ev.cka, 6), ev.query_fraction
        (1.0, 1.0, 0.125)
    """
    spec = getattr(stolen, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise ShapeError("evaluate_theft needs a stolen encoder built from a ModelSpec (as StolenEncoder returns)")
    ta, (t_full, t_few) = target_probes or probe(target, train, test, seed=seed, shots=shots)
    sa, (s_full, s_few) = probe(stolen, train, test, seed=seed, shots=shots)
    ra, _ = probe(random_encoder(spec, seed), train, test, seed=seed, shots=shots)
    ft, fs = encode(target, test.x), encode(stolen, test.x)
    return TheftEval(
        ta=ta, sa=sa, ra=ra, pixels=pixels(train, test, seed=seed, shots=shots),
        recovered_full=gain_recovered(sa.full, ta.full, ra.full), recovered_few=gain_recovered(sa.few, ta.few, ra.few),
        agreement_full=agreement(t_full, s_full, test.x), agreement_few=agreement(t_few, s_few, test.x),
        cka=linear_cka(ft, fs), cosine=mean_cosine(ft, fs), queries=cost.queries,
        query_fraction=cost.queries / pretrain_size,
        compute_fraction=cost.seconds / pretrain_seconds if pretrain_seconds else None,
    )  # fmt: skip


def describe_theft(victim: nn.Module | None, stolen: nn.Module, train: ImageSet, test: ImageSet, *, seed: int) -> str:
    """One line for the CLI: downstream probes (full / 10-shot) of the victim (when its weights are at
    hand) and of the stolen encoder, and their feature CKA."""
    sa, _ = probe(stolen, train, test, seed=seed)
    text = f"stolen encoder probe {sa.full:.4f} full / {sa.few:.4f} 10-shot"
    if victim is None:
        return text
    ta, _ = probe(victim, train, test, seed=seed)
    cka = linear_cka(encode(victim, test.x), encode(stolen, test.x))
    return f"victim probe {ta.full:.4f} full / {ta.few:.4f} 10-shot -> {text}; linear CKA {cka:.3f}"
