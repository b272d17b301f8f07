from collections.abc import Callable

import pytest
import torch
from torch import nn

from ownmark.data.toy import toy_images
from ownmark.models import ModelSpec
from ownmark.train import TrainConfig, fit


@pytest.fixture(autouse=True)
def _single_thread(one_thread) -> None:
    """Every attack test computes with one thread (see tests/conftest.py)."""


def _untrained(arch: str = "cnn2", channels: int = 3) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ModelSpec(arch, channels, 4, 16).build().eval()


@pytest.fixture
def untrained() -> Callable[..., nn.Module]:
    """Builds an untrained toy classifier (4 classes, 16x16 pixels), the same weights every time."""
    return _untrained


@pytest.fixture(scope="session")
def toy_victim() -> nn.Module:
    """A cnn2 trained on toy_images(0) (100% on held-out toy images); every attack must leave it as it is."""
    model = _untrained()
    fit(model, toy_images(0), TrainConfig(epochs=4, batch_size=8, lr=0.03), seed=0)
    return model


@pytest.fixture(scope="session")
def mnist_model(mnist_splits, shared) -> nn.Module:
    """A cnn2 trained 4 epochs on mnist5k's owner part (0.942 on the test part, seed 0), trained once per
    test run. Tests must not change it."""

    def build():
        torch.manual_seed(0)
        model = ModelSpec("cnn2", 1, 10, 28).build()
        fit(model, mnist_splits.owner, TrainConfig(epochs=4, batch_size=128, lr=0.05), seed=0)
        return {"model": model}

    return shared("attacks-mnist-model", build)["model"]


@pytest.fixture(scope="session")
def fcw_marked(mnist_model, mnist_splits, shared):
    """FCW at its defaults (seed 0) on ``mnist_model``: (marked, key), embedded once per test run (measured:
    test accuracy 0.925, p 1/360, the smallest possible). Tests must not change it."""
    from ownmark.watermarks.fcw import FCW

    got = shared(
        "fcw-on-mnist-model",
        lambda: dict(zip(("marked", "key"), FCW().embed(mnist_model, mnist_splits.owner, seed=0), strict=True)),
    )
    return got["marked"], got["key"]
