"""The Python API in one place, re-exported by the package: ``import ownmark as om``.

Every unit is created by name, the way the CLI names it (``om.list_units("schemes")``), with a
preset and settings as keyword arguments; every model family goes through the same calls (the
family comes from the model or the key). Nothing here is new machinery: each function is a thin
front over the registries and the library, so a script and ``ownmark ...`` give the same results.

Example (the README's, at a toy size):
    >>> import ownmark as om
    >>> data = om.load_data("digits", split_seed=0)
    >>> clean = om.train("cnn2", data, seed=0, epochs=1)
    >>> scheme = om.create_scheme("fcw", n_verify=5, epochs=1)
    >>> marked, key = scheme.embed(clean, data.owner, seed=0)
    >>> om.verify(marked, key).test
    'randomization over decoy keys'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ownmark.errors import ConfigError

_REGISTRIES = {  # kind -> (module, registry): imported on first use
    "families": ("ownmark.families", "FAMILIES"),
    "metrics": ("ownmark.metrics", "METRICS"),
    "schemes": ("ownmark.watermarks", "WATERMARKS"),
    "attacks": ("ownmark.attacks", "ATTACKS"),
    "models": ("ownmark.models", "MODELS"),
    "encoders": ("ownmark.models", "ENCODERS"),
    "image2image": ("ownmark.models.image2image", "I2I_MODELS"),
    "datasets": ("ownmark.data", "DATASETS"),
}


UNIT_KINDS = tuple(_REGISTRIES)


def _registry(kind: str) -> Any:
    import importlib

    if kind not in _REGISTRIES:
        raise ConfigError(f"no kind of unit {kind!r}; known: {', '.join(UNIT_KINDS)}")
    module, name = _REGISTRIES[kind]
    return getattr(importlib.import_module(module), name)


def list_units(kind: str) -> list[str]:
    """Registered names of one kind: families, metrics, schemes, attacks, models, encoders, image2image or datasets.

    Example:
        >>> list_units("families")
        ['classifier', 'encoder', 'image2image']
    """
    return _registry(kind).names()


def _create(kind: str, name: str, preset: str | None, settings: dict[str, Any]) -> Any:
    from ownmark.watermarks import resolve_config

    cls = _registry(kind).get(name)
    return cls(resolve_config(cls, preset, settings))


def create_scheme(name: str, preset: str | None = None, **settings: Any) -> Any:
    """A watermarking scheme by name, from its default config or a preset, with settings changed.

    Example:
        >>> create_scheme("content", epochs=3).config.epochs
        3
    """
    return _create("schemes", name, preset, settings)


def create_attack(name: str, preset: str | None = None, **settings: Any) -> Any:
    """An attack by name (called as ``attack(model, data, seed=...)`` -> ``(model, cost)``)."""
    return _create("attacks", name, preset, settings)


def load_data(dataset: str | None = None, *, family: str = "classifier", split_seed: int = 0) -> Any:
    """Owner, attacker and test parts (``.owner``, ``.attacker``, ``.test``) of a dataset, split by
    ``split_seed``; for image-to-image, ``dataset`` names a task (``denoise``, ``deblur``, ``colourise``)."""
    from ownmark.families import FAMILIES

    fam = FAMILIES.get(family)
    return fam.load_splits(dataset or fam.default_dataset, split_seed)


def train(
    arch: str | None = None, data: Any = None, *, family: str | None = None, split: str = "owner", seed: int = 0,
    engine: Any = None, out_dim: int | None = None, **settings: Any,
) -> Any:  # fmt: skip
    """A fresh model of ``arch`` trained on one part of ``data`` (from :func:`load_data`) with the
    family's training config and ``settings`` changed (e.g. ``epochs=5``). The family is inferred from
    ``arch`` when it names one registry only; ``family`` says it otherwise."""
    from ownmark.families import FAMILIES

    fam = FAMILIES.get(family or _family_of_arch(arch))
    data = data if data is not None else load_data(family=fam.name)
    if split not in ("owner", "attacker"):
        raise ConfigError(f"split must be owner or attacker, got {split!r}")
    config = fam.train_config(settings)
    return fam.fit(arch or fam.default_arch, getattr(data, split), seed=seed, config=config, engine=engine,
                   out_dim=out_dim)  # fmt: skip


def _family_of_arch(arch: str | None) -> str:
    from ownmark.families import FAMILIES

    owners = [name for name in FAMILIES.names() if arch is not None and FAMILIES.get(name).owns_arch(arch)]
    return owners[0] if len(owners) == 1 else "classifier"  # tv:/timm: names are classifiers unless told


def utility(model: Any, data: Any) -> float:
    """The model's utility on ``data``'s test part, as its family measures it (accuracy, linear probe, SSIM)."""
    from ownmark.families import family_of

    return family_of(model).utility(model, data)


def load_model(path: str | Path) -> Any:
    """An ownmark model of any family from its artefact (the manifest says which); digest-checked."""
    from ownmark.models import load_model as load

    return load(path)[0]


def save_model(path: str | Path, model: Any, **info: Any) -> str:
    """Save a model atomically (safetensors + manifest); returns its sha256."""
    from ownmark.models import save_model as save

    return save(path, model, info=info or None)


def load_key(path: str | Path) -> Any:
    """A key saved by ``ownmark embed`` or :func:`save_key`; an edited key is refused."""
    from ownmark.io import load_key as load

    return load(path)


def save_key(path: str | Path, key: Any) -> str:
    """Save a key atomically; returns the digest to publish as a commitment."""
    from ownmark.io import save_key as save

    return save(path, key)


def evidence(suspect: Any, key: Any, *, blackbox: bool | None = None) -> Any:
    """The key's scheme's evidence on ``suspect`` (a model, a served API or an answer function).

    Schemes with a black-box test of downstream models (AWEncoder) use it when ``blackbox`` is True,
    or when it is None and the suspect is an ownmark model of another family than the scheme's.
    """
    from ownmark.watermarks import WATERMARKS

    scheme = WATERMARKS.get(key.scheme)()
    if blackbox is None:
        family = getattr(getattr(suspect, "spec", None), "family", None)
        blackbox = family is not None and family != getattr(scheme, "family", "classifier")
    if blackbox:
        if not hasattr(scheme, "detect_blackbox"):
            raise ConfigError(f"{key.scheme} has no black-box test of downstream models; verify the model itself")
        return scheme.detect_blackbox(suspect, key)
    return scheme.detect(suspect, key)


def verify(suspect: Any, key: Any, *, alpha: float = 0.01, blackbox: bool | None = None) -> Any:
    """A :class:`~ownmark.verify.Verdict` on ``suspect`` against ``key`` at level ``alpha``."""
    from ownmark.verify import check_alpha, decide

    check_alpha(alpha)
    return decide(evidence(suspect, key, blackbox=blackbox), alpha)


__all__ = [
    "create_attack", "create_scheme", "evidence", "list_units", "load_data", "load_key", "load_model", "save_key",
    "save_model", "train", "utility", "verify",
]  # fmt: skip
