"""Fine-tuning attacks on an injected (PTYNet) model train on its normalised scores, not on the
scores as if they were logits (issue 14, item 8)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ownmark.attacks import FineTuneConfig, RetrainLastLayer
from ownmark.attacks import finetune as finetune_module
from ownmark.families.classifier import Context, train_model
from ownmark.models.injected import InjectedModel
from ownmark.train import TrainConfig, accuracy

pytestmark = pytest.mark.usefixtures("one_thread")


def silent_proprietary() -> nn.Module:
    """A proprietary net that always answers its clean class: the injected model answers as its target."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.tensor([-20.0, 20.0]))
    return net


@pytest.mark.slow
def test_rtll_on_an_injected_model_reaches_what_rtll_on_its_target_reaches(monkeypatch) -> None:
    ctx = Context.load("mnist5k")
    target = train_model(ctx.spec("lenet"), ctx.splits.owner, seed=0, config=TrainConfig(epochs=4, lr=0.05))
    model = InjectedModel(target, silent_proprietary(), [3], 1.5, 10).eval()
    attack = RetrainLastLayer(FineTuneConfig(epochs=3))
    plain = accuracy(attack(target, ctx.splits.attacker, seed=0)[0], ctx.splits.test)
    fixed = accuracy(attack(model, ctx.splits.attacker, seed=0)[0], ctx.splits.test)
    monkeypatch.setattr(finetune_module, "fit_loss", lambda _model: None)  # the old loss: cross-entropy on scores
    artefact = accuracy(attack(model, ctx.splits.attacker, seed=0)[0], ctx.splits.test)
    assert plain > 0.8 and abs(fixed - plain) <= 0.01  # no cost beyond what the attack costs the target alone
    assert artefact < plain - 0.05  # the loss artefact that made RTLL look costly
