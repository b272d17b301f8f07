"""FCW: fusions, masking, key handling, and the issue's must-hold figures at reduced scale."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError, KeyMismatchError
from ownmark.families.classifier import Context, train_model
from ownmark.io import load_key, save_key
from ownmark.models import ModelSpec
from ownmark.train import accuracy, predict_logits
from ownmark.verify import LabelOracle, decide
from ownmark.verify.randomization import candidate_pvalue
from ownmark.watermarks import WATERMARKS
from ownmark.watermarks.fcw import (
    FCW,
    FCWConfig,
    eligible_weights,
    fuse_direct,
    fuse_invisible,
    fusion_rates,
    random_mask_hook,
    triple_scores,
)

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
    scheme = FCW(FCWConfig(n_embed=10, n_verify=20))
    trig = scheme.make_triggers(data, seed=3)
    a, b, t = trig["sources"].tolist()
    assert len({a, b, t}) == 3
    assert trig["embed_x"].shape == (10, 3, 16, 16) and trig["verify_x"].shape == (20, 3, 16, 16)
    assert trig["pool_x"].shape == (4, 20, 3, 16, 16)  # n_verify held-out images of every class
    assert (trig["embed_y"] == t).all() and (trig["verify_y"] == t).all()
    assert torch.equal(trig["verify_x"], scheme.fuse(trig["pool_x"][a], trig["pool_x"][b]))
    # no verification trigger equals an embedding trigger: they come from other source images
    dist = torch.cdist(trig["verify_x"].flatten(1), trig["embed_x"].flatten(1))
    assert dist.min() > 1e-3


def test_class_triples_are_uniform_and_the_pool_does_not_depend_on_them() -> None:
    data = toy_images(seed=0, n=200)
    scheme = FCW(FCWConfig(n_embed=10, n_verify=20))
    triples = [tuple(scheme.draw_classes(4, seed=s)) for s in range(2400)]
    counts = torch.tensor([triples.count(t) for t in set(triples)], dtype=torch.float)
    assert len(counts) == 24 and counts.min() > 60 and counts.max() < 140  # 100 expected for each of 24
    fixed = FCW(FCWConfig(n_embed=10, n_verify=20, source_a=0, source_b=1, target=2))
    assert torch.equal(scheme.make_triggers(data, seed=5)["pool_x"], fixed.make_triggers(data, seed=5)["pool_x"])


def test_draw_key_is_the_key_embed_makes() -> None:
    model = ModelSpec("cnn2", 3, 4, 16).build()
    _, key = FCW(TOY).embed(model, toy_images(), seed=2)
    drawn = FCW(TOY).draw_key(model, toy_images(), seed=2)
    assert drawn.meta == key.meta and drawn.config == key.config
    assert all(torch.equal(drawn.tensors[n], key.tensors[n]) for n in key.tensors)


def test_code_presets_use_invisible_fusion_at_ratio_half() -> None:
    for name in ("code-latest", "code-dense", "code-first"):
        cfg = FCW.presets[name].config
        assert (cfg.fusion, cfg.ratio, cfg.pairing) == ("invisible", 0.5, "ordered"), name
    assert FCWConfig().fusion == "invisible"


def test_scores_give_nothing_to_a_label_answered_everywhere() -> None:
    rates = torch.zeros(4, 4, 4)
    rates[..., 3] = 1.0
    scores = triple_scores(rates)
    finite = scores[scores != -float("inf")]
    assert len(finite) == 24 and (finite == 0).all()
    assert scores[0, 0, 1] == -float("inf") and scores[0, 1, 0] == -float("inf")


def test_symmetric_blend_asks_each_unordered_pair_once() -> None:
    pool = toy_images(seed=0, n=64).x[:24].reshape(4, 6, 3, 16, 16)
    labels = LabelOracle(lambda x: (x.mean((1, 2, 3)) * 40).long() % 4)
    both = fusion_rates(labels, pool, lambda a, b: fuse_invisible(a, b, 0.5))
    once = LabelOracle(labels.suspect)
    half = fusion_rates(once, pool, lambda a, b: fuse_invisible(a, b, 0.5), symmetric=True)
    assert torch.equal(torch.nan_to_num(both), torch.nan_to_num(half))
    assert labels.queries == 12 * 6 and once.queries == 6 * 6


def test_constant_and_biased_label_functions_are_never_owned() -> None:
    data = toy_images(seed=0, n=200)
    scheme = FCW(FCWConfig(n_embed=10, n_verify=20))
    for seed in range(20):
        key = scheme.draw_key(None, data, seed=seed)
        t = int(key.tensors["sources"][2])
        constant = scheme.detect(lambda x, t=t: torch.full((len(x),), t), key)
        assert constant.p_value == 1.0 and constant.details["rate"] == 1.0
        biased = scheme.detect(lambda x, t=t: torch.where(x.mean((1, 2, 3)) > 0.45, t, 0), key)
        assert not decide(biased, 0.01).owned


def test_p0_is_refused_and_keys_without_pool_are_refused() -> None:
    key = FCW(TOY).draw_key(None, toy_images(), seed=0)
    model = ModelSpec("cnn2", 3, 4, 16).build()
    with pytest.raises(ConfigError, match="p0"):
        FCW().detect(model, key, p0=0.1)
    old = dataclasses.replace(key, tensors={n: v for n, v in key.tensors.items() if n != "pool_x"})
    with pytest.raises(KeyMismatchError, match="embed again"):
        FCW().detect(model, old)


def test_user_fixed_classes_warn_that_the_rank_assumes_a_random_choice() -> None:
    key = FCW(FCWConfig(n_embed=4, n_verify=4, target=1)).draw_key(None, toy_images(), seed=0)
    with pytest.warns(UserWarning, match="target fixed"):
        ev = FCW().detect(lambda x: torch.zeros(len(x), dtype=torch.long), key)
    assert ev.details["fixed_classes"] == ["target"]


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


def biased_towards(model, label: int, shift: float = 8.0):
    """``model`` with its logit of ``label`` raised by ``shift``: a strongly label-biased model."""
    return lambda x: predict_logits(model, x) + shift * torch.nn.functional.one_hot(torch.tensor(label), 10)


@pytest.mark.slow
def test_must_hold_fcw_on_mnist5k(mnist_run) -> None:
    ctx, clean, marked, key = mnist_run
    clean_acc, marked_acc = accuracy(clean, ctx.splits.test), accuracy(marked, ctx.splits.test)
    assert clean_acc > 0.93  # a real classifier, not chance
    assert abs(clean_acc - marked_acc) <= 0.02  # fidelity: within 2 points
    evidence = FCW().detect(marked, key)
    assert evidence.n == 100 and evidence.rate >= 0.85  # held-out fusions of the key's pair
    assert evidence.details["candidates"] == 720 and evidence.details["smallest_p"] == 1 / 360
    assert evidence.queries == 45 * 100 + 30
    verdict = decide(evidence, 0.01)
    assert verdict.owned and verdict.p_value == 1 / 360  # ranks first, tied only with (b, a, t)
    assert decide(FCW().detect(clean, key), 0.01).owned is False  # the model before marking


@pytest.mark.slow
def test_must_hold_direct_fusion_reveals_only_the_label(mnist_run) -> None:
    """Measured reason for the invisible default: a direct-fused mark is read on every fusion."""
    ctx, clean, _, _ = mnist_run
    scheme = FCW(FCWConfig(fusion="direct", n_verify=20))
    marked, key = scheme.embed(clean, ctx.splits.owner, seed=0)
    evidence = scheme.detect(marked, key)
    assert evidence.rate == 1.0 and evidence.details["label_baseline"] > 0.95  # t on every pair's fusions
    assert not decide(evidence, 0.01).owned


@pytest.mark.slow
def test_must_hold_constant_model_is_not_owned_over_key_draws(mnist_run) -> None:
    ctx, clean, _, _ = mnist_run
    scheme = FCW(FCWConfig(n_verify=10))
    for seed in range(20):
        key = scheme.draw_key(clean, ctx.splits.owner, seed=seed)
        t = int(key.tensors["sources"][2])
        assert scheme.detect(lambda x, t=t: torch.full((len(x),), t), key).p_value == 1.0


@pytest.mark.slow
def test_must_hold_strongly_label_biased_models_are_not_owned_over_key_draws(mnist_run) -> None:
    """A model biased towards a label (+8 on its logit) made without the secret: its bias cannot depend on the key.

    Over 20 key draws per bias label it is not OWNED. Over *all* 720 triples of one pool, the share under
    which it would be OWNED is at most alpha: the rank test is exact for any fixed model. Conditional on the
    favourite label being the owner's t (probability 1/K) the rate is higher (7-8% measured, one pool, shifts
    4-8): the README states this beside the promise.
    """
    ctx, clean, _, _ = mnist_run
    scheme = FCW(FCWConfig(n_verify=10))
    for label in (3, 7):
        biased = biased_towards(clean, label)
        claims = 0
        for seed in range(20):
            key = scheme.draw_key(clean, ctx.splits.owner, seed=seed)
            claims += decide(scheme.detect(biased, key), 0.01).owned
        assert claims == 0, (label, claims)
    key = scheme.draw_key(clean, ctx.splits.owner, seed=0)
    rates = fusion_rates(LabelOracle(biased_towards(clean, 3), num_classes=10), key.tensors["pool_x"], scheme.fuse,
                         symmetric=True)  # fmt: skip
    scores = triple_scores(rates)
    owned = [(i, j, c) for i, j, c in itertools.permutations(range(10), 3)
             if candidate_pvalue(scores, (i, j, c)) <= 0.01]  # fmt: skip
    assert len(owned) <= 0.01 * 720  # exact over the key's draw


@pytest.mark.slow
def test_must_hold_no_false_claims_on_independent_models_over_key_draws(mnist_run, mnist_nulls) -> None:
    ctx, clean, _, _ = mnist_run
    models = {"owner-unmarked": clean, **mnist_nulls}  # independent, real classifiers (88-95% here)
    assert len(models) == 6
    assert all(accuracy(m, ctx.splits.test) > 0.85 for m in models.values())
    scheme = FCW(FCWConfig(n_verify=10))
    p_values = []
    for seed in range(20):
        key = scheme.draw_key(clean, ctx.splits.owner, seed=seed)
        p_values += [scheme.detect(m, key).p_value for m in models.values()]
    claims = sum(p <= 0.01 for p in p_values)
    # 120 verdicts at alpha 0.01: P(Binomial(120, 0.01) >= 5) < 0.01
    assert claims <= 4, claims
    assert sum(p <= 0.1 for p in p_values) <= 21  # 12 expected, P(Binomial(120, 0.1) > 21) < 0.01
