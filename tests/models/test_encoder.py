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


@pytest.mark.parametrize(("arch", "channels", "size"), [("cnn2", 1, 28), ("resnet-s", 3, 32)])
def test_encode_answers_in_channels_last_and_leaves_the_weights_as_they_were(arch: str, channels: int,
                                                                             size: int) -> None:  # fmt: skip
    """On the CPU encode runs convolutions channels-last for the call (2-2.5x faster here on cnn2): the
    outputs match the plain forward to float rounding, and the weights come back bit-identical, in the
    default layout, as does the model's mode."""
    torch.manual_seed(0)
    model = ModelSpec(arch, channels, 10, size).build().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(37, channels, size, size)
    model.eval()
    with torch.no_grad():
        plain = model(x)
    model.train()
    out = encode(model, x, batch_size=10)
    assert model.training and out.shape == plain.shape
    assert torch.allclose(out, plain, atol=1e-5, rtol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.stride() == torch.empty(c.weight.shape).stride() for c in convs)
