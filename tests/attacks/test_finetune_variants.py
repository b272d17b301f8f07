import math

import pytest
import torch
from torch import nn

from ownmark.attacks import ATTACKS, FineTune, FineTuneConfig, FineTuneLastLayer, RetrainAll, RetrainLastLayer
from ownmark.attacks.finetune import last_linear
from ownmark.data.toy import toy_images
from ownmark.train import accuracy

QUICK = FineTuneConfig(epochs=1, batch_size=16)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def changed(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


def test_registered_under_their_sok_names() -> None:
    assert ATTACKS.get("ftal") is FineTune and ATTACKS.get("ftll") is FineTuneLastLayer
    assert ATTACKS.get("rtll") is RetrainLastLayer and ATTACKS.get("rtal") is RetrainAll
    assert all(ATTACKS.get(n).config_class is FineTuneConfig for n in ("ftal", "ftll", "rtll", "rtal"))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_ftll_changes_only_the_last_layer(toy_victim: nn.Module, optimizer: str) -> None:
    before = state(toy_victim)
    config = FineTuneConfig(epochs=2, batch_size=16, optimizer=optimizer)
    attacked, cost = FineTuneLastLayer(config)(toy_victim, toy_images(2), seed=0)
    assert changed(before, attacked) == {"9.weight", "9.bias"}  # cnn2's output layer
    assert changed(before, toy_victim) == set()
    assert all(p.requires_grad for p in attacked.parameters())  # freezing is undone afterwards
    assert cost.epochs == 2.0 and cost.seconds > 0 and cost.queries == 0
    assert accuracy(attacked, toy_images(1)) >= 0.9


def test_ftll_keeps_batch_norm_statistics(untrained) -> None:
    model = untrained("resnet-s")
    before = state(model)
    attacked, _ = FineTuneLastLayer(QUICK)(model, toy_images(2), seed=0)
    assert changed(before, attacked) == {"fc.weight", "fc.bias"}  # running means and variances included


def test_rtll_starts_from_a_fresh_seeded_last_layer(toy_victim: nn.Module) -> None:
    # a vanishing learning rate leaves the layer where re-initialisation put it
    still = FineTuneConfig(epochs=1, batch_size=16, lr=1e-12, momentum=0.0, weight_decay=0.0)
    a, _ = RetrainLastLayer(still)(toy_victim, toy_images(2), seed=0)
    b, _ = RetrainLastLayer(still)(toy_victim, toy_images(2), seed=0)
    c, _ = RetrainLastLayer(still)(toy_victim, toy_images(2), seed=1)
    head, victim_head = last_linear(a), last_linear(toy_victim)
    assert (head.weight - victim_head.weight).abs().mean() > 0.02
    assert head.weight.abs().max() <= 1 / math.sqrt(head.in_features)  # nn.Linear's default init range
    assert torch.equal(head.weight, last_linear(b).weight) and not torch.equal(head.weight, last_linear(c).weight)
    assert changed(state(toy_victim), a) == {"9.weight", "9.bias"}


def test_rtll_relearns_the_task_on_the_victims_features(toy_victim: nn.Module) -> None:
    before = state(toy_victim)
    rng = torch.get_rng_state()
    attacked, cost = RetrainLastLayer(FineTuneConfig(epochs=2, batch_size=16))(toy_victim, toy_images(2), seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # no global randomness used
    assert changed(before, attacked) == {"9.weight", "9.bias"} and changed(before, toy_victim) == set()
    assert accuracy(attacked, toy_images(1)) >= 0.9 and cost.epochs == 2.0


def test_rtal_trains_every_layer_from_a_new_head(toy_victim: nn.Module) -> None:
    before = state(toy_victim)
    attacked, _ = RetrainAll(QUICK)(toy_victim, toy_images(2), seed=0)
    assert changed(before, attacked) == set(before)
    assert changed(before, toy_victim) == set()


def test_last_layer_attacks_need_a_linear_output_layer() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 16), nn.Flatten())
    with pytest.raises(TypeError, match="no nn.Linear output layer"):
        FineTuneLastLayer(QUICK)(model, toy_images(), seed=0)
