"""Checks on the paths a command will write, made before any work starts.

A command that trains for minutes and then cannot save its result has lost the user's time; so every
CLI command checks its output paths first. :func:`check_writable` refuses, with one line that names the
option and the fix: a path under an existing file (``--out model.safetensors/x``), a path in a kernel
file system (/proc, /sys, /dev), a folder where a file is expected (or the reverse), and a parent folder
that exists but cannot be written.
"""

from __future__ import annotations

import os
from pathlib import Path

from ownmark.errors import OutputPathError

SYSTEM_ROOTS = ("/proc", "/sys", "/dev")
KINDS = ("file", "folder", "prefix")


def check_writable(path: str | Path, option: str, kind: str = "file") -> Path:
    """Raise OutputPathError unless ownmark can write ``path`` as ``kind``; return it as a Path.

    ``kind`` is ``file`` (one file is written at the path), ``folder`` (files are written inside it)
    or ``prefix`` (files named ``PATH.safetensors`` and ``PATH.json`` are written beside it).

    Example:
        >>> check_writable("/proc/x", "--out")
        Traceback (most recent call last):
        ...
        ownmark.errors.OutputPathError: --out /proc/x lies in /proc, a kernel file system; write under a folder of yours
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    for root in SYSTEM_ROOTS:
        if absolute == Path(root) or Path(root) in absolute.parents:
            raise OutputPathError(
                f"{option} {path} lies in {root}, a kernel file system; write under a folder of yours"
            )
    if kind == "folder" and path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path} is a file but names a folder to write into; choose a folder path")
    if kind == "file" and path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder but names a file to write; add a file name")
    if kind == "prefix" and path.is_dir():
        raise OutputPathError(
            f"{option} {path} is a folder; give a file name such as {path / 'model'} (NAME.safetensors + NAME.json)"
        )
    parent = absolute if kind == "folder" else absolute.parent
    while not parent.exists():  # the first existing ancestor decides
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(
            f"{option} {path} lies under {parent}, which is a file, not a folder; choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {path}: the folder {parent} is not writable; choose a folder you can write")
    return path
