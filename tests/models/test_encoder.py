import pytest
import torch

from ownmark.errors import ConfigError, UnknownNameError
from ownmark.models import ENCODERS, ModelSpec, encode, load_model, save_model


@pytest.mark.parametrize("arch", ENCODERS.names())
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_encoders_return_dim_features_and_round_trip(arch: str, channels: int, size: int, tmp_path) -> None:
    torch.manual_seed(0)
    enc = ModelSpec(arch, channels, 24, size, family="encoder").build()
    x = torch.rand(3, channels, size, size)
    assert encode(enc, x).shape == (3, 24)
    save_model(tmp_path / "e", enc)
    loaded, manifest = load_model(tmp_path / "e")
    assert manifest["spec"]["family"] == "encoder" and loaded.spec == enc.spec
    assert torch.equal(encode(loaded, x), encode(enc, x))


def test_torchvision_encoder_by_name() -> None:
    enc = ModelSpec("tv:resnet18", 1, 16, 32, family="encoder").build()
    assert encode(enc, torch.rand(2, 1, 32, 32)).shape == (2, 16)


def test_bad_encoder_specs() -> None:
    with pytest.raises(UnknownNameError, match="conv4"):
        ModelSpec("conv5", 1, 16, 28, family="encoder").build()
    with pytest.raises(ConfigError, match="feature dimension"):
        ModelSpec("conv4", 1, 0, 28, family="encoder").build()
    with pytest.raises(ConfigError, match="family"):
        ModelSpec("conv4", 1, 16, 28, family="decoder")
