"""Gather what a report needs from a bench work folder: rows and example triggers."""

from __future__ import annotations

from pathlib import Path

import torch

from ownmark.errors import MissingFileError


def example_triggers(workdir: Path) -> dict[str, torch.Tensor]:
    """The first verification triggers of each scheme's seed-0 (or first) key."""
    from ownmark.io import load_key

    examples: dict[str, torch.Tensor] = {}
    for manifest in sorted((workdir / "models").glob("*-key.json")):
        key = load_key(manifest.with_suffix(""))
        if key.scheme not in examples and "verify_x" in key.tensors:
            examples[key.scheme] = key.tensors["verify_x"][:8]
    return examples


def write_report(workdir: str | Path, out: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` for the results in ``workdir``."""
    from ownmark.bench.report import render_report
    from ownmark.bench.store import ResultStore

    workdir = Path(workdir)
    if not (workdir / "results.sqlite").is_file():
        raise MissingFileError(f"no results.sqlite in {workdir}; run `ownmark bench run --workdir {workdir}` first")
    store = ResultStore(workdir / "results.sqlite")
    return render_report(store.rows("cell"), store.rows("null"), Path(out), examples=example_triggers(workdir))
