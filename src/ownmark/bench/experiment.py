"""The pieces every experiment repeats: the data context, clean training, null models."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ownmark.core import Evidence, Key
from ownmark.data import ImageSet, Splits, load_dataset, make_splits
from ownmark.models import ModelSpec
from ownmark.train import Engine, TrainConfig, fit, key_seed

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
