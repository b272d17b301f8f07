"""Suspects made without the owner's secret: the null zoo the validity benchmark verifies keys on.

A verdict promises that a model made *without* the owner's secret is judged OWNED with probability
at most alpha (METHODS.md, "What a verdict promises"). The zoo collects such models, as varied as a
CPU allows, because a test is only as valid as the worst null it meets: independently trained
models (other seeds, other architectures, the attacker's split), fine-tuned nulls, the owner's own
unmarked model, degenerate answerers (one label everywhere, a strong bias towards one label, an
untrained net), surrogates distilled from the *unmarked* model in and out of distribution, and
models from outside the project (scikit-learn's logistic regression and MLP, wrapped as label
functions). None ever sees a key.

A suspect is an ``nn.Module`` or a function of images returning labels or scores, exactly what
``scheme.detect`` accepts. Trained suspects are cached as safetensors (``ownmark.models.save_model``)
in a folder, so a long run resumes without training again.

The plug point per family is :data:`ZOOS`: a family name -> a function ``(ctx, owner, specs,
cache) -> {name: suspect}``. Only the classifier family is implemented here; encoder and
image-to-image suspects need their own builders (see :mod:`ownmark.bench.studies.validity`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.data import ImageSet, load_dataset
from ownmark.errors import ConfigError

log = logging.getLogger(__name__)

Suspect = nn.Module | Callable[[torch.Tensor], torch.Tensor]
KINDS = ("owner", "trained", "finetuned", "constant", "biased", "untrained", "distilled", "sklearn")


@dataclass(frozen=True)
class SuspectSpec:
    """One null suspect of the zoo.

    Attributes:
        name: unique name (also its cache file).
        kind: one of :data:`KINDS`. ``owner`` is the owner's unmarked model; ``trained`` a model of
            ``arch`` trained from ``seed`` on ``split``; ``finetuned`` the suspect ``base`` fine-tuned
            (all layers) on the attacker's split; ``constant`` answers ``label`` everywhere;
            ``biased`` is ``base`` with ``bias`` added to the logit of ``label``; ``untrained`` a
            freshly initialised ``arch``; ``distilled`` a student ``arch`` trained on ``split``
            (``attacker``, or a bundled dataset name such as ``photos``, resized to the owner's
            shape) labelled by the owner's unmarked model; ``sklearn`` a scikit-learn ``arch``
            (``logreg`` or ``mlp``) fitted on ``split``.
        arch, seed, split, base, label, bias: as the kind uses them.
    """

    name: str
    kind: str
    arch: str = "lenet"
    seed: int = 0
    split: str = "owner"
    base: str = ""
    label: int = 0
    bias: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"SuspectSpec.kind must be one of {KINDS}, got {self.kind!r}")


def classifier_specs(arch: str = "lenet", *, size: str = "default") -> list[SuspectSpec]:
    """The classifier zoo: 24 suspects at ``default``, 8 at ``tiny`` (for tests).

    ``arch`` is the owner's architecture; other architectures appear as independent nulls.
    """
    other = "cnn2" if arch != "cnn2" else "lenet"
    if size == "tiny":
        return [
            SuspectSpec("owner-unmarked", "owner"),
            SuspectSpec(f"{arch}-seed101", "trained", arch, 101),
            SuspectSpec(f"{arch}-seed102-attacker", "trained", arch, 102, "attacker"),
            SuspectSpec("constant-0", "constant", label=0),
            SuspectSpec("constant-7", "constant", label=7),
            SuspectSpec(f"biased-3-{arch}-seed101", "biased", base=f"{arch}-seed101", label=3, bias=0.3),
            SuspectSpec("sklearn-logreg-attacker", "sklearn", "logreg", 0, "attacker"),
            SuspectSpec(f"untrained-{arch}", "untrained", arch, 7),
        ]
    if size != "default":
        raise ConfigError(f"classifier zoo size must be 'default' or 'tiny', got {size!r}")
    return [
        SuspectSpec("owner-unmarked", "owner"),
        *[SuspectSpec(f"{arch}-seed{s}", "trained", arch, s) for s in (101, 102, 103, 104)],
        *[SuspectSpec(f"{arch}-seed{s}-attacker", "trained", arch, s, "attacker") for s in (111, 112)],
        SuspectSpec(f"{other}-seed121", "trained", other, 121),
        SuspectSpec(f"{other}-seed122-attacker", "trained", other, 122, "attacker"),
        SuspectSpec(f"ftal-{arch}-seed101", "finetuned", arch, 131, base=f"{arch}-seed101"),
        SuspectSpec(f"ftal-{arch}-seed111-attacker", "finetuned", arch, 132, base=f"{arch}-seed111-attacker"),
        SuspectSpec("constant-0", "constant", label=0),
        SuspectSpec("constant-7", "constant", label=7),
        SuspectSpec(f"biased-3-{arch}-seed102", "biased", base=f"{arch}-seed102", label=3, bias=0.3),
        SuspectSpec(f"biased-8-{arch}-seed103", "biased", base=f"{arch}-seed103", label=8, bias=0.4),
        SuspectSpec(f"untrained-{arch}", "untrained", arch, 141),
        SuspectSpec(f"distilled-{arch}-attacker", "distilled", arch, 151, "attacker"),
        SuspectSpec(f"distilled-{other}-attacker", "distilled", other, 152, "attacker"),
        SuspectSpec(f"distilled-{arch}-photos", "distilled", arch, 153, "photos"),
        SuspectSpec(f"distilled-{arch}-digits", "distilled", arch, 154, "digits"),
        SuspectSpec("sklearn-logreg-attacker", "sklearn", "logreg", 0, "attacker"),
        SuspectSpec("sklearn-mlp-attacker", "sklearn", "mlp", 0, "attacker"),
        SuspectSpec("sklearn-mlp-owner", "sklearn", "mlp", 1, "owner"),
        SuspectSpec(f"{arch}-seed105", "trained", arch, 105),
    ]  # fmt: skip


def build_classifier_zoo(
    ctx: Any, owner: nn.Module, specs: list[SuspectSpec], cache: Path | None = None, *, training: Any = None,
) -> dict[str, Suspect]:  # fmt: skip
    """Build (or load from ``cache``) every suspect of ``specs`` on the context's splits.

    Args:
        ctx: a :class:`ownmark.families.classifier.Context` (``.splits``, ``.spec(arch)``).
        owner: the owner's unmarked model (the teacher of the distilled suspects).
        training: the TrainConfig of trained and distilled suspects (default: the bench's clean one).
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"suspect names must be unique, got {sorted(n for n in names if names.count(n) > 1)}")
    out: dict[str, Suspect] = {}
    for spec in specs:  # bases come first in every list above; a later one may use an earlier one
        out[spec.name] = _cached(spec, cache, lambda spec=spec: _build(spec, ctx, owner, out, training))
    return out


def _cached(spec: SuspectSpec, cache: Path | None, build: Callable[[], Suspect]) -> Suspect:
    """Load a trained suspect from the cache, or build and store it (functions are not cached)."""
    from ownmark.io import artefact_paths
    from ownmark.models import load_model, save_model

    cacheable = spec.kind in ("trained", "finetuned", "distilled")
    path = None if cache is None or not cacheable else Path(cache) / spec.name
    if path is not None and artefact_paths(path)[1].is_file():
        return load_model(path)[0]
    model = build()
    if path is not None:
        save_model(path, model, info={"suspect": spec.name, "kind": spec.kind, "seed": spec.seed})
    return model


def _build(spec: SuspectSpec, ctx: Any, owner: nn.Module, built: dict[str, Suspect], training: Any) -> Suspect:
    from ownmark.families.classifier import CLEAN_TRAINING, train_model

    training = training or CLEAN_TRAINING
    num_classes = ctx.splits.owner.num_classes
    if spec.kind == "owner":
        return owner
    if spec.kind == "constant":
        return ConstantLabel(spec.label, num_classes)
    if spec.kind == "untrained":
        torch.manual_seed(spec.seed)
        return ctx.spec(spec.arch).build().eval()
    if spec.kind in ("finetuned", "biased"):
        if spec.base not in built:
            raise ConfigError(f"suspect {spec.name!r} needs base {spec.base!r} listed before it")
        base = built[spec.base]
        if spec.kind == "biased":
            return BiasedLabel(base, spec.label, spec.bias, num_classes)
        return fine_tuned(base, ctx.splits.attacker, seed=spec.seed, epochs=3)
    if spec.kind == "trained":
        data = ctx.splits.owner if spec.split == "owner" else ctx.splits.attacker
        return train_model(ctx.spec(spec.arch), data, seed=spec.seed, config=training).eval()
    if spec.kind == "distilled":
        data = teacher_labelled(owner, transfer_images(spec.split, ctx))
        return train_model(ctx.spec(spec.arch), data, seed=spec.seed, config=training).eval()
    data = ctx.splits.owner if spec.split == "owner" else ctx.splits.attacker
    return SklearnLabels.fit(spec.arch, data, seed=spec.seed)


def fine_tuned(model: nn.Module, data: ImageSet, *, seed: int, epochs: int = 5) -> nn.Module:
    """A copy of ``model`` with all layers fine-tuned on ``data`` (FTAL at the attack's defaults:
    SGD, lr 0.01, momentum 0.9, batch 64; Adi et al. 2018, arXiv:1802.04633). Trains through
    ``ownmark.train.fit`` directly, so the zoo does not depend on the attack registry."""
    import copy

    from ownmark.train import TrainConfig, fit

    tuned = copy.deepcopy(model)
    fit(tuned, data, TrainConfig(epochs=epochs, batch_size=64, lr=0.01, momentum=0.9, weight_decay=5e-4), seed=seed)
    return tuned.eval()


def transfer_images(source: str, ctx: Any) -> torch.Tensor:
    """Images a surrogate is distilled on: the attacker's split, or a bundled dataset converted to the
    owner's shape (grey or colour channels, bilinear resize), so out-of-distribution queries."""
    if source == "attacker":
        return ctx.splits.attacker.x
    c, h, w = ctx.splits.owner.shape
    x = load_dataset(source).x
    if x.shape[1] != c:
        x = x.mean(1, keepdim=True).expand(-1, c, -1, -1) if c in (1, 3) else x[:, :1].expand(-1, c, -1, -1)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1).contiguous()


def teacher_labelled(teacher: nn.Module, x: torch.Tensor) -> ImageSet:
    """``x`` labelled with the teacher's answers (hard labels, as an API returning labels gives)."""
    from ownmark.train import predict_logits

    y = predict_logits(teacher, x).argmax(1)
    return ImageSet("distilled", x, y.long(), int(teacher.spec.num_classes))


class ConstantLabel:
    """A suspect that answers ``label`` for every image (as scores, so the class count is checked).

    Example:
        >>> ConstantLabel(2, 4)(torch.zeros(3, 1, 8, 8)).argmax(1).tolist()
        [2, 2, 2]
    """

    def __init__(self, label: int, num_classes: int) -> None:
        if not 0 <= label < num_classes:
            raise ConfigError(f"ConstantLabel.label must lie in [0, {num_classes}), got {label}")
        self.label, self.num_classes = label, num_classes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), self.num_classes)
        out[:, self.label] = 1.0
        return out


class BiasedLabel:
    """A model whose softmax mass on ``label`` is raised by ``bias`` (``p' = (1 - b) p + b e_label``),
    so it answers ``label`` far more often than the data warrants, most of all on unusual inputs.

    Example:
        >>> m = BiasedLabel(lambda x: torch.zeros(len(x), 3), 1, 0.5, 3)
        >>> m(torch.zeros(2, 1, 4, 4)).argmax(1).tolist()
        [1, 1]
    """

    def __init__(self, base: Suspect, label: int, bias: float, num_classes: int) -> None:
        if not 0 < bias < 1:
            raise ConfigError(f"BiasedLabel.bias must lie in (0, 1), got {bias}")
        self.base, self.label, self.bias, self.num_classes = base, label, bias, num_classes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from ownmark.train import predict_logits

        logits = predict_logits(self.base, x) if isinstance(self.base, nn.Module) else self.base(x)
        probs = logits.float().softmax(1) * (1 - self.bias)
        probs[:, self.label] += self.bias
        return probs


class SklearnLabels:
    """A scikit-learn classifier on flattened pixels, wrapped as a label function: a model from
    outside the project (no torch, no ownmark training loop)."""

    def __init__(self, model: Any, num_classes: int) -> None:
        self.model, self.num_classes = model, num_classes

    @classmethod
    def fit(cls, kind: str, data: ImageSet, *, seed: int) -> SklearnLabels:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier

        if kind == "logreg":
            model = LogisticRegression(max_iter=200, C=0.1)
        elif kind == "mlp":
            model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=seed)
        else:
            raise ConfigError(f"sklearn suspect arch must be 'logreg' or 'mlp', got {kind!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(data.x.reshape(len(data), -1).numpy(), data.y.numpy())
        return cls(model, data.num_classes)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.model.predict(x.reshape(len(x), -1).numpy())).long()


# family -> builder of its null suspects; encoder and image-to-image zoos are not implemented yet
ZOOS: dict[str, Callable[..., dict[str, Suspect]]] = {"classifier": build_classifier_zoo}
