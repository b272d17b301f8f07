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
def mnist_encoder(mnist_splits, tmp_path_factory):
    """A conv4 (128-d) SimCLR encoder pre-trained on mnist5k's owner part with the CPU defaults.

    Shared by the encoder tests (probe, AWEncoder, StolenEncoder); tests must not change it:
    copy it first (``copy.deepcopy``) when a test trains it. Under pytest-xdist the first worker
    to need it pre-trains it and the others load its weights (one run's temporary folder, behind a
    file lock), so the suite pays for it once.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _pretrained(mnist_splits).eval()
    from filelock import FileLock
    from safetensors.torch import load_file, save_file

    path = tmp_path_factory.getbasetemp().parent / "mnist_encoder.safetensors"  # shared by this run's workers
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            enc = _encoder()
            enc.load_state_dict(load_file(path))
        else:
            enc = _pretrained(mnist_splits)
            save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, path)
    return enc.eval()


def _encoder():
    from ownmark.models import ModelSpec

    return ModelSpec("conv4", 1, 128, 28, family="encoder").build()


def _pretrained(splits):
    from ownmark.train.ssl import SSLConfig, pretrain

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    enc = _encoder()
    pretrain(enc, splits.owner, SSLConfig(), seed=0)
    torch.set_num_threads(threads)
    return enc
