"""Bring your own architecture: ``pkg.module:factory`` names a function that builds the nn.Module.

A user's model (with its own preprocessing, e.g. input normalisation inside a wrapper) is built by
``factory(in_channels, num_classes, image_size)``, or by ``factory()`` when it takes no arguments;
its weights travel as safetensors like every ownmark model, and the manifest records the import
path as the architecture, so a marked or attacked copy loads again by the same path.

Loading runs code: a manifest naming ``pkg.module:factory`` makes ownmark import that module and
call that function. A path is therefore built only once it is trusted for this process: named by
the user on the command line (``--arch``, ``--trust-arch``), listed in the environment variable
``OWNMARK_TRUSTED_ARCH`` (comma-separated), or passed to :func:`trust`. A model file from elsewhere
that names untrusted code is refused with a one-line error before anything is imported.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re

from torch import nn

from ownmark.errors import ConfigError, IntegrityError

_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$")
_TRUSTED: set[str] = set()


def is_user_arch(arch: str) -> bool:
    """Whether ``arch`` is an import path ``pkg.module:factory`` (not ``tv:NAME`` / ``timm:NAME``)."""
    return bool(_PATH.match(arch)) and not arch.startswith(("tv:", "timm:"))


def trust(arch: str) -> None:
    """Allow this process to import and call ``arch`` (``pkg.module:factory``)."""
    if not is_user_arch(arch):
        raise ConfigError(f"{arch!r} is not an import path pkg.module:factory")
    _TRUSTED.add(arch)


def trusted(arch: str) -> bool:
    env = {a.strip() for a in os.environ.get("OWNMARK_TRUSTED_ARCH", "").split(",") if a.strip()}
    return arch in _TRUSTED or arch in env


def build_user(arch: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The module ``arch``'s factory builds, checked to be an nn.Module; refused unless trusted.

    Example:
        >>> trust("ownmark.models.classifier:lenet")
        >>> type(build_user("ownmark.models.classifier:lenet", 1, 10, 28)).__name__
        'Sequential'
    """
    if not trusted(arch):
        raise IntegrityError(
            f"this model's architecture is user code {arch!r}: loading it imports and runs that code; if you trust "
            f"it, pass --trust-arch {arch} (or set OWNMARK_TRUSTED_ARCH={arch})"
        )
    module_name, _, factory_name = arch.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), factory_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot import {arch!r} ({err}); is the package installed or on PYTHONPATH?") from None
    try:
        takes_args = bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        takes_args = True
    model = factory(in_channels, num_classes, image_size) if takes_args else factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{arch} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
