"""The error family of ownmark and the checks that raise it.

Every error a user can cause derives from :class:`OwnmarkError`; the CLI turns it into one red
line and exit code 1. Messages name the parameter, show what arrived, say what is accepted and,
where there is one, give the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class OwnmarkError(Exception):
    """Base of every error ownmark raises on purpose."""


class ConfigError(OwnmarkError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class ShapeError(OwnmarkError, ValueError):
    """A tensor does not have the shape a function expects."""


class UnknownNameError(OwnmarkError, LookupError):
    """A registry has no entry under the requested name."""


class RegistryError(OwnmarkError):
    """A name is registered twice."""


class KeyMismatchError(OwnmarkError, ValueError):
    """A watermark key does not fit the model it is used with."""


class IntegrityError(OwnmarkError, ValueError):
    """A saved file is corrupt, truncated, tampered with or of the wrong kind."""


class MissingFileError(OwnmarkError, FileNotFoundError):
    """A file the user named does not exist."""


class OutputPathError(OwnmarkError, OSError):
    """An output path cannot be written (under a file, in /proc, a folder where a file goes, ...)."""


class BudgetExhaustedError(OwnmarkError):
    """A query budget is spent."""


def require_positive(obj: Any, *names: str) -> None:
    """Raise ConfigError unless each named attribute of ``obj`` is a finite positive number."""
    for name in names:
        value = getattr(obj, name)
        if not _number(value) or not value > 0:
            raise ConfigError(f"{type(obj).__name__}.{name} must be a finite positive number, got {value!r}")


def require_non_negative(obj: Any, *names: str) -> None:
    """Raise ConfigError unless each named attribute of ``obj`` is a finite number >= 0."""
    for name in names:
        value = getattr(obj, name)
        if not _number(value) or not value >= 0:
            raise ConfigError(f"{type(obj).__name__}.{name} must be a finite number >= 0, got {value!r}")


def _number(value: Any) -> bool:
    """A finite int or float (not a bool, not inf or nan)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_in_range(
    obj: Any, name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    """Raise ConfigError unless ``obj.name`` lies in the interval from ``low`` to ``high``."""
    value = getattr(obj, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{type(obj).__name__}.{name} must lie in {interval}, got {value!r}")


def require_choice(obj: Any, name: str, choices: Sequence[Any]) -> None:
    """Raise ConfigError unless ``obj.name`` is one of ``choices``."""
    value = getattr(obj, name)
    if value not in choices:
        raise ConfigError(f"{type(obj).__name__}.{name} must be one of {list(choices)}, got {value!r}")


def check_same_shape(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """Raise ShapeError unless tensors ``a`` and ``b`` have the same shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; they must match"
        )


def check_images(name: str, x: Any, *, channels: int | None = None) -> None:
    """Raise ShapeError unless ``x`` is a float image batch (N, C, H, W) with ``channels``."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ShapeError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ShapeError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ShapeError(f"{name} has {x.shape[1]} channels, expected {channels}")
