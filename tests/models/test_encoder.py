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


def test_reestimate_batchnorm_sets_the_models_own_statistics() -> None:
    from ownmark.models.encoder import reestimate_batchnorm

    torch.manual_seed(0)
    enc = ModelSpec("conv4", 1, 16, 12, family="encoder").build()
    bn = enc[1]
    bn.running_mean.fill_(5.0)  # stale statistics, as a marked encoder carries its clean one's
    x = torch.rand(300, 1, 12, 12)
    reestimate_batchnorm(enc, x, batch_size=100)
    with torch.no_grad():
        act = enc[0](x)  # the first conv's output is what the first batch norm normalises
    # an exact average over the three batches, not a momentum-weighted one
    assert torch.allclose(bn.running_mean, act.mean((0, 2, 3)), atol=1e-5)
    assert not enc.training and bn.momentum == 0.1
