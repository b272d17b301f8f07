"""Adversarial (Jacobian-augmented) extraction and ensemble distillation, on toy data and FCW-marked mnist5k."""

import pytest
import torch
from torch import nn

import ownmark.attacks.extraction_more  # noqa: F401  (registers)
from ownmark.attacks import ATTACKS, Distill, DistillConfig, make_query
from ownmark.attacks.extraction_more import AdvExtractConfig, EnsembleAPI, EnsembleDistillConfig, fgsm_step
from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError, ShapeError
from ownmark.train import accuracy, predict_logits
from ownmark.verify import decide

pytest.importorskip("art")  # adv-extract crafts its queries with IBM ART

QUICK_ADV = AdvExtractConfig(budget=40, seed_size=16, rounds=3, round_epochs=1, epochs=2, batch_size=16)
QUICK_ENS = EnsembleDistillConfig(budget=48, epochs=2, members=2, member_epochs=2, batch_size=16)


class Counting:
    """A query function that answers like ``make_query`` and keeps every batch it was sent."""

    def __init__(self, model: nn.Module, output: str = "probs") -> None:
        self.query, self.batches, self.spec = make_query(model, output), [], model.spec

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.clone())
        return self.query(x)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: nn.Module) -> bool:
    return all(torch.equal(a[k], v) for k, v in b.state_dict().items())


def test_adv_extract_spends_its_budget_on_seeds_then_crafted_neighbours(toy_victim: nn.Module) -> None:
    before, rng, query = weights(toy_victim), torch.get_rng_state(), Counting(toy_victim)
    data = toy_images(2)
    surrogate, cost = ATTACKS.get("adv-extract")(QUICK_ADV)(query, data, seed=0)
    assert torch.equal(torch.get_rng_state(), rng) and same(before, toy_victim)
    sent = torch.cat(query.batches)
    # 16 seeds, then +16, +8 (the budget): the third round has nothing left to spend
    assert len(sent) == cost.queries == 40 and cost.details["rounds"] == 2 and cost.details["crafted"] == 24
    assert cost.epochs == 2 + 2 * 1 and cost.seconds > 0 and not surrogate.training
    flat = sent.flatten(1)
    assert all(bool((data.x.flatten(1) == s).all(1).any()) for s in flat[:16])  # the seeds are attacker images
    # each round's crafted images lie one step (eps 0.1, clipped to [0, 1]) from an image queried before it
    for start, end in ((16, 32), (32, 40)):
        step = torch.cdist(flat[start:end], flat[:start], p=float("inf")).min(1).values
        assert bool((step <= 0.1 + 1e-6).all()) and bool((step > 0.05).all()), step
    assert float(sent.min()) >= 0 and float(sent.max()) <= 1


def test_adv_extract_is_seeded(toy_victim: nn.Module) -> None:
    a, _ = ATTACKS.get("adv-extract")(QUICK_ADV)(toy_victim, toy_images(2), seed=3)
    b, _ = ATTACKS.get("adv-extract")(QUICK_ADV)(toy_victim, toy_images(2), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_fgsm_step_moves_away_from_or_towards_the_label(toy_victim: nn.Module) -> None:
    x = toy_images(3).x[:32]
    labels = predict_logits(toy_victim, x).argmax(1)

    def score(images: torch.Tensor) -> float:
        return predict_logits(toy_victim, images).softmax(1).gather(1, labels[:, None]).mean().item()

    away = fgsm_step(toy_victim, x, labels, 0.1, towards=False)
    towards = fgsm_step(toy_victim, x, labels, 0.1, towards=True)
    assert (away - x).abs().max() <= 0.1 + 1e-6 and (towards - x).abs().max() <= 0.1 + 1e-6
    assert score(away) < score(x) - 0.05 and score(towards) >= score(x), (score(away), score(x), score(towards))


def test_ensemble_answer_is_the_mean_of_victim_and_members(toy_victim: nn.Module, untrained) -> None:
    member, x = untrained(), toy_images(3).x[:8]
    victim_probs = predict_logits(toy_victim, x).softmax(1)
    member_probs = predict_logits(member, x).softmax(1)
    soft = EnsembleAPI(make_query(toy_victim, "probs"), "probs", [member], toy_victim.spec)(x)
    assert torch.allclose(soft, (victim_probs + member_probs) / 2, atol=1e-6)
    votes = EnsembleAPI(make_query(toy_victim, "labels"), "labels", [member, member], None)(x)
    one_hot = torch.nn.functional.one_hot(victim_probs.argmax(1), 4).float()
    assert torch.allclose(votes, (one_hot + 2 * member_probs) / 3, atol=1e-6)
    with pytest.raises(ShapeError, match="use output='labels'"):
        EnsembleAPI(make_query(toy_victim, "labels"), "probs", [member], None)(x)


def test_ensemble_distill_trains_members_and_queries_the_victim_only(toy_victim: nn.Module) -> None:
    before, query = weights(toy_victim), Counting(toy_victim)
    surrogate, cost = ATTACKS.get("ensemble-distill")(QUICK_ENS)(query, toy_images(2), seed=0)
    assert same(before, toy_victim) and sum(len(b) for b in query.batches) == cost.queries == 48
    assert cost.epochs == 2 + 2 * 2 and cost.details["members"] == ["cnn2", "cnn2"]
    assert surrogate.spec == toy_victim.spec and not surrogate.training
    lenet = EnsembleDistillConfig(budget=16, epochs=1, members=2, member_epochs=1, member_archs="lenet, cnn2")
    _, cost = ATTACKS.get("ensemble-distill")(lenet)(toy_victim, toy_images(2), seed=0)
    assert cost.details["members"] == ["lenet", "cnn2"]


@pytest.mark.parametrize(
    ("config", "kwargs", "match"),
    [
        (AdvExtractConfig, {"eps": 0.0}, "eps"), (AdvExtractConfig, {"eps": 1.5}, "eps"),
        (AdvExtractConfig, {"rounds": 0}, "rounds"), (AdvExtractConfig, {"direction": "up"}, "direction"),
        (AdvExtractConfig, {"seed_size": 2000}, "exceeds the budget"), (AdvExtractConfig, {"budget": 0}, "budget"),
        (EnsembleDistillConfig, {"members": 0}, "members"), (EnsembleDistillConfig, {"member_lr": 0.0}, "member_lr"),
        (EnsembleDistillConfig, {"member_archs": "cnn2,"}, "member_archs"),
        (EnsembleDistillConfig, {"member_archs": ("cnn2",)}, "member_archs"),
    ],
)  # fmt: skip
def test_configs_reject_bad_values(config, kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        config(**kwargs)


@pytest.mark.slow
def test_adv_extract_on_fcw_learns_from_few_images_and_carries_the_mark(fcw_marked, mnist_splits) -> None:
    """Measured (seed 0; FCW-marked cnn2 0.925): adv-extract's defaults (200 attacker images, 3 rounds,
    1,300 crafted queries, 21 s) 0.914 and OWNED at p 1/360 (trigger rate 0.80); distillation on the same
    200 images alone 0.558. Also measured, not asserted: direction=jacobian 0.910 (p 1/360), eps 0.3 0.915
    (p 1/360), labels only 0.879 (p 1/360); plain distillation of 1,500 images 0.902 (p 1/360)."""
    from ownmark.watermarks.fcw import FCW

    marked, key = fcw_marked
    before, attacker, test = weights(marked), mnist_splits.attacker, mnist_splits.test
    stolen, cost = ATTACKS.get("adv-extract")()(marked, attacker, seed=0)
    seeds_only, _ = Distill(DistillConfig(budget=200, epochs=5))(marked, attacker, seed=0)
    assert same(before, marked) and cost.queries == 1500 and cost.details["crafted"] == 1300
    acc, control = accuracy(stolen, test), accuracy(seeds_only, test)
    assert acc >= 0.88 and acc >= control + 0.2, (acc, control)
    verdict = decide(FCW().detect(stolen, key), 0.01)
    assert verdict.owned, verdict  # the mark survives: FCW's fused triggers lie near the boundaries queried


@pytest.mark.slow
def test_ensemble_distill_on_fcw_dilutes_the_mark(fcw_marked, mnist_splits) -> None:
    """Measured (seed 0; FCW-marked cnn2 0.925): ensemble-distill's defaults (2 cnn2 members trained 4
    epochs on the attacker's labels, 1,500 queries, 24 s) 0.919, trigger rate 0.16, p 5/360 = 0.014
    (not owned at alpha 0.01); plain distillation with the same budget 0.902, rate 0.63, p 1/360. Not
    asserted: seed 1 0.922 but p 2/360 (still owned), 1 member p 4/360, 4 members p 10/360, labels-only
    API p 0.081 (plain distillation from labels: p 2/360) — the mark is weakened, removal is marginal."""
    from ownmark.watermarks.fcw import FCW

    marked, key = fcw_marked
    attacker, test = mnist_splits.attacker, mnist_splits.test
    ensemble, cost = ATTACKS.get("ensemble-distill")()(marked, attacker, seed=0)
    plain, _ = Distill(DistillConfig(budget=1500, epochs=5))(marked, attacker, seed=0)
    assert cost.queries == 1500 and cost.epochs == 5 + 2 * 4
    assert accuracy(ensemble, test) >= 0.89, accuracy(ensemble, test)
    v_ens, v_plain = decide(FCW().detect(ensemble, key), 0.01), decide(FCW().detect(plain, key), 0.01)
    assert v_plain.owned and v_plain.p_value == pytest.approx(1 / 360)
    assert v_ens.statistic <= v_plain.statistic - 0.25 and v_ens.p_value >= 3 / 360, (v_ens, v_plain)
