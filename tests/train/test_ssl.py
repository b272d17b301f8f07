import pytest
import torch

from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError
from ownmark.models import ModelSpec, encode
from ownmark.train.ssl import METHODS, SSLConfig, augmenter, pretrain, two_views


def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return ModelSpec("conv4", 3, 16, 16, family="encoder").build()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_the_encoder_and_lowers_its_loss(method: str, one_thread) -> None:
    enc = encoder()
    before = encode(enc, toy_images().x)
    result = pretrain(enc, toy_images(n=128), SSLConfig(method=method, epochs=4, batch_size=32, lr=3e-3), seed=0)
    assert result.epochs_run == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    if method != "moco":  # MoCo's loss first rises while its memory bank fills with real keys
        assert result.losses[-1] < result.losses[0]
    assert not torch.allclose(encode(enc, toy_images().x), before)


def test_views_are_keyed_by_seed_and_step() -> None:
    aug, x = augmenter(3, 16), toy_images().x[:8]
    a0, a1 = two_views(aug, x, 0, 5)
    b0, b1 = two_views(aug, x, 0, 5)
    assert torch.equal(a0, b0) and torch.equal(a1, b1) and not torch.equal(a0, a1)
    assert not torch.equal(two_views(aug, x, 0, 6)[0], a0)
    assert a0.min() >= 0 and a0.max() <= 1


def test_resume_is_bit_identical(tmp_path, one_thread) -> None:
    data, cfg = toy_images(n=64), SSLConfig(epochs=3, batch_size=32)
    whole = encoder()
    pretrain(whole, data, cfg, seed=1)
    part = encoder()
    pretrain(part, data, SSLConfig(epochs=3, batch_size=32), seed=1, checkpoint=tmp_path / "c.ckpt")
    resumed = encoder()
    # a checkpoint after epoch 3 exists; resuming it runs nothing more and yields the same weights
    pretrain(resumed, data, cfg, seed=1, checkpoint=tmp_path / "c.ckpt", resume=True)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, part.state_dict()[k]) and torch.equal(v, resumed.state_dict()[k])


def test_bad_configs() -> None:
    with pytest.raises(ConfigError, match="method"):
        SSLConfig(method="swav")
    with pytest.raises(ConfigError, match="momentum"):
        SSLConfig(momentum=1.5)
    with pytest.raises(ConfigError, match="at least 2"):
        pretrain(encoder(), toy_images().subset([0]), SSLConfig(), seed=0)
