"""Every registered model family honours the contract the CLI, the bench and the service rely on (issue 15
item 1): it builds a model that round-trips through save/load with its family in the manifest, measures a
utility, names what its API answers, and every scheme and attack names a family that exists."""

import pytest
import torch

from ownmark.attacks import ATTACKS
from ownmark.errors import ConfigError, UnknownNameError
from ownmark.families import FAMILIES, family_of
from ownmark.models import ModelSpec, load_model, save_model
from ownmark.serve import KINDS, ModelAPI
from ownmark.watermarks import WATERMARKS


@pytest.mark.parametrize("name", FAMILIES.names())
def test_family_builds_saves_serves_and_measures(name: str, tmp_path) -> None:
    family = FAMILIES.get(name)
    assert family.name == name and family.description and family.utility_name and family.utility_key
    assert set(family.serve_kinds) <= set(KINDS) and family.default_kind == family.serve_kinds[0]
    model, data = family.toy(seed=0)
    assert model.spec.family == name and family_of(model) is family
    again, _ = family.toy(seed=0)  # seeded: the same weights twice
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True))
    save_model(tmp_path / "m", model.eval())
    loaded, manifest = load_model(tmp_path / "m")
    assert manifest["spec"]["family"] == name and family_of(loaded) is family
    x = data.x[:4]
    assert torch.allclose(loaded(x), model(x))
    api = ModelAPI(loaded)
    assert api.kind == family.default_kind and len(api(x)) == 4
    other = next(k for k in KINDS if k not in family.serve_kinds)
    with pytest.raises(ConfigError, match=f"a {name} cannot answer '{other}'"):
        ModelAPI(loaded, other)
    splits = type("S", (), {"attacker": data, "test": data})()
    assert 0.0 <= family.utility(model.eval(), splits) <= 1.0


def test_every_scheme_and_attack_names_a_registered_family() -> None:
    for name in WATERMARKS.names():
        assert getattr(WATERMARKS.get(name), "family", "classifier") in FAMILIES, name
    for name in ATTACKS.names():
        families = ATTACKS.get(name).families
        assert families and all(f in FAMILIES for f in families), (name, families)


def test_unknown_family_and_wrong_family_are_refused() -> None:
    with pytest.raises(UnknownNameError, match="no model family named 'decoder'"):
        FAMILIES.get("decoder")
    with pytest.raises(ConfigError, match="ModelSpec.family must be one of"):
        ModelSpec("cnn2", 1, 10, 28, family="decoder")
    classifier, _ = FAMILIES.get("classifier").toy()
    with pytest.raises(ConfigError, match="works on encoder models, got a classifier"):
        FAMILIES.get("encoder").require(classifier, "this attack")
