"""The catalog ``ownmark list`` reads without importing torch holds exactly what the registries hold."""

import subprocess
import sys

from ownmark import catalog


def test_catalog_matches_the_registries() -> None:
    stored = {k: v for k, v in catalog.load().items() if k in catalog.build()}
    for kind, names in catalog.PATTERNS.items():
        stored[kind] = {n: d for n, d in stored[kind].items() if n not in names}
    assert stored == catalog.build(), "the catalog is stale: run `python -m ownmark.catalog` and commit catalog.json"


def test_list_answers_without_importing_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from ownmark import cli; "
        "r = CliRunner().invoke(cli.app, ['list', 'schemes']); assert r.exit_code == 0, r.output; "
        "assert 'fcw' in r.output and 'awencoder' in r.output; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
