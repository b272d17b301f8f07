"""Surrogate training and output perturbations on image-to-image victims."""

from __future__ import annotations

import pytest
import torch

from ownmark.attacks import ATTACKS
from ownmark.attacks.surrogate import OutputJpegConfig, OutputNoiseConfig, Surrogate, SurrogateConfig
from ownmark.errors import ConfigError, UnknownNameError
from ownmark.models import ModelSpec
from ownmark.train.image2image import I2ITrainConfig, augment_pair, seeded

NAMES = [n for n in ATTACKS.names() if ATTACKS.get(n).families == ("image2image",)]


def test_image2image_attacks_are_registered_and_marked() -> None:
    assert {"surrogate", "output-noise", "output-jpeg"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_attack_leaves_victim_untouched_and_keeps_output_shape(name: str) -> None:
    cls = ATTACKS.get(name)
    config = SurrogateConfig(arch="conv3", epochs=1) if name == "surrogate" else cls.config_class()
    victim = seeded(ModelSpec("conv3", 3, 3, 16, family="image2image").build, 0).eval()
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    attacked, cost = cls(config)(victim, x, seed=0)
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items())
    with torch.no_grad():
        answer, original = attacked(x[:4]), victim(x[:4]).clamp(0, 1)
    assert answer.shape == original.shape and not torch.equal(answer, original)
    assert cost.seconds >= 0


def test_surrogate_learns_the_victim_and_is_seeded() -> None:
    victim = seeded(ModelSpec("conv3", 3, 3, 16, family="image2image").build, 1).eval()
    x = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    config = SurrogateConfig(arch="conv3", loss="l1", epochs=4)
    a, cost = Surrogate(config)(victim, x, seed=3)
    b, _ = Surrogate(config)(victim, x, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert cost.queries == 64 and a.spec.arch == "conv3"
    with torch.no_grad():
        err = (a(x) - victim(x).clamp(0, 1)).abs().mean().item()
    assert err < 0.1


def test_configs_reject_bad_values() -> None:
    with pytest.raises(UnknownNameError):
        SurrogateConfig(arch="vgg")
    with pytest.raises(ConfigError, match="loss"):
        SurrogateConfig(loss="perceptual")
    with pytest.raises(ConfigError, match="quality"):
        OutputJpegConfig(quality=0)
    with pytest.raises(ConfigError, match="std"):
        OutputNoiseConfig(std=-1.0)
    with pytest.raises(ConfigError, match="epochs"):
        I2ITrainConfig(epochs=0)


def test_augmentation_moves_inputs_and_targets_together() -> None:
    x = torch.rand(2, 3, 32, 32)
    changed = 0
    for seed in range(6):
        a, b = augment_pair(x, x * 0.5, seed)
        assert torch.allclose(b, a * 0.5)
        changed += not torch.equal(a, x)
    assert changed >= 4
