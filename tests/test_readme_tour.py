"""The README's CLI tour, checked against the CLI as it is: every command line names commands and options
that exist and parse (issue 15: the tour runs as written). Executing it whole would take hours (benches),
so each line is parsed by the real command tree without running it; `ownmark list` and `--version` run."""

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ownmark import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def tour_lines() -> list[list[str]]:
    text = README.read_text(encoding="utf-8").split("## CLI tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    lines = [line.split(" #", 1)[0].strip() for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("ownmark ")]


def _rest(ctx) -> list[str]:
    """What a group left for its sub-command (click keeps it apart from ``args`` in some versions)."""
    protected = getattr(ctx, "_protected_args", None) or []
    return [*protected, *ctx.args]


def _parse(args: list[str]) -> None:
    command = typer.main.get_command(cli.app)  # typer's own copy of click: duck-typed below
    ctx = command.make_context("ownmark", list(args), resilient_parsing=False)
    rest = _rest(ctx)
    while hasattr(command, "resolve_command") and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        rest = _rest(ctx)
    assert not rest, f"unparsed arguments {rest}"


@pytest.mark.parametrize("args", [a for a in tour_lines() if "--version" not in a], ids=" ".join)
def test_every_tour_command_parses(args: list[str]) -> None:
    _parse(args)


def test_the_tour_is_read_and_its_quick_commands_run() -> None:
    assert len(tour_lines()) >= 25
    runner = CliRunner()
    assert runner.invoke(cli.app, ["--version"]).output.startswith("ownmark ")
    assert "families:" in runner.invoke(cli.app, ["list"]).output
    with pytest.raises(Exception, match="No such option"):
        _parse(["train", "--no-such-option"])
    with pytest.raises(Exception, match="No such command"):
        _parse(["i2i", "train"])
