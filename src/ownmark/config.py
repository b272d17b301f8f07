"""Unit configurations: presets, ``--set key=value`` overrides parsed to each field's type, JSON form.

Every scheme, attack and training config is a frozen dataclass; a unit class names its
``config_class`` and its ``presets`` (name -> :class:`Preset`). These functions build a config from
a preset and overrides the way the CLI (``--preset``, ``--set``) and the API (keyword arguments) do.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ownmark.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Preset:
    """A named configuration and where its numbers come from."""

    config: Any
    source: str


def resolve_config(scheme_cls: Any, preset: str | None = None, overrides: dict[str, str] | None = None) -> Any:
    """The unit's default config, or a preset, with ``key=value`` overrides applied.

    Values are parsed to the type of the field they replace (int, float, bool, str, tuple).
    """
    presets = getattr(scheme_cls, "presets", {})
    if preset is None or preset == "default":
        config = scheme_cls.config_class()
    elif preset in presets:
        config = presets[preset].config
    else:
        known = ", ".join(["default", *sorted(presets)])
        raise UnknownNameError(f"{scheme_cls.__name__} has no preset {preset!r}; known: {known}")
    return apply_overrides(config, overrides or {})


def apply_overrides(config: Any, overrides: dict[str, str]) -> Any:
    """``dataclasses.replace`` with string values parsed to each field's current type."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for name, raw in overrides.items():
        if name not in fields:
            raise ConfigError(f"{type(config).__name__} has no setting {name!r}; settings: {', '.join(fields)}")
        changes[name] = parse_value(type(config).__name__, name, raw, getattr(config, name))
    return dataclasses.replace(config, **changes)


def parse_value(owner: str, name: str, raw: Any, current: Any) -> Any:
    """Parse ``raw`` (a string from the command line) to the type of ``current``."""
    if not isinstance(raw, str):
        return tuple(raw) if isinstance(current, tuple) and isinstance(raw, list) else raw
    text = raw.strip()
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, int) or (current is None and text.lstrip("-").isdigit()):
            return int(text)
        if isinstance(current, float):
            return _finite(owner, name, float(text))
        if isinstance(current, tuple):
            return tuple(_finite(owner, name, float(v)) for v in text.strip("()[]").split(",") if v.strip())
        if current is None and text.lower() == "none":
            return None
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"{owner}.{name} expects a value of type {type(current).__name__}, got {raw!r}") from None
    return text


def _finite(owner: str, name: str, value: float) -> float:
    """``value`` unless it is inf or nan, which no setting of ownmark accepts (``lr=inf`` trains to chance)."""
    if not math.isfinite(value):
        raise ConfigError(f"{owner}.{name} must be a finite number, got {value}; give a number such as 0.01")
    return value


def config_dict(config: Any) -> dict[str, Any]:
    """A config as a JSON-able dict."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
