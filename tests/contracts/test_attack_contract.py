"""Every registered attack honours the contract the CLI and the bench rely on (issue 15 item 6, attacks).

A new attack that forgets ``presets`` or ``access``, or that no bench preset runs, fails here rather
than at a user's command line (``ownmark attack surrogate --preset X`` once died with an AttributeError).
"""

import dataclasses
import sys

import pytest

from ownmark.attacks import ATTACKS
from ownmark.attacks.base import GROUPS
from ownmark.bench.presets import PRESETS
from ownmark.errors import UnknownNameError
from ownmark.watermarks import resolve_config

IN_OWN_BENCH = {"stolenencoder": "ownmark bench stolen"}  # attacks with a bench of their own


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_builds_from_defaults_and_every_preset(name: str) -> None:
    cls = ATTACKS.get(name)
    assert getattr(cls, "access", None) in ("white-box", "black-box"), name
    assert getattr(cls, "group", None) in GROUPS, f"{name}: group must be one of {GROUPS} (the report's heat-map rows)"
    assert isinstance(getattr(cls, "presets", None), dict), name
    assert dataclasses.is_dataclass(cls.config_class), name
    cls(resolve_config(cls))
    for preset in cls.presets:
        cls(resolve_config(cls, preset))
    with pytest.raises(UnknownNameError, match=f"{cls.__name__} has no preset 'nope'; known: default"):
        resolve_config(cls, "nope")
    assert (cls.__doc__ or "").strip(), f"{name} has no docstring"
    module_doc = sys.modules[cls.__module__].__doc__ or ""
    assert "arXiv" in (cls.__doc__ or "") + module_doc, f"{name} cites no paper (class or module docstring)"


def test_every_attack_runs_in_a_bench_preset() -> None:
    in_presets = {a["name"] for p in PRESETS.values() for a in p["attacks"]}
    missing = set(ATTACKS.names()) - in_presets - set(IN_OWN_BENCH)
    assert not missing, f"attacks no bench preset runs: {sorted(missing)}"
