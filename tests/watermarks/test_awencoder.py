"""AWEncoder on mnist5k at reduced scale: the issue's must-holds with fixed seeds.

Scale, so the file runs in about 3 minutes on an idle 2-core CPU: the secret variant (the default;
the paper's adversarial delta is not reliably verifiable by the decoy rank at this scale, see the module
docstring of ownmark.watermarks.awencoder; no test here measures it: its embedding takes ~160 s),
99 decoys (smallest p 0.01), 100 verification images, the default 20 embedding epochs (one embedding
serves the module; the black-box mark needs them), and two independent null encoders (4 SSL epochs on
the attacker's data).
"""

import copy

import pytest
import torch

from ownmark.errors import ConfigError, KeyMismatchError
from ownmark.io import load_key, save_key
from ownmark.models import ModelSpec
from ownmark.train.probe import linear_probe
from ownmark.train.ssl import SSLConfig, pretrain
from ownmark.verify import decide
from ownmark.watermarks.awencoder import (
    AWEncoder,
    AWEncoderConfig,
    effects,
    key_image,
    secret_trigger,
    universal_perturbation,
)

NULL_SSL = SSLConfig(epochs=4)
MARK = AWEncoderConfig(decoys=99, n_verify=100)  # the default 20 embedding epochs
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: intra-op threads only contend on 2 shared cores


def _null(data, seed: int, method: str = "simclr", arch: str = "conv4"):
    torch.manual_seed(seed)
    enc = ModelSpec(arch, 1, 128, 28, family="encoder").build()
    pretrain(enc, data, SSLConfig(**{**NULL_SSL.__dict__, "method": method}), seed=seed)
    return enc.eval()


@pytest.fixture(scope="module")
def nulls(mnist_splits):
    """Independent encoders on the attacker's data (other seeds and SSL methods), never shown the key."""
    return {"simclr-201": _null(mnist_splits.attacker, 201), "moco-203": _null(mnist_splits.attacker, 203, "moco")}


@pytest.fixture(scope="module")
def marked(mnist_splits, mnist_encoder):
    """The default 20 embedding epochs (99 decoys, 100 images): the black-box mark needs them, and one
    embedding serves every test of the module."""
    scheme = AWEncoder(MARK)
    encoder, key = scheme.embed(mnist_encoder, mnist_splits.owner, seed=0)
    return scheme, encoder, key


@pytest.mark.slow
def test_marked_probe_stays_within_3_points(marked, mnist_splits, mnist_encoder) -> None:
    _, encoder, _ = marked
    probe = (mnist_splits.attacker, mnist_splits.test)
    clean, ours = linear_probe(mnist_encoder, *probe).accuracy, linear_probe(encoder, *probe).accuracy
    assert ours >= clean - 0.03, (ours, clean)


@pytest.mark.slow
def test_white_box_owns_the_marked_encoder_and_no_independent_one(marked, mnist_encoder, nulls) -> None:
    scheme, encoder, key = marked
    ev = scheme.detect(encoder, key)
    v = decide(ev, 0.01)
    # measured: effect 0.140 against the 99 decoys' largest 0.003, p = 1/100 (the smallest possible; 0.154
    # against -0.007 before training went channels-last)
    assert v.owned and v.p_value == pytest.approx(1 / 100) and ev.details["effect"] >= 0.1, (v, ev.details)
    # measured: the owner's clean encoder p 0.55 (0.43 for a 5-epoch mark, whose nulls gave p 0.49 and 0.65)
    assert decide(scheme.detect(mnist_encoder, key), 0.01).p_value > 0.1
    for name, enc in nulls.items():
        ev = scheme.detect(enc, key)
        assert decide(ev, 0.01).p_value > 0.1, (name, ev.details)


@pytest.mark.slow
def test_black_box_through_a_downstream_classifier(marked, mnist_splits, nulls) -> None:
    """Through a linear probe on the marked encoder, the owner's delta is labelled unlike every decoy.

    At 5 embedding epochs the black-box mark was too weak at this scale for the rank (measured p 0.98
    with the one-label statistic, see AWEncoder.detect_blackbox)."""
    scheme, encoder, key = marked
    probe = (mnist_splits.attacker, mnist_splits.test)
    ev = scheme.detect_blackbox(linear_probe(encoder, *probe).classifier, key)
    assert ev.queries == 100 + 100 * 100 and ev.details["candidates"] == 100
    # measured: distinctness 0.76 against the decoys' largest 0.32 (p 0.01, the smallest possible); the
    # one-label share was 0.40 against 0.34 (it would also rank first here, by a thin margin)
    assert decide(ev, 0.01).owned, (ev.k, ev.n, ev.p_value, ev.details)
    for name, enc in nulls.items():  # measured: p 0.25 and 0.80
        null_ev = scheme.detect_blackbox(linear_probe(enc, *probe).classifier, key)
        assert decide(null_ev, 0.01).p_value > 0.01, (name, null_ev)


@pytest.fixture(scope="module")
def tuned_nulls(nulls, mnist_splits):
    """The nulls fine-tuned downstream (Adam lr 1e-3, 3 epochs): adapted as a suspect would be."""
    from ownmark.attacks.encoder_attacks import EncoderFineTune, EncoderFineTuneConfig

    tune = EncoderFineTune(EncoderFineTuneConfig(epochs=3, lr=1e-3))
    return {name: tune(enc, mnist_splits.attacker, seed=0)[0] for name, enc in nulls.items()}


@pytest.mark.slow
def test_downstream_fine_tuning_at_lr_1e_4_keeps_the_default_mark(marked, mnist_splits, mnist_encoder) -> None:
    """Fine-tuning that keeps utility (Adam lr 1e-4, 3 epochs) on the default 20-epoch mark, as the encoder
    bench measures it, with three fine-tuning seeds. A 5-epoch mark sits at the edge here and its verdict
    moved with the environment: effect 0.134 / p 0.01 in the venv of 2026-12-06, 0.030 / p 0.08 before it,
    0.022 / p 0.03 in the fresh venv of 2026-12-07 (same kornia 0.9.0 and lightly 1.6.0), so the tests use
    the default. Measured with channels-last training (seeds 0, 1, 2): effects 0.038, 0.064, 0.075 against
    the 99 decoys' largest 0.013, -0.010, -0.007, p 0.01 (the smallest possible) each; seed 0 alone, in the
    default layout before, 0.066 against 0.009: one seed's margin moves with the last bits of training."""
    from ownmark.attacks.encoder_attacks import EncoderFineTune, EncoderFineTuneConfig

    scheme, encoder, key = marked
    clean_acc = linear_probe(mnist_encoder, mnist_splits.attacker, mnist_splits.test).accuracy
    for seed in (0, 1, 2):
        torch.manual_seed(seed)  # the fine-tuning's augmentations draw from the global generator: fix it here
        tuned, _ = EncoderFineTune(EncoderFineTuneConfig(epochs=3, lr=1e-4))(encoder, mnist_splits.attacker, seed=seed)
        if seed == 0:
            assert linear_probe(tuned, mnist_splits.attacker, mnist_splits.test).accuracy >= clean_acc - 0.03
        ev = scheme.detect(tuned, key)
        effect, decoys = ev.details["effect"], ev.details["decoy_effect_max"]
        assert decide(ev, 0.01).owned and effect >= 0.03 and effect >= 2 * decoys, (seed, ev.details)


@pytest.mark.slow
def test_fine_tuned_independent_encoders_are_not_claimed(marked, tuned_nulls) -> None:
    """The same downstream fine-tuning applied to encoders that never saw the mark: no claim."""
    scheme, _, key = marked
    for name, enc in tuned_nulls.items():  # measured: p 0.68 and 0.61
        ev = scheme.detect(enc, key)
        assert decide(ev, 0.01).p_value > 0.1, (name, ev.details)


@pytest.mark.slow
def test_fine_tuning_with_augmentation_is_seeded_and_claims_no_null(marked, nulls, mnist_splits, mnist_encoder):
    """``enc-finetune`` with ``augment``: every batch replaced by a keyed augmented view. Same seed, same
    weights; other weights than the plain fine-tuning; the victim untouched; the probe kept; the nulls
    fine-tuned the same way not claimed. Measured: the augmented fine-tuning of the default mark (Adam lr
    1e-4, 3 epochs) still OWNED at p 0.01 (the smallest with 99 decoys), the two nulls so tuned p 0.29 and 0.67."""
    from dataclasses import replace

    from ownmark.attacks.encoder_attacks import EncoderFineTune, EncoderFineTuneConfig

    with pytest.raises(ConfigError, match="augment must be true or false"):
        EncoderFineTuneConfig(augment="yes")
    scheme, encoder, key = marked
    before = copy.deepcopy(encoder.state_dict())
    cfg = EncoderFineTuneConfig(epochs=3, lr=1e-4, augment=True)
    tuned, cost = EncoderFineTune(cfg)(encoder, mnist_splits.attacker, seed=0)
    again, _ = EncoderFineTune(cfg)(encoder, mnist_splits.attacker, seed=0)
    plain, _ = EncoderFineTune(replace(cfg, augment=False))(encoder, mnist_splits.attacker, seed=0)
    weights = tuned.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in again.state_dict().items())
    assert any(not torch.equal(weights[k], v) for k, v in plain.state_dict().items() if v.is_floating_point())
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert cost.epochs == 3.0 and cost.seconds > 0
    clean_acc = linear_probe(mnist_encoder, mnist_splits.attacker, mnist_splits.test).accuracy
    assert linear_probe(tuned, mnist_splits.attacker, mnist_splits.test).accuracy >= clean_acc - 0.05
    marked_p = decide(scheme.detect(tuned, key), 0.01).p_value
    null_ps = [decide(scheme.detect(EncoderFineTune(cfg)(enc, mnist_splits.attacker, seed=0)[0], key), 0.01).p_value
               for enc in nulls.values()]  # fmt: skip
    print("augmented fine-tuning: marked p", marked_p, "null ps", null_ps)
    assert min(null_ps) > 0.05


@pytest.mark.slow
def test_fine_tuning_at_lr_1e_2_is_retraining(mnist_splits, mnist_encoder) -> None:
    """Why the must-hold is not asked of Adam at lr 1e-2: the same 3 epochs from a random
    initialisation reach a probe within 3 points of the pre-trained encoder's, so the attacker's
    result owes nothing measurable to the owner's encoder (the bench shows the mark is lost there)."""
    from ownmark.attacks.encoder_attacks import EncoderFineTune, EncoderFineTuneConfig

    torch.manual_seed(0)
    scratch = ModelSpec("conv4", 1, 128, 28, family="encoder").build()
    tuned, _ = EncoderFineTune(EncoderFineTuneConfig(epochs=3, lr=1e-2))(scratch, mnist_splits.attacker, seed=0)
    probe = (mnist_splits.attacker, mnist_splits.test)
    clean_acc = linear_probe(mnist_encoder, *probe).accuracy
    assert linear_probe(tuned, *probe).accuracy >= clean_acc - 0.03
    # at lr 1e-3 it does not: there the pre-trained encoder is what the attacker gains from
    tuned, _ = EncoderFineTune(EncoderFineTuneConfig(epochs=3, lr=1e-3))(scratch, mnist_splits.attacker, seed=0)
    assert linear_probe(tuned, *probe).accuracy < clean_acc - 0.03


@pytest.mark.slow
def test_the_mark_answers_delta_not_any_perturbation_of_its_norm(marked) -> None:
    """The specificity term: random sign patterns of delta's norm leave the marked encoder's features
    near where the clean encoder puts them, while delta pulls them to the key image."""
    scheme, encoder, key = marked
    t, eps = key.tensors, float(key.tensors["delta"].abs().max())
    g = torch.Generator().manual_seed(7)
    control = (torch.randint(0, 2, t["delta"].shape, generator=g).float() * 2 - 1) * eps
    from ownmark.verify.encoder import key_effects

    by_delta = float(key_effects(encoder, t["verify"], t["delta"], t["x_key"])[2].mean())
    by_control = float(key_effects(encoder, t["verify"], control, t["x_key"])[2].mean())
    # measured on this fixture: delta 0.154, five random patterns (seeds 7-11) -0.148 to -0.095
    assert by_delta >= 0.1 and by_control <= 0.05, (by_delta, by_control)


def test_universal_perturbation_respects_eps_and_pulls_to_the_key(mnist_splits, mnist_encoder) -> None:
    x = mnist_splits.owner.x[:256]
    x_key = key_image("photo", (1, 28, 28), seed=0)
    delta = universal_perturbation(mnist_encoder, x, x_key, eps=0.1, steps=20, step=0.01, seed=0)
    assert delta.shape == (1, 28, 28) and delta.abs().max() <= 0.1 + 1e-6
    feats = mnist_encoder(torch.cat([x_key[None], x, (x + delta).clamp(0, 1)])).detach()
    cos = torch.nn.functional.cosine_similarity
    before, after = cos(feats[1:257], feats[:1]).mean(), cos(feats[257:], feats[:1]).mean()
    assert after > before + 0.02, (before, after)


def test_key_candidates_keep_the_patch_noise_pulls_least(mnist_splits, mnist_encoder) -> None:
    from ownmark.watermarks.awencoder_trigger import noise_attraction

    keys = key_image("photo", (1, 28, 28), 0, candidates=16)
    assert keys.shape == (16, 1, 28, 28) and torch.equal(keys[0], key_image("photo", (1, 28, 28), 0))
    pull = noise_attraction(mnist_encoder, mnist_splits.test.x[:128], keys, 0.15, seed=0)
    # measured: patches differ a lot in how far noise moves features towards them (-0.17 to 0.10 on
    # the clean encoder), which is what key_candidates chooses on
    assert pull.shape == (16,) and float(pull.max() - pull.min()) > 0.05, pull
    assert torch.equal(pull, noise_attraction(mnist_encoder, mnist_splits.test.x[:128], keys, 0.15, seed=0))


def test_secret_trigger_and_key_image_are_seeded() -> None:
    t = secret_trigger((1, 8, 8), 0.1, seed=3)
    assert torch.equal(t, secret_trigger((1, 8, 8), 0.1, seed=3))
    assert torch.allclose(t.abs(), torch.tensor(0.1)) and (t > 0).any() and (t < 0).any()
    assert key_image("photo", (1, 28, 28), 0).shape == (1, 28, 28)
    assert not torch.equal(key_image("photo", (3, 16, 16), 0), key_image("photo", (3, 16, 16), 1))


def test_key_round_trips_and_detect_needs_no_calibration(tmp_path, mnist_splits) -> None:
    from ownmark.core import Key
    from ownmark.data.toy import toy_images

    enc = ModelSpec("conv4", 3, 16, 16, family="encoder").build()
    cfg = AWEncoderConfig(epochs=1, pgd_steps=2, n_verify=8, decoys=9, key_candidates=2, ssl=SSLConfig(batch_size=32))
    _, key = AWEncoder(cfg).embed(enc, toy_images(), seed=0)
    save_key(tmp_path / "k", key)
    loaded = load_key(tmp_path / "k")
    assert torch.equal(loaded.tensors["delta"], key.tensors["delta"]) and loaded.config["ssl"]["batch_size"] == 32
    assert torch.equal(loaded.tensors["decoy_delta"], key.tensors["decoy_delta"])
    ev = AWEncoder().detect(enc, loaded)  # the verdict is a rank among the decoys: no calibration needed
    assert ev.details["candidates"] == 10 and ev.details["smallest_p"] == pytest.approx(0.1) and ev.p_value >= 0.1
    assert ev.queries == 8 + 10 + 10 * 8 and ev.details["tau"] != ev.details["tau"]  # nan: not calibrated
    with pytest.raises(ConfigError, match="takes no p0"):
        AWEncoder().detect(enc, loaded, p0=0.1)
    old = Key("awencoder", loaded.config, {k: loaded.tensors[k] for k in ("delta", "x_key", "verify")}, loaded.meta)
    with pytest.raises(ConfigError, match="no decoy keys"):
        AWEncoder().detect(enc, old)
    with pytest.raises(ConfigError, match="at least 5 null"):
        AWEncoder().calibrate(loaded, {"a": enc})
    calibrated = AWEncoder().calibrate(loaded, {f"n{i}": copy.deepcopy(enc) for i in range(5)})
    assert AWEncoder().detect(enc, calibrated).p_value == ev.p_value  # calibration is reported, not decided on
    with pytest.raises(KeyMismatchError, match="cannot take"):
        AWEncoder().detect(ModelSpec("conv4", 1, 16, 28, family="encoder").build(), calibrated)
    assert effects(enc, calibrated)[2].shape == (8,)


def test_draw_key_is_the_key_embed_embeds() -> None:
    from ownmark.data.toy import toy_images

    enc = ModelSpec("conv4", 3, 16, 16, family="encoder").build()
    for trigger in ("adversarial", "secret"):
        scheme = AWEncoder(AWEncoderConfig(trigger=trigger, epochs=1, pgd_steps=2, n_verify=8, decoys=7,
                                           key_candidates=2, ssl=SSLConfig(batch_size=32)))  # fmt: skip
        drawn = scheme.draw_key(enc, toy_images(), seed=3)
        _, embedded = scheme.embed(enc, toy_images(), seed=3)
        assert drawn.tensors.keys() == embedded.tensors.keys() and drawn.meta == embedded.meta
        assert all(torch.equal(drawn.tensors[k], embedded.tensors[k]) for k in drawn.tensors)
        candidates = torch.cat([drawn.tensors["delta"][None], drawn.tensors["decoy_delta"]])
        assert candidates.shape == (8, 3, 16, 16) and len(candidates.flatten(1).unique(dim=0)) == 8
        assert float(candidates.abs().max()) <= scheme.config.eps + 1e-6


def test_constant_and_one_direction_encoders_tie_every_decoy(mnist_splits, mnist_encoder) -> None:
    """A constant encoder (or one whose features all point one way) moves no candidate: every
    score ties, and ties count against the owner, so p = 1."""
    scheme = AWEncoder(AWEncoderConfig(trigger="secret", decoys=49, n_verify=20, key_candidates=2))
    key = scheme.draw_key(mnist_encoder, mnist_splits.owner, seed=0)
    assert scheme.detect(lambda x: torch.ones(len(x), 8), key).p_value == 1.0
    assert scheme.detect_blackbox(lambda x: torch.full((len(x),), 7, dtype=torch.long), key).p_value == 1.0


def test_matched_key_has_the_datas_pixels_and_the_photos_order(mnist_splits) -> None:
    from ownmark.watermarks.awencoder_trigger import match_histogram

    photo = key_image("photo", (1, 28, 28), 0, candidates=2)
    matched = match_histogram(photo, mnist_splits.owner.x[:256])
    ref = mnist_splits.owner.x[:256].flatten()
    # mnist is mostly black: so is the matched key, unlike the grey photo patch
    assert abs(float((matched == 0).float().mean()) - float((ref == 0).float().mean())) < 0.02
    assert float((photo == 0).float().mean()) < 0.2
    # a rank remapping: brighter photo pixels stay at least as bright
    a, b = photo[0, 0].flatten(), matched[0, 0].flatten()
    order = a.argsort()
    assert bool((b[order][1:] >= b[order][:-1]).all())


def test_calibration_adds_fine_tuned_nulls_to_the_margin(mnist_splits) -> None:
    from ownmark.data.toy import toy_images

    torch.manual_seed(0)
    enc = ModelSpec("conv4", 3, 16, 16, family="encoder").build()
    cfg = AWEncoderConfig(epochs=1, pgd_steps=2, n_verify=8, key_candidates=2, decoys=5, ssl=SSLConfig(batch_size=32))
    _, key = AWEncoder(cfg).embed(enc, toy_images(), seed=0)
    nulls = {f"n{i}": ModelSpec("conv4", 3, 16, 16, family="encoder").build() for i in range(5)}
    data = toy_images()
    key = AWEncoder().calibrate(key, nulls, probe=(data, data), adapt_lrs=(1e-3,))
    effects_ = key.meta["null_effects"]
    assert len(effects_) == 10 and "n0+finetuned-lr0.001" in effects_
    pre = torch.tensor([effects_[f"n{i}"] for i in range(5)])
    assert key.meta["tau"] == pytest.approx(max(effects_.values()) + 3 * float(pre.std()))
    plain = AWEncoder().calibrate(key, nulls)
    assert len(plain.meta["null_effects"]) == 5 and plain.meta["null_sd"] == pytest.approx(float(pre.std()))


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"trigger": "patch"}, "trigger"), ({"eps": 0.0}, "eps"), ({"lambda_wm": 0.0}, "lambda_wm"),
     ({"anchor": "moving"}, "anchor"), ({"key_image": "logo"}, "key_image"), ({"lambda_neg": -1.0}, "lambda_neg"),
     ({"key_candidates": 0}, "key_candidates"), ({"bn_refresh": -1}, "bn_refresh"), ({"decoys": 0}, "decoys"),
     ({"decoys": 9.5}, "decoys"), ({"pgd_batch": 0}, "pgd_batch"), ({"controls": -1}, "controls")],
)  # fmt: skip
def test_bad_configs(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AWEncoderConfig(**kw)


@pytest.mark.slow
def test_models_made_without_the_secret_over_key_draws(mnist_splits, mnist_encoder, nulls) -> None:
    """20 key draws (secret variant, 19 decoys: p on the grid 0.05, 0.10, ..., 1) scored on the owner's
    clean encoder, two independent encoders, a constant encoder, and (black-box) an unbiased, a
    label-biased and a constant-label classifier.

    Unit of independence: the key draw, per model. For one model the 20 p-values come from
    independent draws and each is exact (a uniform rank, ties against the owner), so its claims at
    0.05 follow at most Bin(20, 0.05): P(>= 5) = 0.0026. P-values of different models under one key
    are NOT independent (a key whose delta happens to pull towards its key image pulls on every
    encoder), so claims are never pooled across models. Measured before this test was rewritten
    (99 decoys, 40 images, 9 models): the 5 claims at 0.01 among 180 p-values fell on 2 keys, key 2
    (owner's clean encoder, simclr-201, simclr-202 and moco-203, all p 0.01) and key 19 (simclr-201),
    which a binomial test over all 180 treated as 5 independent events. 19 decoys instead of 99
    (5x cheaper) test the same exactness at a level where a valid test claims 1 key in 20.
    """
    scheme = AWEncoder(AWEncoderConfig(decoys=19, n_verify=40, key_candidates=8))
    white = {"owner-clean": mnist_encoder, **nulls, "constant": lambda x: torch.ones(len(x), 16)}
    clf = linear_probe(mnist_encoder, mnist_splits.attacker, mnist_splits.test, seed=0).classifier

    def biased(x: torch.Tensor) -> torch.Tensor:  # answers label 3 for most images
        logits = clf(x).detach()
        return logits + 4.0 * torch.nn.functional.one_hot(torch.tensor(3), logits.shape[1])

    black = {"probe": clf, "biased-3": biased, "constant-7": lambda x: torch.full((len(x),), 7, dtype=torch.long)}
    p = {n: [] for n in [*white, *black]}
    seeds = range(1, 21)
    for seed in seeds:
        key = scheme.draw_key(mnist_encoder, mnist_splits.owner, seed=seed)
        for n, m in white.items():
            p[n].append(scheme.detect(m, key).p_value)
        for n, c in black.items():
            p[n].append(scheme.detect_blackbox(c, key).p_value)
    assert all(q == 1.0 for q in p["constant"] + p["constant-7"])
    claimed = {n: [s for s, q in zip(seeds, ps, strict=True) if q <= 0.05] for n, ps in p.items()}
    # measured (2026-12-06): owner-clean keys 9, 12 and 15, simclr-201 key 15, moco-203 key 4, probe and
    # biased-3 key 11 (black-box by distinctness); mean p 0.49-0.58
    assert all(len(keys) <= 4 for keys in claimed.values()), claimed
    # the whole distribution, not only its tail: a valid rank has mean p 0.525 (sd of the mean over 20
    # keys ~0.065)
    assert all(sum(ps) / len(ps) >= 0.3 for ps in p.values()), {n: sum(ps) / len(ps) for n, ps in p.items()}
    assert min(q for ps in p.values() for q in ps) >= 0.05  # the smallest p-value 19 decoys can give


@pytest.mark.slow
def test_purifier_sized_to_the_budget_weakens_but_does_not_remove_the_mark(marked, mnist_splits) -> None:
    """enc-purify, the adaptive attack on AWEncoder: 2-bit requantisation + 3x3 median in front of the marked
    encoder (the thief knows eps 0.15, not delta). Measured (this module's default secret mark, 99 decoys):
    the key's mean effect falls from 0.154 to 0.018 (the decoys' largest 0.013), yet still ranks first
    (p 0.01, the smallest possible): the purifier erases most of the pull, not its direction. Probe 0.906
    vs 0.927 (a 5-epoch mark: 0.145 to 0.020, the same verdict)."""
    from ownmark.attacks import ATTACKS

    scheme, encoder, key = marked
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    purified, cost = ATTACKS.get("enc-purify")()(encoder, None, seed=0)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert cost.details == {"bits": 2, "kernel_size": 3} and cost.queries == 0
    probe = (mnist_splits.attacker, mnist_splits.test)
    ev = scheme.detect(purified, key)
    assert ev.details["effect"] <= 0.06 and decide(ev, 0.01).owned, ev.details
    acc, acc_marked = linear_probe(purified, *probe).accuracy, linear_probe(encoder, *probe).accuracy
    assert acc >= acc_marked - 0.03, (acc, acc_marked)


def test_photo_patches_and_histogram_matching_equal_their_one_at_a_time_definitions() -> None:
    """The batched key-image draw (one photo load and resize for every seed) and the O(n) rank in
    match_histogram give exactly what one call per seed and a double argsort gave."""
    from ownmark.watermarks.awencoder_trigger import match_histogram, photo_patches

    seeds = [3, 40, 41, 977]
    batched = photo_patches((1, 28, 28), seeds, 5)
    assert torch.equal(batched, torch.cat([key_image("photo", (1, 28, 28), s, 5) for s in seeds]))
    images = (torch.rand(6, 3, 9, 9, generator=torch.Generator().manual_seed(0)) * 8).floor() / 8  # many ties
    reference = torch.rand(20, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    expected = torch.empty_like(images)
    for c in range(3):
        ref = reference[:, c].flatten().sort().values
        flat = images[:, c].flatten(1)
        ranks = flat.argsort(1).argsort(1).float() / (flat.shape[1] - 1)
        expected[:, c] = ref[(ranks * (len(ref) - 1)).round().long()].view_as(images[:, c])
    assert torch.equal(match_histogram(images, reference), expected)
