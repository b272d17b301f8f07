"""The small value types that travel between schemes, attacks and verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Key:
    """Everything an owner needs to verify later, and nothing else.

    Attributes:
        scheme: registry name of the scheme that made the key.
        config: the scheme's resolved config as a JSON-able dict.
        tensors: secret material (trigger images and labels, perturbations, ...).
        meta: JSON-able facts the verifier checks (input shape, number of classes, ...).
    """

    scheme: str
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evidence:
    """What ``detect`` measured on a suspect; ``verify.decide`` turns it into a Verdict.

    For trigger-set schemes ``k`` of ``n`` verification queries were answered with the
    watermark label; under the null hypothesis each is so answered with probability ``p0``.
    Schemes whose statistic is not a count (similarities of encoders, correlations of extracted
    images) run their test in ``ownmark.verify.tests`` and hand over its result in ``test``,
    ``p_value``, ``statistic`` and ``null_hypothesis``; ``decide`` then only compares with alpha.

    Attributes:
        scheme: the scheme that produced the evidence.
        k: matches on the held-out verification set.
        n: size of the held-out verification set.
        p0: null match probability (1/K, or a calibrated upper bound).
        queries: queries spent on the suspect, all sets together.
        details: further JSON-able measurements (e.g. the embedding set's matches).
        test: ``"binomial"`` (decide runs the exact test on k, n, p0) or the name of the test whose
            ``p_value`` is given.
        p_value: the p-value of a test other than the binomial one.
        statistic: that test's statistic (e.g. a t value or a mean effect).
        null_hypothesis: that test's null hypothesis in words.
    """

    scheme: str
    k: int
    n: int
    p0: float
    queries: int
    details: dict[str, Any] = field(default_factory=dict)
    test: str = "binomial"
    p_value: float | None = None
    statistic: float | None = None
    null_hypothesis: str = ""

    @property
    def rate(self) -> float:
        """Share of verification queries answered with the watermark label."""
        return self.k / self.n if self.n else 0.0


@dataclass
class Cost:
    """What an attack cost the adversary."""

    epochs: float = 0.0
    seconds: float = 0.0
    queries: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.epochs + other.epochs,
            self.seconds + other.seconds,
            self.queries + other.queries,
            {**self.details, **other.details},
        )
