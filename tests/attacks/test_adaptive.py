"""Adaptive attacks: a detector of the method's own triggers (trigger-detect), a purifier sized to the budget."""

import pytest
import torch
from torch import nn

from ownmark.attacks import ATTACKS
from ownmark.attacks.adaptive import DeflectedModel, EncoderPurifyConfig, TriggerDetectConfig, own_triggers
from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError, UnknownNameError
from ownmark.train import accuracy
from ownmark.verify import decide
from ownmark.watermarks import WATERMARKS


class _Flags(nn.Module):
    """A stand-in detector: flags the inputs whose first pixel is above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = (x.flatten(1)[:, 0] > 0.5).float()
        return torch.stack([1 - hit, hit], 1) * 10


def test_deflection_swaps_the_two_best_answers_of_flagged_inputs_only() -> None:
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return scores[: len(x)]

    x = torch.zeros(2, 1, 2, 2)
    x[0, 0, 0, 0] = 1.0  # only the first input is flagged
    out = DeflectedModel(Fixed(), _Flags(), threshold=0.5)(x)
    assert torch.equal(out[0], torch.tensor([0.1, 0.2, 0.7])) and torch.equal(out[1], scores[1])
    assert out.argmax(1).tolist() == [2, 0]


def test_own_triggers_follow_the_public_procedure_with_the_thiefs_seeds() -> None:
    data = toy_images(0)  # 16 images per class: FCW's defaults (130 per class) are halved until they fit
    first, again = own_triggers("fcw", None, data, 2, seed=0), own_triggers("fcw", None, data, 2, seed=0)
    assert torch.equal(first, again) and first.shape[1:] == data.x.shape[1:] and len(first) > 0
    other = own_triggers("fcw", None, data, 2, seed=1)
    assert not torch.equal(first, other)
    per_key = own_triggers("content", None, data, 3, seed=0, per_key=True)
    assert len(per_key) == 3 and all(len(t) == len(per_key[0]) for t in per_key)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scheme": "awencoder"}, "trigger-set"), ({"scheme": "nope"}, "nope"), ({"fpr": 0.0}, "fpr"),
     ({"keys": 0}, "keys"), ({"epochs": 1.5}, "epochs")],
)  # fmt: skip
def test_bad_detector_settings(kwargs, match) -> None:
    with pytest.raises((ConfigError, UnknownNameError), match=match):
        TriggerDetectConfig(**kwargs)


def test_purifier_bits_exceed_twice_the_budget() -> None:
    for eps, bits in ((0.15, 2), (0.3, 1), (8 / 255, 4), (4 / 255, 5), (0.05, 3)):
        cfg = EncoderPurifyConfig(eps=eps)
        step = 1 / (2**cfg.bits - 1)
        assert cfg.bits == bits and step > 2 * eps and 1 / (2 ** (cfg.bits + 1) - 1) <= 2 * eps
    for bad in ({"eps": 0.0}, {"eps": 0.6}, {"kernel_size": 2}):
        with pytest.raises(ConfigError):
            EncoderPurifyConfig(**bad)


def test_purifier_leaves_the_victim_and_erases_a_budget_sized_perturbation() -> None:
    from ownmark.families import FAMILIES

    encoder, data = FAMILIES.get("encoder").toy()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    purified, cost = ATTACKS.get("enc-purify")(EncoderPurifyConfig(eps=0.15, kernel_size=1))(encoder, data, seed=0)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    x = (torch.rand(4, *data.x.shape[1:], generator=torch.Generator().manual_seed(0)) * 3).round() / 3  # on levels
    delta = 0.15 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        assert torch.equal(purified(x), purified((x + delta).clamp(0, 1)))  # 2-bit levels: x + delta rounds to x
    assert cost.details == {"bits": 2, "kernel_size": 1}


@pytest.mark.slow
def test_a_detector_of_the_methods_own_triggers_removes_fcw(fcw_marked, mnist_splits) -> None:
    """The thief draws FCW's fusions from its own images with its own seeds (the public procedure), trains a
    detector on 4 own keys and deploys the marked model behind it. Measured (FCW defaults, mnist5k, seed 0
    split): the detector flags 100% of an unseen own key's triggers and 100% of the owner's verification
    triggers at 2% flagged clean images; test accuracy 0.925 -> 0.909 (seed 0) and 0.891 (seed 1); the
    verdict p 1/360 -> 0.98 in both: the mark is gone."""
    marked, key = fcw_marked
    before = {k: v.clone() for k, v in marked.state_dict().items()}
    test = mnist_splits.test
    for seed in (0, 1):
        wrapped, cost = ATTACKS.get("trigger-detect")()(marked, mnist_splits.attacker, seed=seed)
        assert all(torch.equal(before[k], v) for k, v in marked.state_dict().items())
        verdict = decide(WATERMARKS.get("fcw")().detect(wrapped, key))
        with torch.no_grad():
            caught = float(wrapped.flagged(key.tensors["verify_x"]).float().mean())
        assert cost.queries == 0 and cost.details["flagged_clean"] <= 0.03
        assert cost.details["caught_unseen_triggers"] >= 0.9 and caught >= 0.9, (seed, caught, cost.details)
        assert not verdict.owned and verdict.p_value >= 0.5, (seed, verdict)
        assert accuracy(wrapped, test) >= accuracy(marked, test) - 0.05, seed
