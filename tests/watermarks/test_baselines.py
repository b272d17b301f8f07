"""Content, noise and unrelated trigger sets: the scheme contracts on toy data, trigger making,
config checks, and the must-hold figures on mnist5k at reduced scale."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import pytest
import torch
from torch import nn

from ownmark.core import Key
from ownmark.data import ImageSet, load_dataset
from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError, KeyMismatchError
from ownmark.families.classifier import Context, train_model
from ownmark.io import load_key, save_key
from ownmark.models import ModelSpec
from ownmark.train import TrainConfig, accuracy, fit, predict_logits
from ownmark.verify import decide
from ownmark.watermarks import WATERMARKS
from ownmark.watermarks.baselines import (
    Content,
    ContentConfig,
    NoiseConfig,
    Unrelated,
    UnrelatedConfig,
    to_image_shape,
)

NAMES = ["content", "noise", "unrelated"]
EXACT = "donot_use_mm_for_euclid_dist"  # cdist without the matrix-product shortcut (its error is ~1e-2)
# 16 + 16 triggers from 96 toy images; constant lr so every trigger is seen at full strength
TOY = dict(
    n_embed=16, n_verify=16, epochs=6, batch_size=8, triggers_per_batch=2, lr=0.02, milestones=(), negatives_per_batch=2
)


def toy_config(name: str, **changes):
    """The toy setting; unrelated with one label (its random-label default has tests of its own)."""
    extra = {"labels": "target"} if name == "unrelated" else {}
    return WATERMARKS.get(name).config_class(**{**TOY, **extra, **changes})


@dataclass
class ToyRun:
    data: ImageSet
    base: nn.Module
    before: dict[str, torch.Tensor]
    clean: nn.Module
    runs: dict[str, tuple[nn.Module, Key]]


@pytest.fixture(scope="module")
def toy() -> ToyRun:
    """A briefly trained toy cnn2, its three marked copies, and a copy fine-tuned without triggers."""
    data = toy_images(0, n=96)
    base = train_model(ModelSpec("cnn2", 3, 4, 16), data, seed=0, config=TrainConfig(epochs=5, batch_size=16, lr=0.05))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    runs = {name: WATERMARKS.get(name)(toy_config(name)).embed(base, data, seed=0) for name in NAMES}
    clean = copy.deepcopy(base)
    fit(clean, data, ContentConfig(**TOY).train_config(), seed=0)  # the same fine-tuning, no triggers
    return ToyRun(data, base, before, clean, runs)


@pytest.mark.parametrize("name", NAMES)
def test_embed_leaves_the_input_model_bit_identical(name: str, toy: ToyRun) -> None:
    assert all(torch.equal(toy.before[k], v) for k, v in toy.base.state_dict().items())
    assert toy.runs[name][0] is not toy.base


@pytest.mark.parametrize("name", NAMES)
def test_marked_beats_unmarked_evidence(name: str, toy: ToyRun) -> None:
    scheme = WATERMARKS.get(name)()
    marked, key = toy.runs[name]
    on_marked, on_clean = scheme.detect(marked, key), scheme.detect(toy.clean, key)
    assert on_marked.n == on_clean.n == 16
    assert on_marked.details["candidates"] == 200 and on_marked.details["smallest_p"] == 1 / 200
    assert on_marked.k >= on_clean.k + 4  # margin: a quarter of the verification set
    assert decide(on_marked).p_value < decide(on_clean).p_value


@pytest.mark.parametrize("name", NAMES)
def test_p0_is_refused_and_old_keys_without_decoys_are_refused(name: str, toy: ToyRun) -> None:
    marked, key = toy.runs[name]
    with pytest.raises(ConfigError, match="no p0"):
        WATERMARKS.get(name)().detect(marked, key, p0=0.3)
    old = Key(key.scheme, key.config, {k: v for k, v in key.tensors.items() if "decoy" not in k}, key.meta)
    with pytest.raises(KeyMismatchError, match="embed again"):
        WATERMARKS.get(name)().detect(marked, old)


@pytest.mark.parametrize("name", NAMES)
def test_draw_key_is_the_key_embed_makes(name: str, toy: ToyRun) -> None:
    _, key = toy.runs[name]
    drawn = WATERMARKS.get(name)(toy_config(name)).draw_key(toy.base, toy.data, seed=0)
    assert (drawn.meta, drawn.config) == (key.meta, key.config) and drawn.tensors.keys() == key.tensors.keys()
    assert all(torch.equal(drawn.tensors[k], v) for k, v in key.tensors.items())


@pytest.mark.parametrize("name", NAMES)
def test_constant_and_biased_answerers_are_never_owned(name: str, toy: ToyRun) -> None:
    """Over 20 key draws: one label everywhere (the key's own label included), or a clean model
    pushed towards the key's label, never reach alpha 0.01."""
    scheme = WATERMARKS.get(name)(toy_config(name))
    for seed in range(20):
        key = scheme.draw_key(toy.base, toy.data, seed=seed)
        t = key.meta["target"]

        def constant(x: torch.Tensor, t: int = t) -> torch.Tensor:
            return torch.full((len(x),), t)

        def biased(x: torch.Tensor, t: int = t) -> torch.Tensor:
            logits = toy.clean(x).detach()
            return logits + 3.0 * torch.nn.functional.one_hot(torch.tensor(t), 4)

        assert decide(scheme.detect(constant, key)).p_value == 1.0
        assert not decide(scheme.detect(biased, key)).owned


@pytest.mark.parametrize("name", NAMES)
def test_key_survives_save_and_load(name: str, toy: ToyRun, tmp_path) -> None:
    marked, key = toy.runs[name]
    save_key(tmp_path / "key", key)
    loaded = load_key(tmp_path / "key")
    assert (loaded.scheme, loaded.meta, loaded.config) == (name, key.meta, key.config)
    assert loaded.tensors.keys() == key.tensors.keys()
    assert all(torch.equal(loaded.tensors[k], v) for k, v in key.tensors.items())
    scheme = WATERMARKS.get(name)()
    assert scheme.detect(marked, loaded).k == scheme.detect(marked, key).k


@pytest.mark.parametrize("name", ["content", "noise"])
def test_verification_set_shares_no_image_with_the_embedding_set(name: str, toy: ToyRun) -> None:
    t = toy.runs[name][1].tensors
    assert t["embed_x"].shape == t["verify_x"].shape == (16, 3, 16, 16)
    assert not set(t["embed_index"].tolist()) & set(t["verify_index"].tolist())
    assert torch.cdist(t["verify_x"].flatten(1), t["embed_x"].flatten(1)).min() > 1e-3


@pytest.mark.parametrize("name", ["content", "noise"])
def test_embedding_triggers_come_from_other_classes_and_verification_sources_from_any(name: str) -> None:
    data = toy_images(0, n=96)
    scheme = WATERMARKS.get(name)(toy_config(name))
    tensors, target = scheme.make_triggers(data, seed=5)
    assert (data.y[tensors["embed_index"]] != target).all()
    assert (tensors["embed_y"] == target).all() and (tensors["verify_y"] == target).all()
    assert torch.equal(tensors["verify_source"], data.x[tensors["verify_index"]])
    assert torch.equal(tensors["verify_x"], scheme.apply(tensors["verify_source"], tensors["pattern"]))
    assert len(set(data.y[tensors["verify_index"]].tolist())) == 4  # every class, the target's too
    assert tensors["decoy_patterns"].shape[0] == 199
    assert not torch.equal(tensors["decoy_patterns"][0], tensors["pattern"])


def test_content_stamps_the_secret_patch_in_the_corner_only() -> None:
    data = toy_images(0, n=96)
    tensors, _ = Content(ContentConfig(**TOY)).make_triggers(data, seed=1)
    x, source, patch = tensors["embed_x"], data.x[tensors["embed_index"]], tensors["pattern"]
    assert patch.shape == (3, 3, 3)  # 0.2 of 16 pixels, rounded
    assert (x[:, :, -3:, -3:] == patch).all()
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[-3:, -3:] = False
    assert torch.equal(x[:, :, outside], source[:, :, outside])


def test_same_seed_gives_the_same_triggers_and_content_and_noise_share_sources() -> None:
    data = toy_images(0, n=96)
    (one, t1), (two, _), (other, _) = (Content(ContentConfig(**TOY)).make_triggers(data, seed=s) for s in (3, 3, 4))
    assert torch.equal(one["embed_x"], two["embed_x"]) and not torch.equal(one["embed_x"], other["embed_x"])
    noise, t2 = WATERMARKS.get("noise")(NoiseConfig(**TOY)).make_triggers(data, seed=3)
    assert t1 == t2 and torch.equal(one["verify_index"], noise["verify_index"])


def test_unrelated_images_are_converted_to_the_owners_shape() -> None:
    photos = load_dataset("photos")
    grey = to_image_shape(photos.x[:4], (1, 28, 28))
    assert grey.shape == (4, 1, 28, 28) and 0 <= grey.min() and grey.max() <= 1
    flat = torch.full((1, 3, 32, 32), 0.25)
    flat[:, 0] = 1.0
    assert torch.allclose(to_image_shape(flat, (1, 8, 8)), torch.tensor(0.5))  # the mean over RGB
    with pytest.raises(ConfigError, match="owner's own dataset"):
        Unrelated(UnrelatedConfig(source="toy", **TOY)).make_triggers(toy_images(0, n=96), seed=0)


def test_random_labels_verify_on_embedding_triggers_each_with_its_own_label(tmp_path) -> None:
    cfg = UnrelatedConfig(labels="random", **{**TOY, "n_verify": 8, "epochs": 1})
    marked, key = Unrelated(cfg).embed(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(0, n=96), seed=0)
    t = key.tensors
    assert key.meta["target"] is None and len(t["embed_y"].unique()) > 1
    assert torch.equal(t["verify_x"], t["embed_x"][:8]) and torch.equal(t["verify_y"], t["embed_y"][:8])
    save_key(tmp_path / "key", key)  # verify_* are copies: safetensors refuses tensors sharing memory
    evidence = Unrelated().detect(marked, load_key(tmp_path / "key"))
    assert (evidence.n, evidence.p0) == (8, 0.25)


_BAD = [
    ("n_embed", 0), ("n_verify", 2.5), ("target", -2), ("triggers_per_batch", 0), ("epochs", True), ("lr", 0.0),
    ("weight_decay", -1.0), ("milestones", (1.5,)),
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("field", "value"), _BAD)
def test_config_rejects_bad_shared_values(name: str, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        WATERMARKS.get(name).config_class(**{field: value})


@pytest.mark.parametrize(
    ("config_class", "changes", "field"),
    [
        (ContentConfig, {"patch_fraction": 0.7}, "patch_fraction"),
        (NoiseConfig, {"std": 0.0}, "std"),
        (UnrelatedConfig, {"labels": "zip"}, "labels"),
        (UnrelatedConfig, {"source": ""}, "source"),
        (UnrelatedConfig, {"labels": "random", "target": 3}, "target"),
        (UnrelatedConfig, {"labels": "random", "n_embed": 10, "n_verify": 20}, "n_verify"),
    ],
)
def test_config_rejects_bad_scheme_values(config_class: type, changes: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        config_class(**changes)


def test_dataset_problems_are_clear_errors() -> None:
    data = toy_images(0, n=64)
    with pytest.raises(ConfigError, match="n_embed"):
        Content(ContentConfig(n_embed=40, n_verify=40)).make_triggers(data, seed=0)
    with pytest.raises(ConfigError, match="target"):
        Content(ContentConfig(target=7)).make_triggers(data, seed=0)
    with pytest.raises(TypeError, match="ContentConfig"):
        Content(NoiseConfig())


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_must_hold_baselines_on_mnist5k(name: str, mnist, mnist_content) -> None:
    """Defaults on mnist5k: the marked model is OWNED at alpha 0.01, clean accuracy kept; the owner's
    unmarked model, a model that answers the key's label everywhere and one biased towards it are not."""
    ctx, clean = mnist
    scheme = WATERMARKS.get(name)
    marked, key = mnist_content if name == "content" else scheme().embed(clean, ctx.splits.owner, seed=0)
    evidence = scheme().detect(marked, key)
    if name == "unrelated":  # random labels, memorised: verified on embedding triggers
        assert evidence.n == 50 and evidence.rate >= 0.6  # measured 39/50
        assert decide(evidence).p_value <= 1e-4
    else:  # held-out triggers; measured 80 (content, lr 0.05; best decoy 18) and 68 (noise) of 100, p 1/200
        assert evidence.n == 100 and evidence.rate >= 0.4
        assert decide(evidence).p_value == pytest.approx(1 / 200)
    assert abs(accuracy(marked, ctx.splits.test) - accuracy(clean, ctx.splits.test)) <= 0.03
    t = key.meta["target"] if key.meta["target"] is not None else 0
    push = 8.0 * torch.nn.functional.one_hot(torch.tensor(t), 10)
    for null in (clean, lambda x: torch.full((len(x),), t), lambda x: predict_logits(clean, x) + push):
        assert not decide(scheme().detect(null, key)).owned


@pytest.mark.slow
@pytest.mark.parametrize("name", ["content", "noise", "unrelated"])
def test_null_models_over_30_key_draws_keep_the_false_claim_rate(name: str, mnist) -> None:
    """30 keys drawn by draw_key against the owner's unmarked model and a copy pushed towards each
    key's own label (+8 on its logit): at most 2 claims each at alpha 0.01 (Binomial(30, 0.01)
    reaches 3 with probability 0.3%). 99 decoys of 50 images (smallest p 0.01, still <= alpha)
    keep the test within a minute; the rank's validity does not depend on those sizes."""
    ctx, clean = mnist
    scheme = WATERMARKS.get(name)(replace(WATERMARKS.get(name).config_class(), decoys=99, n_verify=50))
    claims = {"unmarked": 0, "biased": 0}
    for seed in range(100, 130):
        key = scheme.draw_key(clean, ctx.splits.owner, seed=seed)
        t = key.meta["target"] if key.meta["target"] is not None else 0
        push = 8.0 * torch.nn.functional.one_hot(torch.tensor(t), 10)
        answers = _Remembered(clean)  # both suspects query the same images: the unmarked model answers once
        claims["unmarked"] += decide(scheme.detect(answers, key)).owned
        claims["biased"] += decide(scheme.detect(lambda x, push=push, f=answers: f(x) + push, key)).owned
        assert answers.asked == 2 * answers.computed > 0  # the second suspect saw exactly the first's images
    assert max(claims.values()) <= 2, claims


class _Remembered:
    """The logits of ``model``, each image batch computed once (keyed by its bytes)."""

    def __init__(self, model) -> None:
        self.model, self.seen, self.asked, self.computed = model, {}, 0, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import hashlib

        self.asked += 1
        tag = hashlib.sha1(x.numpy().tobytes()).hexdigest() + str(tuple(x.shape))
        if tag not in self.seen:
            self.computed += 1
            self.seen[tag] = predict_logits(self.model, x)
        return self.seen[tag]


@pytest.fixture(scope="module")
def mnist(mnist_cnn2):
    return Context.load("mnist5k"), mnist_cnn2


def test_random_labels_are_balanced_so_a_biased_null_model_matches_one_in_k() -> None:
    cfg = UnrelatedConfig(n_embed=40, n_verify=20, epochs=1, batch_size=16, triggers_per_batch=2)
    tensors, _ = Unrelated(cfg).make_triggers(toy_images(0, n=96), seed=3)
    assert torch.bincount(tensors["verify_y"], minlength=4).tolist() == [5, 5, 5, 5]
    assert torch.bincount(tensors["embed_y"], minlength=4).tolist() == [10, 10, 10, 10]

    def biased(x: torch.Tensor) -> torch.Tensor:  # an independent model that favours class 2
        return torch.full((len(x),), 2)

    key = Key("unrelated", {}, tensors, {"num_classes": 4, "input_shape": [3, 16, 16]})
    evidence = Unrelated().detect(biased, key)
    assert evidence.k == 5 and not decide(evidence).owned


def test_unrelated_triggers_come_from_the_owners_half_and_never_from_the_attackers() -> None:
    """The owner's unrelated triggers and decoys and the attacker's distillation queries are disjoint."""
    from ownmark.data.splits import ood_part

    data = toy_images(0, n=96)
    owner = to_image_shape(ood_part(load_dataset("photos"), "owner").x, data.shape)
    attacker = to_image_shape(ood_part(load_dataset("photos"), "attacker").x, data.shape)
    for cfg in (UnrelatedConfig(**{**TOY, "n_embed": 100, "n_verify": 50}), toy_config("unrelated")):
        tensors, _ = Unrelated(cfg).make_triggers(data, seed=0)
        decoys = [tensors["ood_pool"][tensors["decoy_index"].flatten()]] if "decoy_index" in tensors else []
        used = torch.cat([tensors["embed_x"], *decoys])
        assert torch.cdist(used.flatten(1), attacker.flatten(1), compute_mode=EXACT).min() > 1e-4
        assert torch.cdist(used.flatten(1), owner.flatten(1), compute_mode=EXACT).min(1).values.max() < 1e-5


def test_random_labels_give_an_exact_permutation_p_value(toy: ToyRun) -> None:
    """A model that memorised the arrangement gets the smallest p-values; constant answerers get 1."""
    cfg = UnrelatedConfig(**{**TOY, "n_verify": 16})
    key = Unrelated(cfg).draw_key(toy.base, toy.data, seed=1)
    truth = dict(
        zip(map(tuple, key.tensors["verify_x"].flatten(1).tolist()), key.tensors["verify_y"].tolist(), strict=True)
    )

    def memorised(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([truth.get(tuple(row), 0) for row in x.flatten(1).tolist()])

    evidence = Unrelated().detect(memorised, key)
    assert evidence.k == 16 and evidence.test == "permutation over the secret label arrangement"
    assert decide(evidence).p_value < 1e-4 and evidence.details["smallest_p"] == 1e-5
    for label in range(4):
        assert decide(Unrelated().detect(lambda x, c=label: torch.full((len(x),), c), key)).p_value == 1.0
