"""Issue 15's rule: what depends on the kind of model asks the family (``ownmark.families``); no module
outside ``families/`` branches on a family's name."""

from __future__ import annotations

import re
from pathlib import Path

import ownmark

BRANCH = re.compile(r"""[!=]=\s*["'](encoder|image2image|classifier)["']""")


def test_no_module_outside_families_compares_a_family_name() -> None:
    root = Path(ownmark.__file__).parent
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if "families" not in path.relative_to(root).parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if BRANCH.search(line)
    ]
    assert not found, "ask the family (ownmark.families) instead:\n" + "\n".join(found)
    assert BRANCH.search('if family == "encoder":') and BRANCH.search("x != 'classifier'")  # the pattern bites
