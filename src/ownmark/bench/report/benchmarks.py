"""BENCHMARKS.md is written in sections, each owned by one command and replaced on its re-run.

A section is written only into a file ownmark started (its first line is ``# ownmark benchmarks``) or
into a new file; any other existing file is refused, never overwritten.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
from pathlib import Path
from typing import Any

import torch

from ownmark.errors import OutputPathError
from ownmark.io import atomic_write_text

HEADER = (
    "# ownmark benchmarks\n\nEvery figure in a section is written by a command (named in the section) "
    "from one measured run; notes outside the sections are written by hand and say so.\n"
)


def machine() -> str:
    """One line describing this machine and library build."""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} (CPU, {torch.get_num_threads()} threads)"
    )


def update_section(path: str | Path, name: str, body: str) -> str:
    """Replace (or append) the section ``name`` of the Markdown file at ``path``; return the file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    if not text.startswith("# ownmark benchmarks"):
        raise OutputPathError(
            f"{path} is not an ownmark benchmarks file (its first line is not '# ownmark benchmarks'), so ownmark "
            "will not overwrite it; name a new file or an existing BENCHMARKS.md"
        )
    block = f"<!-- section:{name} -->\n{body.rstrip()}\n<!-- end:{name} -->"
    pattern = re.compile(rf"<!-- section:{re.escape(name)} -->.*?<!-- end:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    atomic_write_text(path, text)
    return text


def matrix_timings(cells: list[dict[str, Any]], runs: list[dict[str, Any]], preset: str) -> str:
    """The bench section: wall time per cell of each attack, and the matrix's total time."""
    by_attack: dict[str, list[float]] = {}
    for row in cells:
        by_attack.setdefault(row["attack"], []).append(row["cell_seconds"])
    total = sum(r["seconds"] for r in runs)
    workers = sorted({f"{r['executor']} x{r['workers']}" for r in runs})
    lines = [
        f"## Bench matrix `{preset}`",
        "",
        f"Written by `ownmark bench timings` from the results of the bench run `{preset}` (its work folder's name). "
        f"Machine: {machine()}.",
        "",
        f"{len(cells)} cells in {len(runs)} run(s) ({', '.join(workers)}): total wall time {total / 60:.1f} min "
        "(clean training, embedding, cells and null models together; goal for `quick`: under 20 min).",
        "",
        "| attack | cells | median s per cell | max s per cell |",
        "|---|---|---|---|",
    ]
    for attack, secs in sorted(by_attack.items()):
        lines.append(f"| {attack} | {len(secs)} | {statistics.median(secs):.2f} | {max(secs):.2f} |")
    return "\n".join(lines)
