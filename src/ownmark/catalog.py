"""Names and one-line descriptions of every registered unit, without importing torch.

``ownmark list`` and every ``--help`` answer from ``catalog.json`` (written by
``python -m ownmark.catalog``), so they take a fraction of a second; the registries themselves load
only when a command runs. ``tests/contracts/test_catalog.py`` fails when the file and the registries
disagree, with the command that rewrites it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("catalog.json")
PATTERNS = {  # names that are patterns, not registry entries
    "models": ["tv:NAME", "timm:NAME", "pkg.module:factory"],
    "encoders": ["tv:NAME", "timm:NAME", "pkg.module:factory"],
    "datasets": ["folder:PATH", "tv:NAME", "synthetic:CxHxW:K"],
}
DEFENSES = {"none": "answers as computed", "noise:STD[:abs]": "Gaussian noise on scores or features",
            "round:DECIMALS": "scores rounded", "topk:K": "only the top-k scores kept"}  # fmt: skip


def _line(obj: Any) -> str:
    """The first sentence of a unit's ``description`` (families, metrics) or docstring."""
    doc = getattr(obj, "description", None) or (getattr(obj, "__doc__", None) or "")
    text = " ".join(doc.strip().split("\n\n")[0].split())
    return text.split(". ")[0].rstrip(".")


def build() -> dict[str, dict[str, str]]:
    """The catalog as the registries hold it now (imports every unit)."""
    from ownmark.api import _registry

    out: dict[str, dict[str, str]] = {}
    for kind in ("families", "metrics", "schemes", "attacks", "models", "encoders", "image2image", "datasets"):
        registry = _registry(kind)
        out[kind] = {name: _line(registry.get(name)) for name in registry.names()}
    from ownmark.watermarks import WATERMARKS

    out["presets"] = {
        f"{s}:{p}": (WATERMARKS.get(s).presets[p].source if p != "default" else "the scheme's defaults")
        for s in WATERMARKS.names() for p in ["default", *WATERMARKS.get(s).presets]
    }  # fmt: skip
    return out


def load() -> dict[str, dict[str, str]]:
    """The stored catalog, with the pattern names and the defenses."""
    data = json.loads(PATH.read_text(encoding="utf-8"))
    for kind, names in PATTERNS.items():
        data[kind] = {**data[kind], **{n: "pattern" for n in names}}
    data["defenses"] = dict(DEFENSES)
    return data


if __name__ == "__main__":
    PATH.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {PATH}")
