"""What the matrix does differently per model family: clean models, utility, null models.

One matrix holds classifier and encoder schemes side by side (a scheme's family is its class's
``family``). Classifier rows measure utility as clean test accuracy and are checked against
independently trained classifiers. Encoder rows (AWEncoder) measure utility as the linear-probe
accuracy of frozen features (a linear classifier fitted on the attacker's labelled split, scored
on the test split). Their verdict is the key's rank among its decoy keys, which needs no null
model; each key is still calibrated on >= 5 independently pre-trained encoders
(``calibration``), whose margin tau and null flip rates are reported beside the verdict, never
decided on, while the null rows use other encoders (``nulls``: other seeds, SSL methods,
architectures, the attacker's data) that never set the margin. Image-to-image rows (deep output
watermarking) run on the bundled photo-patch task of the ``image2image`` section (owner,
attacker and test pairs of ``ownmark.data.image2image.load_task``): utility is the SSIM of the
model's outputs against the ground truth on the test pairs, the attacks are surrogates and
output perturbations, and the nulls are targets trained independently (other seeds,
architectures, the attacker's pairs). ``ownmark i2i bench`` measures the same scheme in more
depth (both forms, fidelity, latency, the strength sweep).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ownmark.errors import ConfigError

MATRIX_FAMILIES = ("classifier", "encoder", "image2image")
ENCODER_DEFAULTS: dict[str, Any] = {
    "arch": "conv4",
    "dim": 128,
    "ssl": {},  # SSLConfig overrides for the clean and null encoders (default SimCLR, 10 epochs)
    "calibration": [["conv4", "simclr", s] for s in (101, 102, 103, 104, 105)],
    "nulls": [
        ["conv4", "simclr", 201, "attacker"], ["conv4", "simclr", 202, "attacker"], ["conv4", "moco", 203, "attacker"],
        ["conv4", "byol", 204, "attacker"], ["resnet-s", "simclr", 205, "attacker"],
    ],
    # every null encoder is also verified after downstream fine-tuning (enc-finetune, Adam) at these
    # rates, and keys are calibrated on their calibration nulls so adapted: a suspect met in the wild
    # is adapted, and so must be the negative controls
    "adapt_lrs": [0.001, 0.01],
}  # fmt: skip
ENCODER_KEYS = frozenset(ENCODER_DEFAULTS)
I2I_DEFAULTS: dict[str, Any] = {
    "task": "deblur",
    "arch": "encdec",
    "epochs": 10,  # the target's training epochs (the i2i bench's CPU preset)
    "nulls": [["encdec", 301, "owner"], ["unet", 302, "owner"], ["resnet-i2i", 303, "attacker"]],
}
I2I_KEYS = frozenset(I2I_DEFAULTS)


@dataclass(frozen=True)
class NullSpec:
    """One independently trained model the matrix verifies every key of its family with."""

    name: str
    family: str
    arch: str
    seed: int
    split: str  # "owner" or "attacker"
    method: str = ""  # the SSL method of a null encoder


def scheme_class(schemes: dict[str, Any], label: str) -> type:
    """The watermark class behind a matrix scheme label (``{"scheme": name}`` aliases one)."""
    from ownmark.watermarks import WATERMARKS

    spec = schemes[label] or {}
    return WATERMARKS.get(spec.get("scheme", label))


def scheme_family(schemes: dict[str, Any], label: str) -> str:
    return getattr(scheme_class(schemes, label), "family", "classifier")


def attack_families(spec: dict[str, Any]) -> tuple[str, ...]:
    """The families an attack entry runs on: its ``families``, else its class's ``applies_to``
    when that names a family, else classifiers (the classifier attacks need a label head)."""
    if "families" in spec:
        return tuple(spec["families"])
    if spec["name"] == "none":
        return MATRIX_FAMILIES
    from ownmark.attacks import ATTACKS

    applies = getattr(ATTACKS.get(spec["name"]), "applies_to", "any")
    return (applies,) if applies in MATRIX_FAMILIES else ("classifier",)


def encoder_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """The matrix's ``encoder`` section over its defaults, checked."""
    unknown = set(raw) - ENCODER_KEYS
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} under `encoder`; known: {sorted(ENCODER_KEYS)}")
    out = {**ENCODER_DEFAULTS, **raw}
    if len(out["calibration"]) < 5:
        raise ConfigError(
            f"`encoder.calibration` needs >= 5 null encoders [arch, method, seed], got {out['calibration']}"
        )
    for entry in out["calibration"]:
        if len(entry) != 3:
            raise ConfigError(f"each `encoder.calibration` entry is [arch, SSL method, seed], got {entry!r}")
    if not all(isinstance(lr, (int, float)) and lr > 0 for lr in out["adapt_lrs"]):
        raise ConfigError(f"`encoder.adapt_lrs` is a list of positive learning rates, got {out['adapt_lrs']!r}")
    for entry in out["nulls"]:
        if len(entry) != 4 or entry[3] not in ("owner", "attacker"):
            raise ConfigError(f"each `encoder.nulls` entry is [arch, SSL method, seed, owner|attacker], got {entry!r}")
    return out


def encoder_nulls(raw: dict[str, Any]) -> list[NullSpec]:
    cfg = encoder_settings(raw)
    return [NullSpec(f"enc-{a}-{m}-seed{s}" + ("-attacker-data" if split == "attacker" else ""), "encoder", a, s,
                     split, m) for a, m, s, split in cfg["nulls"]]  # fmt: skip


def calibration_nulls(raw: dict[str, Any]) -> list[NullSpec]:
    cfg = encoder_settings(raw)
    return [NullSpec(f"calib-{a}-{m}-seed{s}", "encoder", a, s, "owner", m) for a, m, s in cfg["calibration"]]


def i2i_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """The matrix's ``image2image`` section over its defaults, checked."""
    from ownmark.data.image2image import TASKS
    from ownmark.models.image2image import I2I_MODELS

    unknown = set(raw) - I2I_KEYS
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} under `image2image`; known: {sorted(I2I_KEYS)}")
    out = {**I2I_DEFAULTS, **raw}
    TASKS.get(out["task"])
    I2I_MODELS.get(out["arch"])
    for entry in out["nulls"]:
        if len(entry) != 3 or entry[2] not in ("owner", "attacker"):
            raise ConfigError(f"each `image2image.nulls` entry is [arch, seed, owner|attacker], got {entry!r}")
        I2I_MODELS.get(entry[0])
    return out


def i2i_nulls(raw: dict[str, Any]) -> list[NullSpec]:
    cfg = i2i_settings(raw)
    return [NullSpec(f"i2i-{a}-seed{s}" + ("-attacker-data" if split == "attacker" else ""), "image2image", a, s,
                     split) for a, s, split in cfg["nulls"]]  # fmt: skip


def i2i_splits(raw: dict[str, Any], split_seed: int) -> Any:
    """Owner / attacker / test pairs of the configured task."""
    from ownmark.data.image2image import load_task

    return load_task(i2i_settings(raw)["task"], split_seed=split_seed)


def train_i2i(splits: Any, raw: dict[str, Any], arch: str, seed: int, split: str) -> nn.Module:
    """An image-to-image model of ``arch`` trained on the owner's or the attacker's pairs."""
    from ownmark.models import ModelSpec
    from ownmark.train.image2image import I2ITrainConfig, fit_i2i, seeded

    pairs = splits.owner if split == "owner" else splits.attacker
    c, size = pairs.x.shape[1], pairs.x.shape[-1]
    spec = ModelSpec(arch, c, pairs.y.shape[1], size, family="image2image")
    model = seeded(spec.build, seed)
    fit_i2i(model, pairs.x, pairs.y, I2ITrainConfig(epochs=int(i2i_settings(raw)["epochs"])), seed=seed)
    return model.eval()


def clean_name(family: str, seed: int) -> str:
    """Artefact name of a seed's clean model (classifiers keep the original name)."""
    return f"clean-seed{seed}" if family == "classifier" else f"clean-{family}-seed{seed}"


def train_encoder(ctx: Any, raw: dict[str, Any], arch: str, method: str, seed: int, split: str, engine) -> nn.Module:
    """An encoder of ``arch`` pre-trained with ``method`` on the owner's or the attacker's split."""
    import torch

    from ownmark.models import ModelSpec
    from ownmark.train import key_seed
    from ownmark.train.ssl import SSLConfig, pretrain

    cfg = encoder_settings(raw)
    data = ctx.splits.owner if split == "owner" else ctx.splits.attacker
    c, h, _ = data.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(key_seed(seed, 3))
        encoder = ModelSpec(arch, c, int(cfg["dim"]), h, family="encoder").build()
    pretrain(encoder, data, SSLConfig(**{**cfg["ssl"], "method": method}), seed=seed, engine=engine)
    return encoder.eval()


def utility(family: str, model: nn.Module, ctx: Any) -> float:
    """Test accuracy (classifiers), linear-probe accuracy of frozen features (encoders), or the SSIM of
    outputs against the ground truth on the test pairs (image-to-image)."""
    if family == "image2image":
        from ownmark.train.image2image import predict
        from ownmark.verify.metrics import ssim

        return ssim(predict(model, ctx.splits.test.x), ctx.splits.test.y)
    if family == "encoder":
        from ownmark.train.probe import linear_probe

        return linear_probe(model, ctx.splits.attacker, ctx.splits.test, seed=0).accuracy
    from ownmark.train import accuracy

    return accuracy(model, ctx.splits.test)
