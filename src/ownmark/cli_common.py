"""What every ``ownmark`` command shares: option types and the checks run before any work.

Imports nothing heavy (no torch at import), so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ownmark.errors import ConfigError

Seed = Annotated[int, typer.Option(help="Seed of every random choice of this command.", min=0, max=2**63 - 1)]
SplitSeed = Annotated[int, typer.Option(help="Seed of the owner/attacker/test split.", min=0, max=2**63 - 1)]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a setting: --set key=value (repeatable).")]
Threads = Annotated[
    int,
    typer.Option(
        min=1, help="CPU threads for torch, pinned so the same seed gives the same bytes whatever OMP_NUM_THREADS says."
    ),
]
JsonOut = Annotated[
    bool, typer.Option("--json", help="Print one JSON verdict record per suspect (JSON Lines), no table.")
]
Record = Annotated[
    Path | None, typer.Option(help="Also write the verdict records (JSON Lines) to this file, atomically.")
]


def parse_sets(values: list[str] | None) -> dict[str, str]:
    """``--set key=value`` items as a dict, refusing an item without ``=``."""
    out = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[name.strip()] = value
    return out


def pin_threads(ctx: typer.Context, threads: int) -> None:
    """Run the command on ``threads`` torch CPU threads (intra-op reductions change the last bits of
    trained weights with the thread count); the caller's count is restored when the command ends."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    ctx.call_on_close(lambda: torch.set_num_threads(before))


def check_outputs(*paths: tuple[Path | None, str, str]) -> None:
    """Check every (path, option, kind) a command will write before any work starts (see ownmark.paths)."""
    from ownmark.paths import check_writable

    for path, option, kind in paths:
        if path is not None:
            check_writable(path, option, kind)
