"""Label smoothing and label noise fine-tuning on mnist5k."""

import pytest
import torch

from ownmark.attacks import ATTACKS
from ownmark.attacks.labels import LabelNoiseConfig, LabelSmoothConfig, noisy_labels
from ownmark.errors import ConfigError
from ownmark.train import accuracy


def _confidence(model, x) -> float:
    with torch.no_grad():
        return float(model(x).softmax(1).max(1).values.mean())


def test_label_smoothing_flattens_answers_and_keeps_the_task(mnist_model, mnist_splits) -> None:
    before = {k: v.clone() for k, v in mnist_model.state_dict().items()}
    cfg = LabelSmoothConfig(epochs=2, smoothing=0.3)
    attacked, cost = ATTACKS.get("label-smooth")(cfg)(mnist_model, mnist_splits.attacker, seed=0)
    plain, _ = ATTACKS.get("ftal")(cfg)(mnist_model, mnist_splits.attacker, seed=0)  # same run, no smoothing
    x = mnist_splits.test.x
    # measured (seed 0): mean top probability 0.94 after plain FTAL, 0.56 with smoothing 0.3; accuracy 0.944, 0.938
    assert _confidence(attacked, x) <= _confidence(plain, x) - 0.15
    assert accuracy(attacked, mnist_splits.test) >= accuracy(mnist_model, mnist_splits.test) - 0.03
    assert cost.epochs == 2.0 and all(torch.equal(before[k], v) for k, v in mnist_model.state_dict().items())


def test_label_noise_relabels_its_share_and_costs_little(mnist_model, mnist_splits) -> None:
    data = mnist_splits.attacker
    noisy = noisy_labels(data, 0.3, seed=1)
    assert (noisy.y != data.y).float().mean().item() == pytest.approx(0.3, abs=1 / len(data))
    assert torch.equal(noisy_labels(data, 0.3, seed=1).y, noisy.y) and not torch.equal(
        noisy_labels(data, 0.3, 2).y, noisy.y
    )
    attacked, cost = ATTACKS.get("label-noise")(LabelNoiseConfig(epochs=2, noise=0.3))(mnist_model, data, seed=1)
    assert cost.details["relabelled"] == int((noisy.y != data.y).sum())
    # measured (seed 1): 0.942 -> 0.937 with 30% of the attacker's labels wrong
    assert accuracy(attacked, mnist_splits.test) >= accuracy(mnist_model, mnist_splits.test) - 0.05


@pytest.mark.parametrize(
    ("config", "kwargs"), [(LabelSmoothConfig, {"smoothing": 1.0}), (LabelNoiseConfig, {"noise": -0.1})]
)
def test_bad_settings(config, kwargs) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        config(**kwargs)
