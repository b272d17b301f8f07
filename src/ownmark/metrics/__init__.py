"""Metrics as registered units: ``METRICS`` maps a name to a :class:`Metric` of one or more families.

A metric scores a model on the test part of a split (the attacker's part where a probe needs
labelled training data), or compares it with a ``reference`` model on the same test images (the
theft metrics). ``ownmark evaluate --metric NAME`` and :func:`ownmark.api.evaluate` call them.

Example:
    >>> from ownmark.metrics import METRICS
    >>> METRICS.names()
    ['accuracy', 'agreement', 'cka', 'knn', 'linear-probe', 'psnr', 'ssim']
    >>> METRICS.get("ssim").families
    ('image2image',)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ownmark.errors import ConfigError
from ownmark.registry import Registry


@dataclass(frozen=True)
class Metric:
    """One metric. Subclasses set the class attributes and implement :meth:`score`.

    Attributes:
        name: the registry name.
        families: the model families it applies to.
        description: one line for ``ownmark list metrics``.
        needs_reference: whether it compares the model with a reference model.
    """

    name: ClassVar[str]
    families: ClassVar[tuple[str, ...]]
    description: ClassVar[str]
    needs_reference: ClassVar[bool] = False

    def score(
        self, model: Any, splits: Any, *, reference: Any = None, seed: int = 0, shots: int | None = None
    ) -> float:
        raise NotImplementedError

    def __call__(self, model: Any, splits: Any, *, reference: Any = None, seed: int = 0,
                 shots: int | None = None) -> float:  # fmt: skip
        """Score ``model`` (checked against :attr:`families`); ``reference`` for the theft metrics."""
        family = getattr(getattr(model, "spec", None), "family", None)
        if family is not None and family not in self.families:
            raise ConfigError(f"metric {self.name} measures {'/'.join(self.families)} models, not a {family}")
        if self.needs_reference and reference is None:
            raise ConfigError(f"metric {self.name} compares two models; name the other with --reference")
        return float(self.score(model, splits, reference=reference, seed=seed, shots=shots))


METRICS: Registry[Metric] = Registry("metric")


def register(cls: type[Metric]) -> type[Metric]:
    METRICS.register(cls.name)(cls())
    return cls


@register
class Accuracy(Metric):
    name, families = "accuracy", ("classifier",)
    description = "test accuracy of a classifier's labels"

    def score(self, model, splits, **_: Any) -> float:
        from ownmark.train import accuracy

        return accuracy(model, splits.test)


@register
class Agreement(Metric):
    name, families, needs_reference = "agreement", ("classifier",), True
    description = "share of test images on which two classifiers give the same label (fidelity of a copy)"

    def score(self, model, splits, *, reference=None, **_: Any) -> float:
        from ownmark.attacks.encoder_eval import agreement

        return agreement(model, reference, splits.test.x)


@register
class LinearProbe(Metric):
    name, families = "linear-probe", ("encoder",)
    description = "accuracy of a linear classifier on frozen features (fitted on the attacker's part; --shots)"

    def score(self, model, splits, *, seed: int = 0, shots: int | None = None, **_: Any) -> float:
        from ownmark.train.probe import linear_probe

        return linear_probe(model, splits.attacker, splits.test, seed=seed, shots=shots).accuracy


@register
class KNN(Metric):
    name, families = "knn", ("encoder",)
    description = "accuracy of a 20-nearest-neighbour vote on frozen features (cosine)"

    def score(self, model, splits, **_: Any) -> float:
        from ownmark.train.probe import knn_accuracy

        return knn_accuracy(model, splits.attacker, splits.test)


@register
class CKA(Metric):
    name, families, needs_reference = "cka", ("encoder",), True
    description = "linear CKA of two encoders' features of the test images (similarity of a copy)"

    def score(self, model, splits, *, reference=None, **_: Any) -> float:
        from ownmark.attacks.encoder_eval import linear_cka
        from ownmark.models import encode

        return linear_cka(encode(model, splits.test.x), encode(reference, splits.test.x))


@register
class SSIM(Metric):
    name, families = "ssim", ("image2image",)
    description = "SSIM of the model's outputs against the ground truth of the test pairs"

    def score(self, model, splits, **_: Any) -> float:
        from ownmark.train.image2image import predict
        from ownmark.verify.metrics import ssim

        return ssim(predict(model, splits.test.x), splits.test.y)


@register
class PSNR(Metric):
    name, families = "psnr", ("image2image",)
    description = "PSNR (dB) of the model's outputs against the ground truth of the test pairs"

    def score(self, model, splits, **_: Any) -> float:
        from ownmark.train.image2image import predict
        from ownmark.verify.metrics import psnr

        return psnr(predict(model, splits.test.x), splits.test.y)


__all__ = ["METRICS", "Metric"]
