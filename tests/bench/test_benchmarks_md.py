"""BENCHMARKS.md sections: replaced in place, appended once, and never written over a file ownmark did not start."""

import pytest

from ownmark.bench.report.benchmarks import HEADER, update_section
from ownmark.errors import OutputPathError


def test_sections_are_replaced_and_foreign_files_are_left_alone(tmp_path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    update_section(md, "a", "first")
    update_section(md, "b", "other")
    update_section(md, "a", "second")
    text = md.read_text()
    assert text.startswith(HEADER) and text.count("<!-- section:a -->") == 1 and "second" in text
    assert "first" not in text and text.index("section:a") < text.index("section:b")
    readme = tmp_path / "README.md"
    readme.write_text("# my project\n\nprecious\n")
    with pytest.raises(OutputPathError, match="not an ownmark benchmarks file"):
        update_section(readme, "a", "body")
    assert readme.read_text() == "# my project\n\nprecious\n"


def test_only_the_report_package_writes_benchmarks_sections() -> None:
    """Studies and the matrix return results; the report package (`publish`) is the one writer."""
    import ast
    from pathlib import Path

    import ownmark

    root = Path(ownmark.__file__).parent
    writers = []
    for path in root.rglob("*.py"):
        if (root / "bench" / "report") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            called = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None
            if "update_section" in names or called == "update_section":
                writers.append(str(path.relative_to(root)))
    assert writers == [], f"modules writing BENCHMARKS.md sections outside bench/report: {sorted(set(writers))}"


def test_publish_writes_a_section_through_the_same_guard(tmp_path) -> None:
    from ownmark.bench.report import publish

    md = publish(tmp_path / "B.md", "x", "| a |")
    assert "<!-- section:x -->\n| a |\n<!-- end:x -->" in md.read_text()
    notes = tmp_path / "notes.md"
    notes.write_text("mine\n")
    with pytest.raises(OutputPathError):
        publish(notes, "x", "body")
