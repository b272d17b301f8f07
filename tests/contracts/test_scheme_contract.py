"""Every registered scheme honours the contract the CLI, the bench and the API rely on (issue 15 item 6,
schemes): it names a registered family, cites its paper, resolves every preset, embeds into its family's
toy model at a toy size, and its key survives a save/load round trip and verifies with a p-value the
verdict can use. A new scheme without a toy size here fails, naming itself."""

import sys

import pytest

import ownmark as om
from ownmark.families import FAMILIES
from ownmark.watermarks import WATERMARKS, resolve_config

TOY = {  # the smallest settings that run each scheme end to end on its family's toy fixture
    "fcw": {"n_embed": 4, "n_verify": 2, "epochs": 1, "batch_size": 16, "triggers_per_batch": 2},
    "content": {"n_embed": 4, "n_verify": 4, "epochs": 1, "batch_size": 16, "triggers_per_batch": 2, "decoys": 9},
    "noise": {"n_embed": 4, "n_verify": 4, "epochs": 1, "batch_size": 16, "triggers_per_batch": 2, "decoys": 9},
    "unrelated": {"n_embed": 4, "n_verify": 4, "epochs": 1, "batch_size": 16, "triggers_per_batch": 2},
    "ptynet": {"n_embed": 8, "n_verify": 4, "n_probe": 8, "n_decoys": 9, "n_negative": 8, "epochs": 1,
               "batch_size": 16},
    "awencoder": {"epochs": 1, "pgd_steps": 2, "n_verify": 8, "decoys": 9, "key_candidates": 2},
    "deepwm": {"epochs": 1, "extractor_epochs": 1, "surrogate_epochs": 1, "finetune_epochs": 1, "embedder": "conv3",
               "extractor": "conv3", "surrogate_arch": "conv3", "n_probe": 4, "batch_size": 8, "w_adv": 0},
}  # fmt: skip


def test_every_scheme_has_a_toy_size() -> None:
    assert set(TOY) == set(WATERMARKS.names()), "add the new scheme's toy settings to TOY"


@pytest.mark.parametrize("name", WATERMARKS.names())
def test_scheme_embeds_saves_and_verifies_on_its_toy_fixture(name: str, tmp_path) -> None:
    cls = WATERMARKS.get(name)
    family = FAMILIES.get(getattr(cls, "family", "classifier"))
    doc = (cls.__doc__ or "") + (sys.modules[cls.__module__].__doc__ or "")
    assert any(mark in doc for mark in ("arXiv", "DOI", "doi")), f"{name} cites no paper"
    for preset in cls.presets:
        assert resolve_config(cls, preset) is not None and cls.presets[preset].source
    model, data = family.toy(seed=0)
    scheme = om.create_scheme(name, **TOY[name])
    marked, key = scheme.embed(model, data, seed=0)
    assert key.scheme == name and marked.spec.family == family.name
    om.save_key(tmp_path / "key", key)
    again = om.load_key(tmp_path / "key")
    verdict = om.verify(marked, again)
    assert 0.0 < verdict.p_value <= 1.0 and verdict.null_hypothesis and verdict.test
    assert verdict.smallest_p is None or verdict.p_value >= verdict.smallest_p
