"""Fixtures shared across test folders."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs two workers on two cores) each worker keeps one
    intra-op thread: two workers with two threads each would fight over the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine they slow down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist_splits():
    """mnist5k's owner / attacker / test split of seed 0."""
    from ownmark.data import load_dataset, make_splits

    return make_splits(load_dataset("mnist5k"), seed=0)


@pytest.fixture(scope="session")
def mnist_encoder(mnist_splits):
    """A conv4 (128-d) SimCLR encoder pre-trained on mnist5k's owner part with the CPU defaults.

    Shared by the encoder tests (probe, AWEncoder, StolenEncoder); tests must not change it:
    copy it first (``copy.deepcopy``) when a test trains it.
    """
    from ownmark.models import ModelSpec
    from ownmark.train.ssl import SSLConfig, pretrain

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    enc = ModelSpec("conv4", 1, 128, 28, family="encoder").build()
    pretrain(enc, mnist_splits.owner, SSLConfig(), seed=0)
    torch.set_num_threads(threads)
    return enc.eval()
