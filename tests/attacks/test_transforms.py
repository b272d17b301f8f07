import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ownmark.attacks import (
    ATTACKS,
    Blur,
    BlurConfig,
    Flip,
    Jpeg,
    JpegConfig,
    Noise,
    NoiseConfig,
    TransformedModel,
)
from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError, KeyMismatchError
from ownmark.models import ModelSpec
from ownmark.verify.suspect import LabelOracle

TRANSFORMS = ["noise", "blur", "flip", "jpeg"]


class Recorder(nn.Module):
    """Returns its input unchanged, so a wrapped Recorder shows what reaches the model."""

    spec = ModelSpec("cnn2", 3, 4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def seen(attack, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    wrapped, _ = attack(Recorder(), None, seed=seed)
    with torch.no_grad():
        return wrapped(x)


@pytest.mark.parametrize("name", TRANSFORMS)
@pytest.mark.parametrize("channels", [1, 3])
def test_transform_keeps_output_shape_spec_and_victim(untrained, name: str, channels: int) -> None:
    victim = untrained(channels=channels)
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    wrapped, cost = ATTACKS.get(name)()(victim, toy_images(), seed=0)
    x = torch.rand(5, channels, 16, 16)
    assert isinstance(wrapped, TransformedModel) and wrapped.model is not victim and not wrapped.training
    assert wrapped(x).shape == victim(x).shape == (5, 4) and wrapped.spec == victim.spec
    assert (cost.epochs, cost.queries) == (0.0, 0) and cost.seconds >= 0
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in wrapped.model.state_dict().items())  # weights untouched


@pytest.mark.parametrize("name", TRANSFORMS)
def test_transformed_model_answers_label_queries_and_keeps_shape_checks(toy_victim: nn.Module, name: str) -> None:
    wrapped, _ = ATTACKS.get(name)()(toy_victim, None, seed=0)
    oracle = LabelOracle(wrapped, num_classes=4)
    assert oracle(toy_images(1).x).shape == (64,) and oracle.queries == 64
    with pytest.raises(KeyMismatchError, match=r"the model takes \(3, 16, 16\)"):
        oracle(torch.rand(2, 1, 28, 28))


def test_noise_with_std_zero_is_the_model(toy_victim: nn.Module) -> None:
    x = toy_images(1).x
    wrapped, _ = Noise(NoiseConfig(std=0.0))(toy_victim, None, seed=3)
    assert torch.equal(wrapped(x), toy_victim(x))


def test_noise_is_seeded_per_call_and_has_the_asked_std() -> None:
    x = torch.full((64, 3, 16, 16), 0.5)
    a, b, c = (seen(Noise(NoiseConfig(std=0.1)), x, seed) for seed in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a - x).std().item() == pytest.approx(0.1, rel=0.02)  # 49k draws: std of std about 0.3%
    assert (a - x).mean().abs().item() < 0.002


def test_inputs_are_clamped_to_the_pixel_range() -> None:
    x = torch.rand(8, 3, 16, 16)
    noisy = seen(Noise(NoiseConfig(std=2.0)), x)
    assert noisy.min() == 0 and noisy.max() == 1 and not torch.equal(noisy, x)


def test_flip_mirrors_left_to_right() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(seen(Flip(), x), x.flip(-1))


def test_blur_keeps_flat_images_and_smooths_noise() -> None:
    flat = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(seen(Blur(BlurConfig(kernel_size=5, sigma=1.5)), flat), flat)
    x = torch.rand(4, 3, 16, 16)
    weak, strong = (seen(Blur(BlurConfig(kernel_size=k, sigma=s)), x) for k, s in ((3, 0.5), (7, 2.0)))
    assert x.std() > weak.std() > strong.std()
    assert torch.allclose(weak.mean(), x.mean(), atol=0.01)


def test_jpeg_error_grows_as_quality_falls() -> None:
    x = toy_images(1).x[:8]
    errors = [(seen(Jpeg(JpegConfig(quality=q)), x) - x).abs().mean().item() for q in (95, 50, 10)]
    assert errors[0] < errors[1] < errors[2]  # measured 0.065, 0.082, 0.115 (4:2:0 chroma loses colour noise)


def test_jpeg_codes_grey_images_as_luma() -> None:
    smooth = F.interpolate(torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)), size=(16, 16))
    wrapped, _ = Jpeg(JpegConfig(quality=95))(ModelSpec("cnn2", 1, 4, 16).build(), None, seed=0)
    coded = wrapped.transform(smooth)
    assert coded.shape == smooth.shape and (coded - smooth).abs().mean() < 0.01  # no chroma to lose


@pytest.mark.parametrize(
    ("config", "field", "value"),
    [
        (NoiseConfig, "std", -0.1),
        (BlurConfig, "kernel_size", 4),
        (BlurConfig, "kernel_size", 0),
        (BlurConfig, "sigma", 0.0),
        (JpegConfig, "quality", 0),
        (JpegConfig, "quality", 101),
    ],
)
def test_configs_reject_bad_values(config, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{config.__name__}.{field}"):
        config(**{field: value})
