"""The null-model step of a plan, shared by the bench's null rows and ``ownmark calibrate``.

A null model is made without the owner's secret (a :class:`~ownmark.families.NullSpec` of the plan's family:
another seed, architecture or SSL method, the attacker's data); a suspect met in the wild is adapted, so
each null model is verified together with its family's adapted variants (encoders: fine-tuned downstream).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from ownmark.bench.plan import MatrixConfig
    from ownmark.families import NullSpec


def train_null(config: MatrixConfig, null: NullSpec, engine: Any, data: Any = None) -> dict[str, nn.Module]:
    """The model ``null`` describes, trained on its split, and its family's adapted variants, by name."""
    from ownmark.families import FAMILIES

    family = FAMILIES.get(null.family)
    data = family.load(config) if data is None else data
    model = family.train(data, config, null, engine)
    return {null.name: model, **family.adapted(null.name, model, data, config, null.seed)}


def calibration_plan(scheme: str, dataset: str | None, split_seed: int, *, archs: list[str], seeds: int,
                     accelerator: str = "cpu") -> MatrixConfig:  # fmt: skip
    """The plan whose null models calibrate a key of ``scheme`` (what ``ownmark calibrate`` trains): the
    classifier nulls ``archs`` x ``seeds`` (+ one on the attacker's data), or the null models another family
    names by default (encoders: other seeds, SSL methods and architectures; image-to-image: other targets)."""
    from ownmark.bench.plan import MatrixConfig
    from ownmark.families import FAMILIES
    from ownmark.watermarks import WATERMARKS

    family = FAMILIES.get(getattr(WATERMARKS.get(scheme), "family", "classifier"))
    raw = {
        "name": "calibrate", "schemes": {scheme: {}}, "accelerator": accelerator,
        "nulls": {"archs": archs, "seeds": seeds, "attacker_model": True},
        **family.plan_data(dataset or family.default_dataset, split_seed),
    }  # fmt: skip
    return MatrixConfig.from_dict(raw)
