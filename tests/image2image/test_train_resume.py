"""An interrupted image-to-image training run resumes to the uninterrupted result."""

import pytest
import torch

import ownmark.train.image2image as i2i_train
from ownmark.errors import IntegrityError
from ownmark.models import ModelSpec
from ownmark.train.image2image import I2ITrainConfig, fit_i2i


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return ModelSpec("conv3", 3, 3, 16, family="image2image").build()


def test_resume_after_an_interruption_is_bit_identical(tmp_path, monkeypatch, one_thread) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 3, 16, 16, generator=g)
    y = x.flip(1)
    cfg = I2ITrainConfig(epochs=3, batch_size=16, loss="l2+gan")  # the discriminator's state must resume too
    whole = net()
    fit_i2i(whole, x, y, cfg, seed=1)

    real_save, calls = i2i_train.save_checkpoint, []

    def save_then_stop(path, state):  # the process dies right after the checkpoint of epoch 2
        real_save(path, state)
        calls.append(state["epoch"])
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(i2i_train, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        fit_i2i(net(), x, y, cfg, seed=1, checkpoint=tmp_path / "c.ckpt")
    monkeypatch.setattr(i2i_train, "save_checkpoint", real_save)
    resumed = net()
    result = fit_i2i(resumed, x, y, cfg, seed=1, checkpoint=tmp_path / "c.ckpt", resume=True)
    assert calls == [1, 2] and result.epochs_run == 1
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    with pytest.raises(IntegrityError, match="another seed or config"):
        fit_i2i(net(), x, y, cfg, seed=2, checkpoint=tmp_path / "c.ckpt", resume=True)
