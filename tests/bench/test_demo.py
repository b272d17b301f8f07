"""The demo end to end: the verdicts it prints and the report it writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ownmark.bench.studies.demo import run_demo


@pytest.mark.slow
def test_demo_verdicts_and_report(tmp_path: Path) -> None:
    rows = run_demo(tmp_path, seed=0)
    by_role: dict[str, list] = {}
    for row in rows:
        by_role.setdefault(row.role, []).append(row)
    assert [r.verdict.owned for r in by_role["owner"]] == [True]
    assert len(by_role["independent"]) >= 3 and not any(r.verdict.owned for r in by_role["independent"])
    assert not any(r.verdict.owned for r in by_role["control"])  # the model before marking
    assert not any(r.verdict.owned for r in by_role["degenerate"])  # answers the watermark label everywhere
    assert by_role["owner"][0].verdict.smallest_p == 1 / 360
    report = (tmp_path / "demo.md").read_text()
    assert "| marked | owner |" in report and "smallest p-value" in report
    assert "Removed (verdict flipped" in report or "No attack removed" in report
    assert (tmp_path / "key.safetensors").is_file() and (tmp_path / "marked.safetensors").is_file()
