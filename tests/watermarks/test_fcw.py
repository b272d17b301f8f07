"""FCW: fusions, masking, key handling, and the issue's must-hold figures at reduced scale."""

from __future__ import annotations

import pytest
import torch

from ownmark.bench.experiment import Context, null_models, train_model
from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError, KeyMismatchError
from ownmark.io import load_key, save_key
from ownmark.models import ModelSpec
from ownmark.train import TrainConfig, accuracy
from ownmark.verify import LabelOracle, decide, min_queries, sequential_verify
from ownmark.watermarks import WATERMARKS
from ownmark.watermarks.fcw import FCW, FCWConfig, eligible_weights, fuse_direct, fuse_invisible, random_mask_hook

TOY = FCWConfig(n_embed=4, n_verify=4, epochs=1, batch_size=16, triggers_per_batch=2)


def test_direct_fusion_places_images_in_quadrants() -> None:
    xa, xb = torch.full((1, 1, 4, 4), 0.2), torch.full((1, 1, 4, 4), 0.6)
    fused = fuse_direct(xa, xb)
    assert fused.shape == (1, 1, 4, 4)
    assert torch.allclose(fused[0, 0, :2, :2], torch.tensor(0.2))  # x_a top-left
    assert torch.allclose(fused[0, 0, 2:, 2:], torch.tensor(0.6))  # x_b bottom-right
    assert torch.allclose(fused[0, 0, :2, 2:], torch.tensor(1.0))  # other quadrants at maximum
    assert torch.allclose(fused[0, 0, 2:, :2], torch.tensor(1.0))


def test_invisible_fusion_is_a_blend() -> None:
    xa, xb = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert torch.allclose(fuse_invisible(xa, xb, 0.75), torch.full((2, 3, 4, 4), 0.75))


def test_triggers_use_two_sources_and_a_third_label_with_held_out_images() -> None:
    data = toy_images(seed=0, n=200)
    trig = FCW(FCWConfig(n_embed=10, n_verify=20)).make_triggers(data, seed=3)
    a, b, t = trig["sources"].tolist()
    assert len({a, b, t}) == 3
    assert trig["embed_x"].shape == (10, 3, 16, 16) and trig["verify_x"].shape == (20, 3, 16, 16)
    assert (trig["embed_y"] == t).all() and (trig["verify_y"] == t).all()
    # no verification trigger equals an embedding trigger: they come from other source images
    dist = torch.cdist(trig["verify_x"].flatten(1), trig["embed_x"].flatten(1))
    assert dist.min() > 1e-3


def test_seeded_pairing_is_reproducible_and_differs_across_seeds() -> None:
    data = toy_images(seed=0, n=200)
    scheme = FCW(FCWConfig(n_embed=5, n_verify=5, source_a=0, source_b=1, target=2))
    one, two, other = (scheme.make_triggers(data, seed=s)["embed_x"] for s in (1, 1, 2))
    assert torch.equal(one, two) and not torch.equal(one, other)
    ordered = FCW(FCWConfig(n_embed=5, n_verify=5, source_a=0, source_b=1, target=2, pairing="ordered"))
    assert torch.equal(ordered.make_triggers(data, seed=1)["embed_x"], ordered.make_triggers(data, seed=2)["embed_x"])


def test_masking_zeroes_the_share_of_eligible_weights_only() -> None:
    model = ModelSpec("cnn2", 1, 10, 28).build()
    for p in model.parameters():
        torch.nn.init.constant_(p, 1.0)
    weights = eligible_weights(model)
    assert all(w is not model[-1].weight for w in weights)  # the final classifier is never masked
    total = sum(w.numel() for w in weights)
    random_mask_hook(0.01, 1, seed=0)(model, 0)
    assert sum(int((w == 0).sum()) for w in weights) == int(0.01 * total)
    assert (model[-1].weight == 1).all() and all(
        (m.bias == 1).all() for m in model if hasattr(m, "bias") and m.bias is not None
    )
    before = [w.clone() for w in weights]
    random_mask_hook(0.01, 10, seed=0)(model, 5)  # step 5 is not a masking step at period 10
    assert all(torch.equal(b, w) for b, w in zip(before, weights, strict=True))


@pytest.mark.parametrize(
    ("field", "value"),
    [("fusion", "blend"), ("ratio", 1.0), ("n_embed", 0), ("mask_ratio", 1.5), ("pairing", "zip"), ("target", -3)],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        FCWConfig(**{field: value})


def test_config_rejects_equal_classes() -> None:
    with pytest.raises(ConfigError, match="distinct"):
        FCWConfig(source_a=1, source_b=1)


def test_too_few_source_images_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="n_embed"):
        FCW(FCWConfig(n_embed=100, n_verify=100)).embed(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)


def test_embed_leaves_model_untouched_and_key_round_trips(tmp_path) -> None:
    model = ModelSpec("cnn2", 3, 4, 16).build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    marked, key = FCW(TOY).embed(model, toy_images(), seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    save_key(tmp_path / "key", key)
    loaded = load_key(tmp_path / "key")
    assert loaded.scheme == "fcw" and loaded.meta == key.meta and loaded.config == key.config
    assert all(torch.equal(loaded.tensors[k], v) for k, v in key.tensors.items())
    assert FCW().detect(marked, loaded).k == FCW().detect(marked, key).k


def test_same_seed_gives_bit_identical_marked_models() -> None:
    model = ModelSpec("cnn2", 3, 4, 16).build()
    (m1, k1), (m2, k2) = (FCW(TOY).embed(model, toy_images(), seed=4) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True))
    assert all(torch.equal(k1.tensors[n], k2.tensors[n]) for n in k1.tensors)


def test_key_with_another_model_shape_or_class_count_is_refused() -> None:
    _, key = FCW(TOY).embed(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
    with pytest.raises(KeyMismatchError, match="model takes"):
        FCW().detect(ModelSpec("cnn2", 1, 4, 28).build(), key)
    with pytest.raises(KeyMismatchError, match="classes"):
        FCW().detect(ModelSpec("cnn2", 3, 7, 16).build(), key)


def test_black_box_label_function_gives_same_evidence_as_module() -> None:
    marked, key = FCW(TOY).embed(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
    oracle = LabelOracle(marked)
    white, black = FCW().detect(marked, key), FCW().detect(lambda x: oracle(x), key)
    assert (white.k, white.n, white.queries) == (black.k, black.n, black.queries)


@pytest.mark.parametrize("name", WATERMARKS.names())
def test_every_scheme_config_default_and_presets_construct(name: str) -> None:
    cls = WATERMARKS.get(name)
    assert isinstance(cls.config_class(), cls.config_class)
    for preset in cls.presets.values():
        assert preset.source and isinstance(preset.config, cls.config_class)


@pytest.fixture(scope="module")
def mnist_run():
    """Clean cnn2, FCW-marked copy and key on mnist5k (the issue's reduced-scale setting)."""
    ctx = Context.load("mnist5k", split_seed=0)
    clean = train_model(ctx.spec("cnn2"), ctx.splits.owner, seed=0)
    marked, key = FCW().embed(clean, ctx.splits.owner, seed=0)
    return ctx, clean, marked, key


@pytest.mark.slow
def test_must_hold_fcw_on_mnist5k(mnist_run) -> None:
    ctx, clean, marked, key = mnist_run
    clean_acc, marked_acc = accuracy(clean, ctx.splits.test), accuracy(marked, ctx.splits.test)
    assert clean_acc > 0.93  # a real classifier, not chance
    assert abs(clean_acc - marked_acc) <= 0.02  # fidelity: within 2 points
    evidence = FCW().detect(marked, key)
    assert evidence.n == 100 and evidence.rate >= 0.90  # held-out triggers
    assert decide(evidence).p_value <= 1e-6
    assert decide(FCW().detect(clean, key)).owned is False  # the model before marking


@pytest.mark.slow
def test_must_hold_no_false_claims_on_independent_models(mnist_run) -> None:
    ctx, _, _, key = mnist_run
    quick = TrainConfig(epochs=6, lr=0.05)  # independent, real classifiers (88-95% here), trained quickly
    models = null_models(ctx, ["cnn2", "lenet"], [11, 12], config=quick)
    assert len(models) >= 5
    assert all(accuracy(m, ctx.splits.test) > 0.85 for m in models.values())
    verdicts = {name: decide(FCW().detect(m, key), 0.01) for name, m in models.items()}
    assert [n for n, v in verdicts.items() if v.owned] == []
    assert all(v.p_value > 0.05 for v in verdicts.values())


@pytest.mark.slow
def test_must_hold_sequential_verification_is_near_the_limit(mnist_run) -> None:
    _, _, marked, key = mnist_run
    oracle = LabelOracle(marked, num_classes=10)
    xv, yv = key.tensors["verify_x"], key.tensors["verify_y"]
    verdict = sequential_verify(lambda i: bool(oracle(xv[i : i + 1])[0] == yv[i]), len(xv), p0=0.1, alpha=0.01)
    assert verdict.owned
    assert verdict.queries == oracle.queries
    assert verdict.queries <= 1.5 * min_queries(0.01, 0.1)
