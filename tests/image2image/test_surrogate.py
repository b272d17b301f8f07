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


def test_output_squeeze_rounds_every_output_to_its_levels() -> None:
    from ownmark.attacks.surrogate import OutputSqueezeConfig

    victim = seeded(ModelSpec("conv3", 3, 3, 16, family="image2image").build, 0).eval()
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    squeezed, cost = ATTACKS.get("output-squeeze")(OutputSqueezeConfig(bits=2))(victim, x, seed=0)
    with torch.no_grad():
        levels = squeezed(x) * 3
    assert torch.allclose(levels, levels.round(), atol=1e-5) and cost.details == {"bits": 2}
    for bad in (0, 9, 2.5, True):
        with pytest.raises(ConfigError, match="bits"):
            OutputSqueezeConfig(bits=bad)


def test_overwrite_embeds_the_thiefs_deepwm_into_an_image_to_image_victim() -> None:
    from ownmark.attacks.overwrite import OverwriteConfig
    from ownmark.families import FAMILIES

    victim, data = FAMILIES.get("image2image").toy()
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    tiny = "embedder=conv3,extractor=conv3,surrogate_epochs=0,n_probe=8,w_adv=0,extractor_epochs=0,n_bits=16"
    attacked, cost = ATTACKS.get("overwrite")(OverwriteConfig(scheme="deepwm", epochs=1, settings=tiny))(
        victim, data, seed=0
    )
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items())
    assert cost.details["scheme"] == "deepwm" and attacked.spec.family == "image2image"
    with torch.no_grad():
        assert attacked(data.x[:2]).shape == victim(data.x[:2]).shape
    with pytest.raises(ConfigError, match="victim's family"):  # a classifier scheme on an image-to-image model
        ATTACKS.get("overwrite")(OverwriteConfig(scheme="fcw", epochs=1))(victim, data, seed=0)
