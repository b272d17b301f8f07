"""Models on disk: weights as safetensors, the architecture and config as a JSON manifest.

An :class:`~ownmark.models.injected.InjectedModel` (a target with a proprietary watermark net at
its output) is one artefact too: its manifest holds the target's spec as ``spec`` and, under
``injected``, the proprietary net's spec, the watermark classes' target labels and alpha.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ownmark.errors import ConfigError, IntegrityError
from ownmark.io import load_tensors, save_tensors
from ownmark.models.injected import InjectedModel


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a model: family, architecture name and the shape of its data.

    ``num_classes`` is the model's output size: classes for a classifier, the feature dimension
    for an encoder, output channels for an image-to-image network (``out_dim`` names it neutrally).
    """

    arch: str
    in_channels: int
    num_classes: int
    image_size: int
    family: str = "classifier"

    def __post_init__(self) -> None:
        from ownmark.families import FAMILIES  # the families import models: resolved at use

        if self.family not in FAMILIES:
            raise ConfigError(f"ModelSpec.family must be one of {FAMILIES.names()}, got {self.family!r}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def out_dim(self) -> int:
        return self.num_classes

    def build(self) -> nn.Module:
        """A fresh, untrained model of this spec, with the spec attached as ``model.spec``."""
        from ownmark.families import FAMILIES

        model = FAMILIES.get(self.family).build(self.arch, self.in_channels, self.num_classes, self.image_size)
        model.spec = self  # type: ignore[assignment]
        return model


def spec_of(model: nn.Module) -> ModelSpec:
    """The spec attached to a model built by ownmark (raises IntegrityError for foreign models)."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, ModelSpec):
        raise IntegrityError("this model carries no ownmark ModelSpec; build it with ModelSpec(...).build()")
    return spec


def save_model(path: str | Path, model: nn.Module, *, info: dict[str, Any] | None = None) -> str:
    """Save a model built from a ModelSpec; ``info`` (config, provenance) goes into the manifest.

    An InjectedModel is saved whole: both parts' weights in one safetensors file.
    """
    spec = spec_of(model)
    manifest: dict[str, Any] = {"spec": asdict(spec), "info": info or {}}
    if isinstance(model, InjectedModel):
        manifest["injected"] = {
            "proprietary": asdict(spec_of(model.proprietary)), "targets": model.targets, "alpha": float(model.alpha),
        }  # fmt: skip
    return save_tensors(path, model.state_dict(), "model", manifest)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model saved by :func:`save_model`; returns it in eval mode with its manifest."""
    tensors, manifest = load_tensors(path, "model")
    try:
        spec = ModelSpec(**manifest["spec"])
    except (KeyError, TypeError, ConfigError) as err:
        raise IntegrityError(f"the manifest of {path} has no valid model spec ({err})") from None
    model = spec.build() if "injected" not in manifest else _build_injected(path, spec, manifest["injected"])
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise IntegrityError(
            f"{path} does not fit architecture {spec.arch!r} {spec.input_shape} with {spec.num_classes} classes: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}"
        )
    model.load_state_dict(tensors)
    return model.eval(), manifest


def _build_injected(path: str | Path, spec: ModelSpec, injected: Any) -> InjectedModel:
    """An untrained InjectedModel of the shape a manifest's ``injected`` entry describes."""
    try:
        proprietary = ModelSpec(**injected["proprietary"])
        targets, alpha = [int(t) for t in injected["targets"]], float(injected["alpha"])
        return InjectedModel(spec.build(), proprietary.build(), targets, alpha, spec.num_classes)
    except (KeyError, TypeError, ValueError) as err:  # ConfigError is a ValueError too
        raise IntegrityError(f"the manifest of {path} has no valid injected-model entry ({err})") from None


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy that keeps the attached spec."""
    import copy

    return copy.deepcopy(model)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
