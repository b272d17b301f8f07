"""Architecture registry and model storage."""

from ownmark.models import image2image  # noqa: F401  (registers the image2image family)
from ownmark.models.classifier import MODELS, SmallResNet, build_classifier
from ownmark.models.encoder import ENCODERS, build_encoder, encode, load_encoder
from ownmark.models.layout import cpu_channels_last
from ownmark.models.store import ModelSpec, clone_model, count_parameters, load_model, save_model, spec_of

__all__ = [
    "ENCODERS", "MODELS", "ModelSpec", "SmallResNet", "build_classifier", "build_encoder", "clone_model",
    "count_parameters", "cpu_channels_last", "encode", "load_encoder", "load_model", "save_model", "spec_of",
]  # fmt: skip
