"""BENCHMARKS.md sections: replaced in place, appended once, and never written over a file ownmark did not start."""

import pytest

from ownmark.bench.benchmarks_md import HEADER, update_section
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
