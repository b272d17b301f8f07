"""Deep output watermarking on real runs: deblurring of bundled photo patches, reduced scale, fixed seeds."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ownmark.attacks.surrogate import Surrogate, SurrogateConfig
from ownmark.core import Key
from ownmark.data.image2image import load_task
from ownmark.errors import ConfigError, KeyMismatchError, ShapeError
from ownmark.io import load_key, save_key
from ownmark.models import ModelSpec, load_model, save_model
from ownmark.train.image2image import I2ITrainConfig, fit_i2i, predict, seeded
from ownmark.verify import decide
from ownmark.verify.metrics import psnr, ssim
from ownmark.watermarks import WATERMARKS, resolve_config
from ownmark.watermarks import deepwm as deepwm_module
from ownmark.watermarks.base import config_dict
from ownmark.watermarks.deepwm import (
    DeepWM,
    DeepWMConfig,
    balanced_bits,
    balanced_bits_pvalue,
    build_extractor,
    load_extractor,
)

# reduced scale: measured here ~1.5 min for the whole module on one thread (the machine shared)
SMALL = replace(
    DeepWMConfig(), epochs=8, extractor_epochs=4, surrogate_epochs=8, finetune_epochs=4, absorb_epochs=8, w_adv=0.0
)


def test_registered_with_presets_and_validated() -> None:
    assert WATERMARKS.get("deepwm") is DeepWM and DeepWM.family == "image2image"
    assert resolve_config(DeepWM, "paper").lr == 2e-4 and resolve_config(DeepWM, "absorbed").form == "absorbed"
    assert resolve_config(DeepWM, None, {"w_fidelity": "3"}).w_fidelity == 3.0
    bad = (("form", "plugin"), ("n_bits", 60), ("n_bits", 9), ("epochs", 0), ("nc_threshold", 2.0),
           ("extractor_head", "tanh"), ("screen_alpha", 2.0))  # fmt: skip
    for field, value in (*bad, ("extractor_epochs", -1)):
        with pytest.raises(ConfigError, match=field):
            DeepWMConfig(**{field: value})


def test_classifiers_are_refused() -> None:
    classifier = ModelSpec("cnn2", 3, 4, 16).build()
    toy = replace(SMALL, n_probe=4, batch_size=4)
    with pytest.raises(ShapeError, match="image-to-image"):
        DeepWM(toy).embed(classifier, torch.rand(20, 3, 16, 16), seed=0)


@pytest.fixture(scope="module")
def drawn(one_thread):
    """The barrier form of the test config on an encdec deblurring target, with what its ``_draw`` gave
    (key, barrier, trained R, H's training inputs): the absorbed-form test starts from that draw."""
    splits = load_task("deblur")
    spec = ModelSpec("encdec", 3, 3, 32, family="image2image")
    target = seeded(spec.build, 0)
    fit_i2i(target, splits.owner.x, splits.owner.y, I2ITrainConfig(epochs=6), seed=0)
    draws, real = [], DeepWM._draw
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DeepWM, "_draw", lambda self, *args: draws.append(real(self, *args)) or draws[-1])
        marked, key = DeepWM(SMALL).embed(target, splits.owner, seed=0)
    return splits, target, marked, key, draws[0]


@pytest.fixture(scope="module")
def run(drawn):
    return drawn[:4]


class _Constant(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


class _Whiter(torch.nn.Module):
    """A model biased towards the blank (white) image R emits for unmarked outputs."""

    def __init__(self, target: torch.nn.Module) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.target(x) + 0.5).clamp(0, 1)


def test_balanced_bits_pvalue_is_exact_over_every_secret() -> None:
    # all C(8, 4) = 70 balanced secrets against fixed decoded strings: P[p <= a] <= a for every a
    secrets = balanced_bits(8, torch.Generator().manual_seed(0), 5000).unique(dim=0)
    assert len(secrets) == 70 and (secrets.sum(1) == 4).all()
    for decoded in ([1] * 8, [0] * 8, [1, 1, 1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 1, 0, 0]):
        d = torch.tensor(decoded)
        ps = torch.tensor([balanced_bits_pvalue(d, s) for s in secrets])
        for a in ps.unique().tolist():
            assert float((ps <= a + 1e-12).float().mean()) <= a + 1e-9
    assert balanced_bits_pvalue(torch.ones(8, dtype=torch.long), secrets[0]) == 1.0
    with pytest.raises(ConfigError, match="balanced"):
        balanced_bits_pvalue(torch.ones(8, dtype=torch.long), torch.ones(8, dtype=torch.long))


@pytest.fixture(scope="module")
def tiny(one_thread):
    """A small real run (~12 s alone, ~50 s on the shared CPU): conv3 target, H and R, 16 probes, no stage 2."""
    splits = load_task("deblur")
    target = seeded(ModelSpec("conv3", 3, 3, 32, family="image2image").build, 0)
    fit_i2i(target, splits.owner.x, splits.owner.y, I2ITrainConfig(epochs=1), seed=0)
    toy = replace(SMALL, embedder="conv3", extractor="conv3", epochs=2, extractor_epochs=1, surrogate_epochs=0,
                  n_probe=16)  # fmt: skip
    marked, key = DeepWM(toy).embed(target, splits.owner, seed=0)
    return splits, target, marked, key, toy


def test_constant_and_biased_models_are_not_owned_under_many_keys(tiny) -> None:
    _, target, _, key, _ = tiny
    assert int(key.tensors["bits"].sum()) * 2 == key.tensors["bits"].numel()  # balanced secret
    for suspect in (_Constant(1.0), _Constant(0.0), _Constant(0.5), _Whiter(target), target):
        ps = [decide(DeepWM().detect(suspect, DeepWM.with_bits(key, s))).p_value for s in range(25)]
        assert min(ps) > 0.01  # the secret's own randomness: each p is exact, so claims happen at rate <= 1%
    ev = DeepWM().detect(_Constant(1.0), key)
    assert ev.details["decoded_ones"] in (0, 64) and ev.p_value == 1.0  # blank-looking: exactly half the bits


def test_p0_is_refused_and_keys_before_the_exact_test_are_refused(tiny) -> None:
    _, target, _, key, _ = tiny
    with pytest.raises(ConfigError, match="p0"):
        DeepWM().detect(target, key, p0=0.1)
    old_bits = torch.ones_like(key.tensors["bits"])  # unbalanced, as keys before issue 14 could be
    with pytest.raises(KeyMismatchError, match="embed again"):
        DeepWM().detect(target, replace(key, tensors={**key.tensors, "bits": old_bits}))
    with pytest.raises(KeyMismatchError, match="embed again"):
        DeepWM().detect(target, replace(key, meta={k: v for k, v in key.meta.items() if k != "test"}))


@pytest.mark.slow
def test_draw_key_equals_the_key_of_embed_and_degenerate_keys_are_refused(tiny, monkeypatch) -> None:
    splits, target, _, key, toy = tiny
    drawn = DeepWM(toy).draw_key(target, splits.owner, seed=0)
    assert set(drawn.tensors) == set(key.tensors)
    assert all(torch.equal(drawn.tensors[k], key.tensors[k]) for k in key.tensors)
    real = deepwm_module.scores

    def matched(*args, **kwargs):  # an extractor that reads the mark from every control
        return {**real(*args, **kwargs), "bit_p_value": 1e-6}

    monkeypatch.setattr(deepwm_module, "scores", matched)
    with pytest.raises(ConfigError, match="degenerate.*another seed"):
        DeepWM(toy).draw_key(target, splits.owner, seed=0)


@pytest.mark.slow
def test_must_hold_marked_owned_and_models_made_without_the_secret_never(run, tmp_path) -> None:
    splits, target, marked, key = run
    x = splits.test.x
    fidelity = psnr(predict(marked, x), predict(target, x))
    assert 20 < fidelity < 45 and 0.3 < ssim(predict(marked, x), predict(target, x)) < 1  # measured 29.5 dB
    ev = DeepWM().detect(marked, key)
    assert decide(ev).owned and ev.p_value <= 1e-12  # measured: all 64 bits, p 5.5e-19 (the smallest possible)
    assert ev.details["smallest_p"] == pytest.approx(5.5e-19, rel=0.01)
    assert ev.details["success"] >= 0.9  # the paper's per-output success (centred NC > 0.95): measured 98%
    controls = ev.details["controls"]
    assert set(controls) == {"inputs", "clean_outputs", "clean_surrogate"}
    assert all(c["success"] == 0 and c["bit_p_value"] > 0.01 for c in controls.values())  # measured p 1.0
    clean_sur, _ = Surrogate(SurrogateConfig(arch="unet", epochs=6))(target, splits.attacker, seed=5)
    nulls = [clean_sur, target, torch.nn.Identity(), _Constant(1.0), _Whiter(target)]
    claims = sum(
        decide(DeepWM().detect(m, DeepWM.with_bits(key, s))).owned for m in nulls for s in range(40)
    )  # fmt: skip
    assert claims <= 6  # 200 draws, rate <= 1%: the binomial 95% bound allows 5; measured 0
    stolen, _ = Surrogate(SurrogateConfig(arch="encdec", loss="l1", epochs=10))(marked, splits.attacker, seed=5)
    sev = DeepWM().detect(stolen, key)
    assert decide(sev).p_value <= 1e-6  # an unseen attacker surrogate: measured 58 of 64 bits, p 1.1e-11
    save_key(tmp_path / "key", key)
    save_model(tmp_path / "marked", marked)
    again = DeepWM().detect(load_model(tmp_path / "marked")[0], load_key(tmp_path / "key"))
    assert again.k == ev.k and again.details["centred_nc"] == pytest.approx(ev.details["centred_nc"], abs=1e-6)


@pytest.mark.slow
def test_must_hold_absorbed_form_end_to_end(drawn, monkeypatch) -> None:
    """``embed`` in the absorbed form. Its draw (H, R, the secret) never reads ``form`` (only ``embed``
    does, after the draw), so the barrier run's draw of the same config and seed is its draw: reused here
    rather than trained twice; the absorption, the spec and the verdict are this form's own."""
    splits, target, barrier_marked, barrier_key, (key, barrier, extractor, train_a) = drawn
    assert barrier_marked is barrier  # the barrier form returns the drawn barrier itself
    absorbed_cfg = replace(SMALL, form="absorbed")
    own_key = replace(key, config={**key.config, "form": "absorbed"}, meta=dict(key.meta))
    assert {k: v for k, v in own_key.config.items() if k != "form"} == {
        k: v for k, v in config_dict(absorbed_cfg).items() if k != "form"
    }
    monkeypatch.setattr(DeepWM, "_draw", lambda self, *args: (own_key, barrier, extractor, train_a))
    before = {k: v.clone() for k, v in barrier.state_dict().items()}
    absorbed, key = DeepWM(absorbed_cfg).embed(target, splits.owner, seed=0)
    assert key is own_key and key.config["form"] == "absorbed" and barrier_key.config["form"] == "barrier"
    assert all(torch.equal(before[k], v) for k, v in barrier.state_dict().items())  # the barrier is left as it was
    assert type(absorbed) is type(target) and absorbed.spec == target.spec  # no barrier at run time
    ev = DeepWM().detect(absorbed, key)
    assert decide(ev).p_value <= 1e-6
    worst = max(c["centred_nc"] for c in ev.details["controls"].values())
    assert ev.details["centred_nc"] >= worst + 0.8
    # measured (seed 0, test config, H and R trained on random balanced messages): 62.5% of the absorbed
    # target's outputs decode to the mark in the venv of 2026-12-06 (77% in the one before; the same with
    # the global generator fixed, so it is the packages, not the test order); the verdict rests on the bits
    assert ev.details["success"] >= 0.6


def test_extractor_head_follows_the_key_and_older_keys_load_linear() -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    meta = {"extractor": "conv3", "channels": 3, "image_size": 16}
    for head in ("sigmoid", "linear"):
        r = seeded(lambda h=head: build_extractor("conv3", 3, 16, h), 0).eval()
        tensors = {f"R.{k}": v for k, v in r.state_dict().items()}
        extra = {"extractor_head": head} if head == "sigmoid" else {}  # keys before the head existed name none
        loaded = load_extractor(Key("deepwm", {}, tensors, meta | extra))
        with torch.no_grad():
            assert torch.equal(loaded(x), r(x))
            assert (head == "sigmoid") == bool(0 < float(r(x).min()) and float(r(x).max()) < 1)


def test_key_of_another_scheme_is_refused(tiny) -> None:
    _, target, _, key, _ = tiny
    with pytest.raises(KeyMismatchError, match="deepwm"):
        DeepWM().detect(target, replace(key, scheme="fcw"))


def test_controls_are_extracted_once_per_key_and_again_when_r_changes(tiny, monkeypatch) -> None:
    """R's outputs on a key's controls are computed once for the keys ``with_bits`` makes from it, and again
    for a key with other (or in-place changed) R tensors; the verdicts are those of a fresh computation."""
    _, target, _, key, _ = tiny
    calls: list[int] = []
    real = deepwm_module.predict
    monkeypatch.setattr(deepwm_module, "predict", lambda model, x: calls.append(len(x)) or real(model, x))
    controls = sum(name in key.tensors for name in ("probe_x", "probe_clean", "probe_null"))
    copy_key = replace(key, tensors={k: v.clone() for k, v in key.tensors.items()}, meta=dict(key.meta))
    DeepWM().detect(target, copy_key)
    assert len(calls) == 2 + controls  # the suspect, R on its outputs, R on each control
    calls.clear()
    other_bits = DeepWM.with_bits(copy_key, 3)
    again = DeepWM().detect(target, other_bits)
    assert len(calls) == 2  # the suspect and R on its outputs: the controls' R outputs are reused
    deepwm_module._CONTROL_EXTRACTIONS.clear()
    assert DeepWM().detect(target, other_bits).details["controls"] == again.details["controls"]
    r_name = next(k for k, v in copy_key.tensors.items() if k.startswith("R.") and v.is_floating_point())
    copy_key.tensors[r_name].mul_(0.5)  # R changed in place: the controls are extracted again
    calls.clear()
    changed = DeepWM().detect(target, copy_key)
    assert len(calls) == 2 + controls
    deepwm_module._CONTROL_EXTRACTIONS.clear()
    assert DeepWM().detect(target, copy_key).details["controls"] == changed.details["controls"]
