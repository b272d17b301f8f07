"""Reports: the matrix report (Markdown + HTML), the studies' reports, and the only writer of BENCHMARKS.md
(:func:`publish`)."""

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
    from ownmark.bench.report.matrix import render_report
    from ownmark.bench.store import ResultStore

    workdir = Path(workdir)
    if not (workdir / "results.sqlite").is_file():
        raise MissingFileError(f"no results.sqlite in {workdir}; run `ownmark bench run --workdir {workdir}` first")
    store = ResultStore(workdir / "results.sqlite")
    return render_report(store.rows("cell"), store.rows("null"), Path(out), examples=example_triggers(workdir))


def publish(path: str | Path, name: str, text: str) -> Path:
    """Write ``text`` as the section ``name`` of the benchmarks file ``path`` (the only way ownmark writes
    BENCHMARKS.md: studies and the matrix return results, the CLI renders them and calls this).

    The section replaces its earlier version between its markers; a file that is not an ownmark
    benchmarks file is refused (:func:`ownmark.bench.report.benchmarks.update_section`).
    """
    from ownmark.bench.report.benchmarks import update_section

    update_section(path, name, text)
    return Path(path)
