import pytest

from ownmark.errors import RegistryError, UnknownNameError
from ownmark.registry import Registry


def make() -> Registry:
    reg: Registry = Registry("attack")

    @reg.register("prune")
    def prune() -> str:
        return "prune"

    @reg.register("ftal")
    def ftal() -> str:
        return "ftal"

    return reg


def test_register_get_names() -> None:
    reg = make()
    assert reg.get("prune")() == "prune"
    assert reg.get("ftal")() == "ftal"
    assert reg.names() == ["ftal", "prune"]  # sorted, not in registration order
    assert "prune" in reg and "rtal" not in reg


def test_register_returns_the_object_unchanged() -> None:
    reg: Registry = Registry("thing")

    class Thing:
        pass

    assert reg.register("thing")(Thing) is Thing
    assert reg.get("thing") is Thing


def test_registries_are_independent() -> None:
    a, b = make(), Registry("attack")
    assert b.names() == [] and a.names() == ["ftal", "prune"]


def test_duplicate_registration_fails_and_keeps_the_first() -> None:
    reg = make()
    first = reg.get("prune")
    with pytest.raises(RegistryError, match="attack 'prune' is already registered"):
        reg.register("prune")(lambda: "other")
    assert reg.get("prune") is first


def test_unknown_name_suggests_close_matches() -> None:
    reg = make()
    with pytest.raises(UnknownNameError, match="did you mean 'prune'") as info:
        reg.get("prnue")
    msg = str(info.value)
    assert "no attack named 'prnue'" in msg and "known: ftal, prune" in msg and "\n" not in msg
    assert isinstance(info.value, LookupError)


def test_unknown_name_without_close_match_lists_known() -> None:
    with pytest.raises(UnknownNameError) as info:
        make().get("zzzzzzzz")
    assert "did you mean" not in str(info.value) and "known: ftal, prune" in str(info.value)
