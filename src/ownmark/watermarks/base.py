"""What every watermarking scheme shares: the registry; presets and overrides are :mod:`ownmark.config`,
the scheme protocol :class:`ownmark.types.Scheme` (both re-exported here for the schemes' imports)."""

from __future__ import annotations

from ownmark.config import Preset, apply_overrides, config_dict, parse_value, resolve_config
from ownmark.registry import Registry
from ownmark.types import Scheme

WATERMARKS: Registry = Registry("watermark scheme")

__all__ = ["WATERMARKS", "Preset", "Scheme", "apply_overrides", "config_dict", "parse_value", "resolve_config"]
