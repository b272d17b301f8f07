"""Weight shifting, regularization and adversarial training (the SoK's model modification group) on mnist5k."""

import copy

import pytest
import torch

from ownmark.attacks import ATTACKS
from ownmark.attacks.modify import (
    AdversarialTrainingConfig,
    RegularizationConfig,
    WeightShiftConfig,
    pgd_examples,
    shift_weights,
)
from ownmark.errors import ConfigError
from ownmark.train import accuracy


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_weight_shift_moves_every_filter_and_fine_tuning_recovers(mnist_model, mnist_splits) -> None:
    before = _weights(mnist_model)
    shifted = copy.deepcopy(mnist_model)
    convs = [m for m in shifted.modules() if isinstance(m, torch.nn.Conv2d)]
    old = [c.weight.detach().clone() for c in convs]
    assert shift_weights(shifted, 1.5, 0.0, torch.Generator().manual_seed(0)) == len(convs) == 2
    for conv, w in zip(convs, old, strict=True):  # with no noise: exactly W - 1.5 * the mean filter
        assert torch.allclose(conv.weight, w - 1.5 * w.mean(0, keepdim=True))
    attack = ATTACKS.get("weight-shift")(WeightShiftConfig(epochs=2))
    attacked, cost = attack(mnist_model, mnist_splits.attacker, seed=0)
    again, _ = attack(mnist_model, mnist_splits.attacker, seed=0)
    assert torch.equal(_weights(attacked), _weights(again)) and torch.equal(_weights(mnist_model), before)
    # measured (seed 0): 0.942 victim, 0.922 shifted only, 0.932 after 2 epochs on victim labels
    assert accuracy(attacked, mnist_splits.test) >= accuracy(mnist_model, mnist_splits.test) - 0.03
    assert (_weights(attacked) - before).norm() > 0.1 * before.norm()
    assert cost.queries == len(mnist_splits.attacker) and cost.details["shifted_tensors"] == 2


def test_regularization_shrinks_the_weights_then_recovers(mnist_model, mnist_splits) -> None:
    cfg = RegularizationConfig(epochs=2, reg_epochs=2)
    attacked, cost = ATTACKS.get("regularization")(cfg)(mnist_model, mnist_splits.attacker, seed=0)
    plain, _ = ATTACKS.get("ftal")(cfg)(mnist_model, mnist_splits.attacker, seed=0)
    assert _weights(attacked).norm() < 0.8 * _weights(plain).norm()  # the L2 phase pulled every weight in
    # measured (seed 0): 0.926 after 2 + 2 epochs
    assert accuracy(attacked, mnist_splits.test) >= accuracy(mnist_model, mnist_splits.test) - 0.04
    assert cost.epochs == 4.0


def test_adversarial_training_uses_pgd_examples_within_the_radius(mnist_model, mnist_splits) -> None:
    pytest.importorskip("art")
    x = mnist_splits.test.x[:200]
    adv = pgd_examples(mnist_model, x, 0.1, AdversarialTrainingConfig(max_iter=10))
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    flipped = (mnist_model(adv).argmax(1) != mnist_model(x).argmax(1)).float().mean()
    assert flipped >= 0.15  # measured 0.25: PGD at radius 0.1 with 10 steps moves a quarter of the answers
    cfg = AdversarialTrainingConfig(epochs=1, n_adv=200, max_iter=5)
    attacked, cost = ATTACKS.get("adv-train")(cfg)(mnist_model, mnist_splits.attacker, seed=0)
    assert cost.details["adversarial_images"] == 200 and cost.epochs == 1.0
    assert accuracy(attacked, mnist_splits.test) >= accuracy(mnist_model, mnist_splits.test) - 0.03  # measured 0.939


@pytest.mark.parametrize(
    ("factory", "match"),
    [(lambda: WeightShiftConfig(shift=-1), "shift"), (lambda: WeightShiftConfig(labels="mine"), "labels"),
     (lambda: RegularizationConfig(l2=0), "l2"), (lambda: AdversarialTrainingConfig(eps=(0.0,)), "eps"),
     (lambda: AdversarialTrainingConfig(eps=()), "eps")],
)  # fmt: skip
def test_bad_settings_are_refused(factory, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        factory()
