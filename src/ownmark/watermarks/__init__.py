"""Watermarking schemes; importing this package registers every scheme."""

from ownmark.watermarks import awencoder, baselines, deepwm, fcw, ptynet  # noqa: F401  (registers)
from ownmark.watermarks.base import WATERMARKS, Preset, Scheme, apply_overrides, config_dict, resolve_config

__all__ = ["WATERMARKS", "Preset", "Scheme", "apply_overrides", "config_dict", "resolve_config"]
