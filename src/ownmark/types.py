"""The types every unit speaks: values (Key, Evidence, Cost, Verdict, Splits), defined here, and the
protocols of the units (Scheme, Attack, Metric, and Family in :mod:`ownmark.families.base`).

A new unit implements one protocol and registers itself; the CLI, the bench and the API use nothing
beyond these members.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # annotations only: importing this module imports no torch
    import torch
    from torch import nn

    from ownmark.config import Preset
    from ownmark.data.imageset import ImageSet


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


@dataclass(frozen=True)
class Verdict:
    """A statistical decision about a suspect model.

    Attributes:
        statistic: the test statistic (matches k for trigger sets).
        n: number of verification queries the statistic is over.
        p0: null match probability used.
        p_value: the test's p-value.
        alpha: significance level.
        owned: True when p_value <= alpha (the suspect is judged to carry the owner's mark).
        queries: queries spent on the suspect.
        test: name of the test.
        null_hypothesis: the null hypothesis in words.
        smallest_p: the smallest p-value the test can give (None where it is not bounded away from 0,
            e.g. the exact binomial test, whose smallest p is p0 ** n).
    """

    statistic: float
    n: int
    p0: float
    p_value: float
    alpha: float
    owned: bool
    queries: int
    test: str
    null_hypothesis: str
    smallest_p: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def decision(self) -> str:
        return "OWNED" if self.owned else "not verified"


@dataclass(eq=False)
class Splits:
    """Three disjoint parts of one dataset.

    The owner trains and watermarks on ``owner``, an attacker (fine-tuning, distilling, stealing)
    works on ``attacker``, and accuracy is measured on ``test``; no image is in two parts.

    Args:
        indices: ``"owner"``, ``"attacker"``, ``"test"`` -> int64 positions of that part's images
            in the full dataset, in the part's order.
    """

    owner: ImageSet
    attacker: ImageSet
    test: ImageSet
    indices: dict[str, torch.Tensor] = field(repr=False)


class Scheme(Protocol):
    """A watermarking method: ``embed`` makes a marked model and a key, ``detect`` measures a suspect."""

    name: ClassVar[str]
    family: ClassVar[str]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Preset]]

    def embed(self, model: nn.Module, data: Any, *, seed: int, engine: Any = ...) -> tuple[nn.Module, Key]: ...

    def detect(self, suspect: Any, key: Key, *, p0: float | None = None) -> Evidence: ...


class Attack(Protocol):
    """A removal or extraction attack: a copy of the victim (or one stolen through its API) and its cost."""

    access: ClassVar[str]  # "white-box" or "black-box"
    families: ClassVar[tuple[str, ...]]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Preset]]

    def __call__(self, model: Any, data: Any, *, seed: int, engine: Any = ...) -> tuple[nn.Module, Cost]: ...


class Metric(Protocol):
    """A measurement of a model on a split (:mod:`ownmark.metrics`)."""

    name: ClassVar[str]
    families: ClassVar[tuple[str, ...]]
    needs_reference: ClassVar[bool]

    def __call__(self, model: Any, splits: Any, *, reference: Any = None, seed: int = 0,
                 shots: int | None = None) -> float: ...  # fmt: skip


__all__ = ["Attack", "Cost", "Evidence", "Key", "Metric", "Scheme", "Splits", "Verdict"]
