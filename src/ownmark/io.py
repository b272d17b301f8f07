"""Safe saving and loading of models, keys and results.

Tensors go to ``NAME.safetensors``, facts to ``NAME.json`` beside it. The manifest records the
kind of artefact, its config, library versions and a SHA-256 digest of the tensors (names,
dtypes, shapes and bytes in name order), so a tampered or swapped file is refused on load. A key's
digest also covers its scheme, config and meta (everything that decides a verdict: the number of
classes, null rates, margins), so it is a commitment an owner can publish at embedding time: an edit
of any byte that could change a verdict is refused on load. Every write goes to a
temporary file in the same folder and is renamed into place, so a crash never leaves half a file.
Nothing is unpickled: tensors load through safetensors, checkpoints through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ownmark.core import Key
from ownmark.errors import IntegrityError, MissingFileError, OutputPathError

FORMAT_VERSION = 1


def atomic_write_bytes(path: str | Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    The file is readable by the group and others as the umask allows (0644 under the usual umask
    022), like any file a tool writes; ``private=True`` makes it 0600 (watermark keys: the secret).

    Raises:
        OutputPathError: the folder cannot be made or written (a file in its place, no permission,
            a full disk); nothing is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputPathError(
            f"cannot write {path}: {err.strerror or err}; choose a path in a folder you can write"
        ) from None
    try:
        os.fchmod(fd, 0o600 if private else 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, OutputPathError):
            raise OutputPathError(
                f"cannot write {path}: {err.strerror or err}; free space or choose another path"
            ) from None
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str, *, private: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``private``: mode 0600)."""
    atomic_write_bytes(path, text.encode("utf-8"), private=private)


def save_json(path: str | Path, obj: Any, *, private: bool = False) -> None:
    """Write ``obj`` as indented JSON, atomically (``private``: mode 0600)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n", private=private)


def load_json(path: str | Path) -> Any:
    """Read JSON, with a one-line error for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no such file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IntegrityError(f"{path} is not valid JSON ({err}); the file is corrupt or truncated") from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no spaces, tuples as lists (stable across a save/load)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable, allow_nan=True).encode("utf-8")


def bound_digest(tensors: Mapping[str, torch.Tensor], bound: Mapping[str, Any] | None) -> str:
    """SHA-256 over the tensors' digest and the canonical JSON of ``bound`` (None: the tensors alone).

    Example:
        >>> t = {"x": torch.zeros(2)}
        >>> bound_digest(t, {"meta": {"num_classes": 10}}) != bound_digest(t, {"meta": {"num_classes": 1000}})
        True
    """
    base = tensor_digest(tensors)
    if bound is None:
        return base
    return hashlib.sha256(
        b"ownmark-bound-digest-v2\n" + base.encode() + b"\n" + canonical_json(dict(bound))
    ).hexdigest()


def key_digest(key: Key) -> str:
    """The commitment of a key: its tensors, scheme, config and meta.

    Example:
        >>> k = Key("fcw", {"n": 1}, {"x": torch.zeros(2)}, {"num_classes": 10})
        >>> key_digest(k) == key_digest(Key("fcw", {"n": 1}, {"x": torch.zeros(2)}, {"num_classes": 10}))
        True
        >>> key_digest(k) == key_digest(Key("fcw", {"n": 1}, {"x": torch.zeros(2)}, {"num_classes": 1000}))
        False
    """
    return bound_digest(key.tensors, _key_bound(key.scheme, key.config, key.meta))


def _key_bound(scheme: Any, config: Any, meta: Any) -> dict[str, Any]:
    return {"scheme": scheme, "config": config, "meta": meta}


def versions() -> dict[str, str]:
    """Versions of the libraries an artefact depends on."""
    from ownmark import __version__

    return {"ownmark": __version__, "torch": torch.__version__, "python": platform.python_version()}


def artefact_paths(path: str | Path) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for a path given with or without either suffix."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], kind: str, info: Mapping[str, Any],
    *, bound: Mapping[str, Any] | None = None, private: bool = False,
) -> str:  # fmt: skip
    """Save ``tensors`` and a manifest of ``kind`` with ``info``; return the digest.

    The digest covers the tensors and, when given, the JSON values in ``bound`` (which must also be
    in ``info``), so editing them in the manifest is refused on load. The tensors file is written
    first and the manifest last, so a manifest on disk always names a complete tensors file.
    ``private=True`` writes both with mode 0600 (keys).
    """
    st_path, js_path = artefact_paths(path)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    digest = bound_digest(clean, bound)
    atomic_write_bytes(st_path, st_save(clean), private=private)
    manifest = {"format": FORMAT_VERSION, "kind": kind, "sha256": digest, "versions": versions(), **info}
    save_json(js_path, manifest, private=private)
    return digest


def load_tensors(
    path: str | Path, kind: str, *, bound: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors and manifest saved by :func:`save_tensors`, checking kind and digest.

    ``bound`` picks, from the manifest, the values the digest was bound to at saving.
    """
    st_path, js_path = artefact_paths(path)
    for p in (st_path, js_path):
        if not p.is_file():
            raise MissingFileError(
                f"no such file: {p} (an ownmark {kind} is a .safetensors file with a .json manifest beside it)"
            )
    manifest = load_json(js_path)
    if not isinstance(manifest, dict) or "sha256" not in manifest or "kind" not in manifest:
        raise IntegrityError(f"{js_path} is not an ownmark manifest (no kind or sha256 field)")
    if manifest["kind"] != kind:
        raise IntegrityError(f"{st_path} holds a {manifest['kind']}, not a {kind}; pass a {kind} file")
    try:
        tensors = st_load(st_path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OSError) as err:
        raise IntegrityError(
            f"{st_path} is corrupt or truncated ({str(err).splitlines()[0]}); restore it from a backup"
        ) from None
    if bound is not None:
        if manifest.get("digest_covers") != "tensors+scheme+config+meta":
            raise IntegrityError(
                f"{js_path} was saved by an older ownmark whose digest covers the tensors only; its config and meta "
                "could have been edited unseen: embed again to get a key whose commitment covers every byte"
            )
        if bound_digest(tensors, bound(manifest)) != manifest["sha256"]:
            raise IntegrityError(
                f"{st_path} and its manifest do not match their SHA-256 digest (the key's commitment): the tensors, "
                "scheme, config or meta were changed after saving; restore the key as saved at embedding"
            )
    elif tensor_digest(tensors) != manifest["sha256"]:
        raise IntegrityError(
            f"{st_path} does not match the SHA-256 digest in its manifest: the file was changed after saving"
        )
    return tensors, manifest


def save_key(path: str | Path, key: Key) -> str:
    """Save a watermark key (mode 0600: it is the owner's secret); return its digest.

    The digest is a commitment to the tensors, scheme, config and meta.
    """
    bound = _key_bound(key.scheme, key.config, key.meta)
    info = {**bound, "digest_covers": "tensors+scheme+config+meta"}
    return save_tensors(path, key.tensors, "key", info, bound=bound, private=True)


def load_key(path: str | Path) -> Key:
    """Load a key saved by :func:`save_key`, refusing tampered, truncated or edited files."""
    tensors, manifest = load_tensors(
        path, "key", bound=lambda m: _key_bound(m.get("scheme"), m.get("config", {}), m.get("meta", {}))
    )
    return Key(manifest["scheme"], manifest.get("config", {}), tensors, manifest.get("meta", {}))


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Save a training checkpoint (tensors and plain values) atomically."""
    import io as _io

    buffer = _io.BytesIO()
    torch.save(dict(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a bad file
        raise IntegrityError(
            f"{path} is not a readable checkpoint ({type(err).__name__}); delete it to start over"
        ) from None
