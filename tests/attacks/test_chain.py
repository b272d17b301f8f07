import copy

import pytest
import torch
from torch import nn

from ownmark.attacks import ATTACKS, Chain, FinePrune, FinePruneConfig, FineTune, FineTuneConfig, Prune, PruneConfig
from ownmark.attacks.prune import prunable_weights
from ownmark.core import Cost
from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError
from ownmark.train import accuracy, key_seed


class Recorder:
    """A fake attack with a fixed cost that adds ``step`` to every weight and records its calls."""

    def __init__(self, cost: Cost, step: float, access: str = "black-box") -> None:
        self.cost, self.step, self.access, self.calls = cost, step, access, []

    def __call__(self, model, data, *, seed, engine=None):
        self.calls.append((model, seed))
        out = copy.deepcopy(model)
        with torch.no_grad():
            for p in out.parameters():
                p.add_(self.step)
        return out, copy.deepcopy(self.cost)


def test_chain_sums_costs_and_feeds_each_stage_the_last_output() -> None:
    first = Recorder(Cost(epochs=2.0, seconds=1.5, queries=10, details={"a": 1, "shared": "first"}), 1.0)
    second = Recorder(Cost(epochs=0.5, seconds=0.25, queries=7, details={"b": 2, "shared": "second"}), 10.0)
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(0.5)
    attacked, cost = Chain([first, second])(model, None, seed=3)
    assert (cost.epochs, cost.seconds, cost.queries) == (2.5, 1.75, 17)
    assert cost.details == {"a": 1, "b": 2, "shared": "second"}
    assert first.calls[0][0] is model and second.calls[0][0] is not model
    assert (attacked.weight == 11.5).all() and (model.weight == 0.5).all()
    assert [s for _, s in first.calls + second.calls] == [key_seed(3, 0), key_seed(3, 1)]


def test_chain_needs_white_box_access_if_any_stage_does() -> None:
    black = Recorder(Cost(), 0.0)
    assert Chain([black, black]).access == "black-box"
    assert Chain([black, Prune()]).access == "white-box"


@pytest.mark.parametrize("attacks", [[], "prune", None])
def test_chain_rejects_anything_but_a_list_of_attacks(attacks: object) -> None:
    with pytest.raises(ConfigError, match="non-empty list of attacks"):
        Chain(attacks)  # type: ignore[arg-type]


def test_chain_rejects_a_stage_that_is_not_an_attack() -> None:
    with pytest.raises(TypeError, match="got PruneConfig"):
        Chain([Prune(), PruneConfig()])


def test_fineprune_is_prune_then_finetune(toy_victim: nn.Module) -> None:
    config = FinePruneConfig(amount=0.98, epochs=2, batch_size=16)
    before = {k: v.clone() for k, v in toy_victim.state_dict().items()}
    attacked, cost = ATTACKS.get("fineprune")(config)(toy_victim, toy_images(2), seed=4)
    expected, _ = Chain([Prune(PruneConfig(0.98)), FineTune(FineTuneConfig(epochs=2, batch_size=16))])(
        toy_victim, toy_images(2), seed=4
    )
    assert all(
        torch.equal(a, b) for a, b in zip(attacked.state_dict().values(), expected.state_dict().values(), strict=True)
    )
    assert all(torch.equal(before[k], v) for k, v in toy_victim.state_dict().items())
    total = sum(w.numel() for w in prunable_weights(toy_victim))
    assert cost.epochs == 2.0 and cost.details == {"zeroed": int(0.98 * total), "amount": 0.98} and cost.seconds > 0
    pruned_only, _ = Prune(PruneConfig(0.98))(toy_victim, None, seed=0)
    assert accuracy(pruned_only, toy_images(1)) <= 0.6  # measured 0.5: pruning this hard breaks the model
    assert accuracy(attacked, toy_images(1)) >= 0.9  # measured 1.0: fine-tuning wins the task back


@pytest.mark.parametrize(("field", "value"), [("amount", 1.0), ("amount", -0.1), ("epochs", 0), ("lr", 0.0)])
def test_fineprune_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"FinePruneConfig.{field}"):
        FinePruneConfig(**{field: value})


def test_fineprune_is_registered() -> None:
    assert ATTACKS.get("fineprune") is FinePrune and FinePrune.config_class is FinePruneConfig
