"""Write tests/durations.json (seconds per test file) from a pytest junit xml report.

``tests/conftest.py`` runs the files with the longest recorded times first, so that the two ``make test`` workers
(whole files each, ``--dist loadfile``) finish together instead of one running a long file alone at the end.
The figures only order the files; a stale or missing entry changes the order, never a result. Refresh after
a full run:

    .venv/bin/python -m pytest -m 'not gpu' -n 2 --dist loadfile --junitxml=/tmp/junit.xml
    .venv/bin/python scripts/test_durations.py /tmp/junit.xml
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def file_of(classname: str) -> str | None:
    """``tests.attacks.test_attacks[.TestClass]`` -> ``tests/attacks/test_attacks.py`` (the longest prefix on disk)."""
    parts = classname.split(".")
    for n in range(len(parts), 0, -1):
        path = Path(*parts[:n]).with_suffix(".py")
        if (ROOT / path).is_file():
            return path.as_posix()
    return None


def main(report: str, out: str = str(ROOT / "tests" / "durations.json")) -> None:
    seconds: Counter[str] = Counter()
    for case in ET.parse(report).iter("testcase"):
        path = file_of(case.get("classname", ""))
        if path is not None:
            seconds[path] += float(case.get("time", 0))
    kept = {path: round(s) for path, s in seconds.most_common() if s >= 1}
    Path(out).write_text(json.dumps(kept, indent=1) + "\n")
    print(f"{len(kept)} files, {sum(kept.values())} s in all -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
