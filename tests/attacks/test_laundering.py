"""Transfer round trip and Neural Network Laundering on mnist5k (cnn2), and their parts on toy models."""

import pytest
import torch

import ownmark.attacks.laundering  # noqa: F401  registers transfer and neural-laundering
from ownmark.attacks import ATTACKS
from ownmark.attacks.cleanse import Trigger
from ownmark.attacks.finetune import FineTuneConfig
from ownmark.attacks.laundering import (
    LaunderingConfig,
    TransferConfig,
    hidden_layers,
    launder_scores,
    relabel,
    reset_units,
)
from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError
from ownmark.train import accuracy
from ownmark.verify import decide
from ownmark.watermarks.baselines import Content, ContentConfig
from ownmark.watermarks.fcw import FCW, FCWConfig


def _state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(before: dict, model) -> bool:
    after = model.state_dict()
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_relabel_derives_the_other_task_from_the_attackers_labels(mnist_splits) -> None:
    data = mnist_splits.attacker
    parity, pairs = relabel(data, "parity", 0), relabel(data, "pairs", 0)
    assert parity.num_classes == 2 and torch.equal(parity.y, data.y % 2) and torch.equal(parity.x, data.x)
    assert pairs.num_classes == 5 and torch.equal(pairs.y, data.y // 2)
    perm = relabel(data, "permuted", 0)
    assert perm.num_classes == 10 and torch.equal(perm.y, relabel(data, "permuted", 0).y)
    mapping = {(int(a), int(b)) for a, b in zip(data.y, perm.y, strict=True)}
    assert len(mapping) == 10 and len({b for _, b in mapping}) == 10  # a bijection of the classes
    assert not torch.equal(perm.y, data.y) and not torch.equal(relabel(data, "permuted", 1).y, perm.y)


@pytest.mark.parametrize(
    ("config", "kwargs", "match"),
    [
        (TransferConfig, {"labels": "coarse"}, "labels"),
        (TransferConfig, {"layers": "last"}, "layers"),
        (TransferConfig, {"back_layers": "dense"}, "back_layers"),
        (TransferConfig, {"back_epochs": 0}, "back_epochs"),
        (TransferConfig, {"epochs": 0}, "epochs"),
        (LaunderingConfig, {"stamp_share": 1.5}, "stamp_share"),
        (LaunderingConfig, {"conv_threshold": -1.0}, "conv_threshold"),
        (LaunderingConfig, {"steps": 0}, "steps"),
        (LaunderingConfig, {"n_triggers": 1.5}, "n_triggers"),
    ],
)
def test_bad_settings_are_refused(config, kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        config(**kwargs)


def test_transfer_of_the_dense_layers_leaves_the_convolutions_as_they_were(toy_victim) -> None:
    before = _state(toy_victim)
    cfg = TransferConfig(epochs=2, back_epochs=1, layers="dense", back_layers="last")
    attacked, cost = ATTACKS.get("transfer")(cfg)(toy_victim, toy_images(0), seed=0)
    assert _same(before, toy_victim) and cost.epochs == 3.0 and cost.details["intermediate_classes"] == 2
    conv1, conv2, hidden, out = (i for i, m in enumerate(toy_victim) if hasattr(m, "weight"))
    for i in (conv1, conv2):
        assert torch.equal(attacked[i].weight, toy_victim[i].weight)
    assert not torch.equal(attacked[hidden].weight, toy_victim[hidden].weight)  # trained on parity
    assert not torch.equal(attacked[out].weight, toy_victim[out].weight)  # fresh head on the way back
    everything, _ = ATTACKS.get("transfer")(TransferConfig(epochs=1, back_epochs=1))(toy_victim, toy_images(0), seed=0)
    assert not torch.equal(everything[conv1].weight, toy_victim[conv1].weight)
    assert not any(m._forward_pre_hooks for m in attacked.modules())  # the transfer's hook is gone
    assert attacked(toy_images(1).x[:3]).shape == (3, 4)


def test_laundering_scores_reset_only_units_a_trigger_excites(toy_victim) -> None:
    layers = hidden_layers(toy_victim)
    assert len(layers) == 3 and toy_victim[-1] not in layers  # two convs and the hidden dense layer
    x = toy_images(1).x[:32]
    c, h, w = x.shape[1:]
    nothing = Trigger(0, torch.zeros(1, h, w), torch.ones(c, h, w), 0.0)  # an empty mask stamps nothing
    assert all(torch.equal(s, torch.zeros_like(s)) for s in launder_scores(toy_victim, layers, x, nothing))
    white = Trigger(0, torch.ones(1, h, w), torch.ones(c, h, w), 0.0)  # every image turned white
    scores = launder_scores(toy_victim, layers, x, white)
    assert [tuple(s.shape) for s in scores] == [(32,), (64,), (128,)]
    assert any(float(s.max()) > 0 for s in scores)
    layer = torch.nn.Linear(3, 4)
    reset_units(layer, torch.tensor([False, True, False, True]))
    assert layer.weight[[1, 3]].abs().sum() == 0 and layer.bias[[1, 3]].abs().sum() == 0
    assert layer.weight[[0, 2]].abs().sum() > 0


@pytest.fixture(scope="module")
def fcw_marked(mnist_model, mnist_splits):
    """FCW with 4 embedding epochs (measured: test accuracy 0.929, p 1/360, the smallest)."""
    return FCW(FCWConfig(epochs=4)).embed(mnist_model, mnist_splits.owner, seed=0)


@pytest.mark.slow
def test_transfer_round_trip_and_laundering_remove_fcw(fcw_marked, mnist_splits) -> None:
    """Measured (seed 0, FCW 4 epochs, key triple target 1): the marked model 0.929 / p 0.0028. Transfer
    to parity and back (defaults): 0.941 / p 0.072; permuted 0.944 / 0.111; dense layers and output
    layer back 0.940 / 0.061. Laundering (defaults; FCW is no patch backdoor, the smallest trigger is
    class 2's, not the mark's): reset 12/96 channels and 7/128 neurons (0.698 right after), then
    0.946 / p 0.139. Plain FTAL (8 epochs) also removes this FCW (p 0.31): neither attack is needed."""
    marked, key = fcw_marked
    test = mnist_splits.test
    before = _state(marked)
    moved, cost = ATTACKS.get("transfer")()(marked, mnist_splits.attacker, seed=0)
    assert _same(before, marked) and cost.epochs == 8.0
    assert moved(test.x[:2]).shape == (2, 10)
    verdict = decide(FCW().detect(moved, key))
    assert accuracy(moved, test) >= accuracy(marked, test) - 0.02 and not verdict.owned, verdict.p_value
    laundered, cost = ATTACKS.get("neural-laundering")()(marked, mnist_splits.attacker, seed=0)
    assert _same(before, marked) and cost.epochs == 5.0
    assert cost.details["reset"]["conv"] != "0/96" and cost.details["reset"]["dense"] != "0/128"
    verdict = decide(FCW().detect(laundered, key))
    assert accuracy(laundered, test) >= accuracy(marked, test) - 0.02 and not verdict.owned, verdict.p_value


@pytest.mark.slow
def test_laundering_removes_content_triggers_that_fine_tuning_keeps(mnist_model, mnist_splits) -> None:
    """Measured (seed 0, content 4 epochs, key target 6): marked 0.954 / p 0.005 (the smallest). The
    search's smallest trigger is class 6's (L1 88 against a median 155, anomaly index 2.99);
    resetting 15/96 channels and 6/128 neurons drops accuracy to 0.654 and the mark (p 1.0); 5 epochs
    on clean data bring 0.952 back, not the mark (p 1.0). The same 5 epochs without the reset (FTAL)
    keep it: 0.956 / p 0.005, and so does the transfer round trip (parity and back, defaults): 0.944 /
    p 0.005."""
    scheme = Content(ContentConfig(epochs=4))
    marked, key = scheme.embed(mnist_model, mnist_splits.owner, seed=0)
    test, before = mnist_splits.test, _state(marked)
    laundered, cost = ATTACKS.get("neural-laundering")()(marked, mnist_splits.attacker, seed=0)
    assert _same(before, marked) and cost.details["targets"] == [key.meta["target"]]
    assert cost.details["anomaly_index"] > 2.0  # measured 2.99: the search flags the content label
    verdict = decide(Content().detect(laundered, key))
    assert accuracy(laundered, test) >= accuracy(marked, test) - 0.02 and verdict.p_value >= 0.1, verdict.p_value
    tuned, _ = ATTACKS.get("ftal")(FineTuneConfig(epochs=5))(marked, mnist_splits.attacker, seed=0)
    assert decide(Content().detect(tuned, key)).owned  # the reset, not the fine-tuning, removes it
    moved, _ = ATTACKS.get("transfer")()(marked, mnist_splits.attacker, seed=0)
    assert decide(Content().detect(moved, key)).owned and accuracy(moved, test) >= accuracy(marked, test) - 0.03
