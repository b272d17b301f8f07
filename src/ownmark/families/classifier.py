"""Image classifiers: images in, class scores out (FCW, the trigger-set baselines, PTYNet).

Also the pieces every classifier experiment repeats, formerly ``ownmark.families.classifier``: the
data context (:class:`Context`: a dataset and its owner / attacker / test split), clean training
(:func:`train_model`) and independently trained null models (:func:`null_models`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ownmark.core import Evidence, Key
from ownmark.data import ImageSet, Splits, load_dataset, make_splits
from ownmark.families.base import FAMILIES, Family, NullSpec
from ownmark.models import ModelSpec
from ownmark.train import Engine, TrainConfig, cpu_seeded, fit, key_seed

if TYPE_CHECKING:
    from ownmark.bench.plan import MatrixConfig

CLEAN_TRAINING = TrainConfig(epochs=10, batch_size=128, lr=0.05)  # cnn2 on mnist5k: ~96% in ~6 s here


@dataclass
class Context:
    """A dataset and its owner / attacker / test split, fixed by ``split_seed``."""

    dataset: str
    split_seed: int
    splits: Splits

    @classmethod
    def load(cls, dataset: str = "mnist5k", split_seed: int = 0) -> Context:
        return cls(dataset, split_seed, make_splits(load_dataset(dataset), seed=split_seed))

    def spec(self, arch: str) -> ModelSpec:
        data = self.splits.owner
        c, h, _ = data.shape
        return ModelSpec(arch, c, data.num_classes, h)


def train_model(
    spec: ModelSpec, data: ImageSet, *, seed: int, config: TrainConfig = CLEAN_TRAINING, engine: Engine = Engine(),
    checkpoint=None, resume: bool = False,
) -> nn.Module:  # fmt: skip
    """A model of ``spec`` initialised from ``seed`` and trained on ``data``."""
    with torch.random.fork_rng():
        torch.manual_seed(key_seed(seed, 3))
        model = spec.build()
    fit(model, data, config, seed=seed, engine=engine, checkpoint=checkpoint, resume=resume)
    return model


def null_models(
    ctx: Context, archs: list[str], seeds: list[int], *, attacker_model: bool = True,
    config: TrainConfig = CLEAN_TRAINING, engine: Engine = Engine(),
) -> dict[str, nn.Module]:  # fmt: skip
    """Independently trained models: every arch x seed on the owner's data (seeds other than
    the owner's), and one trained on the attacker's split. None has seen a watermark."""
    models = {}
    for arch in archs:
        for seed in seeds:
            models[f"{arch}-seed{seed}"] = train_model(
                ctx.spec(arch), ctx.splits.owner, seed=seed, config=config, engine=engine
            )
    if attacker_model:
        models[f"{archs[0]}-attacker-data"] = train_model(
            ctx.spec(archs[0]), ctx.splits.attacker, seed=10_007, config=config, engine=engine
        )
    return models


def null_evidence(scheme, key: Key, models: dict[str, nn.Module]) -> dict[str, Evidence]:
    """The scheme's evidence on each null model, with the key's nominal p0."""
    return {name: scheme.detect(model, key) for name, model in models.items()}


@dataclass(frozen=True)
class ClassifierSettings:
    """The classifier sections of a matrix config, checked: the clean models' architecture and training
    (``arch``, ``clean`` over :data:`CLEAN_TRAINING`), the null models' (``null_training`` over ``clean``)
    and which null models to train (``nulls``: ``archs`` x ``seeds`` seeds 1000.., plus one on the
    attacker's data with ``attacker_model``)."""

    arch: str
    clean: TrainConfig
    nulls: TrainConfig
    null_archs: tuple[str, ...]
    null_seeds: int
    attacker_model: bool


def _training(overrides: dict[str, Any]) -> TrainConfig:
    from ownmark.watermarks import apply_overrides

    return apply_overrides(CLEAN_TRAINING, overrides)


class Classifier(Family):
    """Classifiers: ``cnn2``, ``lenet``, ``resnet-s``, ``tv:NAME``, ``timm:NAME``; utility is test accuracy.

    Bench settings live at the top level of a matrix config: ``dataset``, ``arch``, ``clean`` (the
    clean models' training overrides), ``nulls`` (``archs``, ``seeds``, ``attacker_model``) and
    ``null_training``.
    """

    name = "classifier"
    description = "image classifiers: images in, class scores out (FCW, content, noise, unrelated, PTYNet)"
    serve_kinds = ("probs", "labels", "logits")
    utility_name = "test accuracy"
    default_arch = "cnn2"
    utility_key = "test_accuracy"
    utility_metric = "accuracy"
    metrics = ("accuracy",)
    utility_short = "acc"
    outputs = "classes"

    def archs(self) -> list[str]:
        from ownmark.models import MODELS

        return MODELS.names()

    def build(self, arch: str, in_channels: int, out_dim: int, image_size: int) -> nn.Module:
        from ownmark.models.classifier import build_classifier

        return build_classifier(arch, in_channels, out_dim, image_size)

    def spec(self, arch: str, data: Any, out_dim: int | None = None) -> ModelSpec:
        from ownmark.errors import ConfigError

        if out_dim is not None and out_dim != data.num_classes:
            raise ConfigError(f"a classifier of {data.name} has {data.num_classes} outputs, one per class; drop --dim")
        c, h, _ = data.shape
        return ModelSpec(arch, c, data.num_classes, h)

    def toy(self, seed: int = 0) -> tuple[nn.Module, Any]:
        from ownmark.data.toy import toy_images

        data = toy_images(seed)
        with cpu_seeded(seed):
            return self.spec("cnn2", data).build(), data

    def train_config(self, overrides: dict[str, str]) -> TrainConfig:
        return _training(overrides)

    def fit(self, arch: str, data: Any, *, seed: int, config: Any, engine: Any = None, checkpoint: Any = None,
            resume: bool = False, out_dim: int | None = None) -> nn.Module:  # fmt: skip
        spec = self.spec(arch, data, out_dim)
        return train_model(spec, data, seed=seed, config=config, engine=engine or Engine(), checkpoint=checkpoint,
                           resume=resume)  # fmt: skip

    def clean_name(self, seed: int) -> str:
        return f"clean-seed{seed}"  # the name of runs made before families existed

    def parse_settings(self, config: MatrixConfig) -> ClassifierSettings:
        from ownmark.errors import ConfigError

        section = config.nulls or {}
        unknown = set(section) - {"archs", "seeds", "attacker_model"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)} under `nulls`; known: archs, seeds, attacker_model")
        archs = section.get("archs", [config.arch])
        count = section.get("seeds", 0)
        if not isinstance(archs, (list, tuple)) or not archs or not all(isinstance(a, str) for a in archs):
            raise ConfigError(f"`nulls.archs` is a non-empty list of architectures, got {archs!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"`nulls.seeds` is how many seeds per architecture (an int >= 0), got {count!r}")
        clean, null_training = config.clean or {}, config.null_training or {}
        for name, overrides in (("clean", clean), ("null_training", null_training)):
            if not isinstance(overrides, dict):
                raise ConfigError(f"`{name}` is a mapping of training settings (epochs, lr, ...), got {overrides!r}")
        return ClassifierSettings(
            arch=config.arch, clean=_training(clean), nulls=_training({**clean, **null_training}),
            null_archs=tuple(archs), null_seeds=count, attacker_model=bool(section.get("attacker_model", False)),
        )  # fmt: skip

    def load(self, config: MatrixConfig) -> Context:
        return Context.load(config.dataset, config.split_seed)

    def rehearse(self, config: MatrixConfig, raw: dict[str, Any]) -> None:
        raw["clean"] = {**(config.clean or {}), "epochs": 1}
        raw["null_training"] = {**(config.null_training or {}), "epochs": 1}
        raw["nulls"] = {**(config.nulls or {}), "seeds": min(1, self.settings(config).null_seeds)}

    def clean_spec(self, config: MatrixConfig, seed: int) -> NullSpec:
        return NullSpec(self.clean_name(seed), self.name, config.arch, seed, "owner")

    def nulls(self, config: MatrixConfig) -> list[NullSpec]:
        s = self.settings(config)
        out = [NullSpec(f"{a}-seed{1000 + i}", self.name, a, 1000 + i, "owner")
               for a in s.null_archs for i in range(s.null_seeds)]  # fmt: skip
        if s.attacker_model:
            out.append(NullSpec(f"{s.null_archs[0]}-attacker-data", self.name, s.null_archs[0], 10_007, "attacker"))
        return out

    def train(self, data: Context, config: MatrixConfig, null: NullSpec, engine: Any) -> nn.Module:
        s = self.settings(config)
        # null models may train differently from the owner's (``null_training`` over ``clean``)
        training = s.clean if null.name == self.clean_name(null.seed) else s.nulls
        split = getattr(data.splits, null.split)
        return train_model(data.spec(null.arch), split, seed=null.seed, config=training, engine=engine)


FAMILIES.register("classifier")(Classifier())
