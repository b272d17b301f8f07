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


GOAL_MINUTES = {"quick": 30}  # issue 17: the quick matrix on this 2-core machine
PHASES = ("models", "embedding", "cells and nulls")  # the phases of ownmark.bench.run.run_matrix


def matrix_timings(cells: list[dict[str, Any]], runs: list[dict[str, Any]], preset: str) -> str:
    """The bench section: the matrix's total time (per phase where the run recorded it), what each SoK
    attack group costs, and the wall time per cell of each attack."""
    from ownmark.bench.report.matrix import attack_group, attack_key

    by_attack: dict[str, list[dict[str, Any]]] = {}
    for row in cells:
        by_attack.setdefault(attack_key(row), []).append(row)
    total = sum(r["seconds"] for r in runs)
    workers = sorted({f"{r['executor']} x{r['workers']}" for r in runs})
    goal = GOAL_MINUTES.get(preset)
    verdict = f"; goal for `{preset}`: under {goal} min, {'met' if total / 60 <= goal else 'not met'}" if goal else ""
    lines = [
        f"## Bench matrix `{preset}`",
        "",
        f"Written by `ownmark bench timings` from the results of the bench run `{preset}` (its work folder's name). "
        f"Machine: {machine()}.",
        "",
        f"{len(cells)} cells in {len(runs)} run(s) ({', '.join(workers)}): total wall time {total / 60:.1f} min "
        f"(clean training, embedding, cells and null models together{verdict}).",
    ]
    phases: dict[str, float] = {}
    for r in runs:
        for name, secs in (r.get("phase_seconds") or {}).items():
            phases[name] = phases.get(name, 0.0) + secs
    if phases:  # in the order a run takes them (the store keeps a row's keys sorted)
        order = [p for p in PHASES if p in phases] + sorted(set(phases) - set(PHASES))
        lines += ["", "Wall time per phase: " + ", ".join(f"{k} {phases[k] / 60:.1f} min" for k in order) + "."]
    group_of = {attack: "none" if attack == "none" else attack_group(attack) for attack in by_attack}
    by_group: dict[str, list[str]] = {}
    for attack, group in group_of.items():
        by_group.setdefault(group, []).append(attack)
    cell_total = sum(r["cell_seconds"] for r in cells) or 1.0
    lines += [
        "",
        "Per SoK attack group (cell time is worker time: the attack, the attacked model's utility and its "
        "verdict; the attack's own share beside it):",
        "",
        "| group | attacks | cells | cell time (s) | share of cell time | attack's own time (s) |",
        "|---|---|---|---|---|---|",
    ]
    group_rows = {g: [r for a in attacks for r in by_attack[a]] for g, attacks in by_group.items()}
    for group, rows in sorted(group_rows.items(), key=lambda kv: -sum(r["cell_seconds"] for r in kv[1])):
        attacks, secs = by_group[group], sum(r["cell_seconds"] for r in rows)
        own = sum(r.get("cost_seconds") or 0.0 for r in rows)
        lines.append(f"| {group} | {len(attacks)} | {len(rows)} | {secs:.0f} | {secs / cell_total:.0%} | {own:.0f} |")
    lines += ["", "| attack | group | cells | median s per cell | max s per cell |", "|---|---|---|---|---|"]
    for attack, rows in sorted(by_attack.items()):
        secs = [r["cell_seconds"] for r in rows]
        median, most = statistics.median(secs), max(secs)
        lines.append(f"| {attack} | {group_of[attack]} | {len(secs)} | {median:.2f} | {most:.2f} |")
    return "\n".join(lines)
