"""Fixtures shared across test folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs two workers on two cores) each worker keeps one
    intra-op thread: two workers with two threads each would fight over the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Files with the longest recorded times (``tests/durations.json``, written by
    ``scripts/test_durations.py`` from a junit report) run first, each file's tests in their own order.

    ``make test`` hands whole files to two workers (``--dist loadfile --no-loadscope-reorder``, which keeps
    this order): longest first, the workers end within a short file of each other instead of one running a
    minute-long file alone at the end (measured at ba1dbbe: 60 s apart, with xdist's own order by test count).
    The figures only order the files: a stale or missing one changes no result.
    """
    costs = json.loads((Path(__file__).parent / "durations.json").read_text())
    files = [item.nodeid.split("::")[0] for item in items]
    first = {f: i for i, f in reversed(list(enumerate(files)))}  # each file's first position
    order = {id(item): (-costs.get(f, 0), first[f]) for item, f in zip(items, files, strict=True)}
    items.sort(key=lambda item: order[id(item)])


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
def shared(tmp_path_factory, worker_id):
    """``shared(name, build)``: the models (and keys) ``build()`` returns, trained once per test run.

    ``make test`` runs two xdist workers, and a session fixture would train the same model in each. The
    first worker to ask builds it, under a file lock, and saves it (safetensors) in the run's shared temp
    folder; every worker, the builder too, loads those bytes: the same weights and keys, so the same results
    whichever worker built them. ``build`` returns a dict of models (with a spec) and keys; models come back
    in eval mode.
    """
    from filelock import FileLock

    from ownmark.core import Key
    from ownmark.io import load_key, save_key
    from ownmark.models import load_model, save_model

    root = tmp_path_factory.getbasetemp()
    root = (root.parent if worker_id != "master" else root) / "shared-fixtures"
    root.mkdir(exist_ok=True)

    def get(name: str, build):
        folder = root / name
        with FileLock(str(folder) + ".lock"):
            done = folder / "done.json"
            if not done.is_file():
                built = build()
                folder.mkdir()
                for k, obj in built.items():
                    (save_key if isinstance(obj, Key) else save_model)(folder / k, obj)
                kinds = {k: "key" if isinstance(obj, Key) else "model" for k, obj in built.items()}
                done.write_text(json.dumps(kinds))
            # every worker (the builder too) gets what was saved: the same objects whoever built them
            kinds = json.loads(done.read_text())
            return {
                k: load_key(folder / k) if kind == "key" else load_model(folder / k)[0] for k, kind in kinds.items()
            }

    return get


@pytest.fixture(scope="session")
def mnist_encoder(mnist_splits, shared):
    """A conv4 (128-d) SimCLR encoder pre-trained on mnist5k's owner part with the CPU defaults.

    Shared by the encoder tests (probe, AWEncoder, StolenEncoder); tests must not change it:
    copy it first (``copy.deepcopy``) when a test trains it.
    """
    from ownmark.models import ModelSpec
    from ownmark.train.ssl import SSLConfig, pretrain

    def build():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        torch.manual_seed(0)
        enc = ModelSpec("conv4", 1, 128, 28, family="encoder").build()
        pretrain(enc, mnist_splits.owner, SSLConfig(), seed=0)
        torch.set_num_threads(threads)
        return {"encoder": enc.eval()}

    return shared("mnist-encoder", build)["encoder"]


@pytest.fixture(scope="session")
def mnist_nulls(shared):
    """Independent classifiers for the must-hold false-claim tests: cnn2 and lenet of seeds 11 and 12 on
    mnist5k's owner part and a cnn2 on the attacker's part, 6 epochs at lr 0.05 (88-95% on the test part),
    trained once per test run. Tests must not change them."""
    from ownmark.families.classifier import Context, null_models
    from ownmark.train import TrainConfig

    config = TrainConfig(epochs=6, lr=0.05)
    ctx = Context.load("mnist5k")
    return shared("mnist-nulls", lambda: null_models(ctx, ["cnn2", "lenet"], [11, 12], config=config))


@pytest.fixture(scope="session")
def mnist_cnn2(shared):
    """A cnn2 trained 4 epochs at lr 0.05 on mnist5k's owner part (seed 0), trained once per test run."""
    from ownmark.families.classifier import Context, train_model
    from ownmark.train import TrainConfig

    ctx = Context.load("mnist5k")
    config = TrainConfig(epochs=4, lr=0.05)
    build = lambda: {"model": train_model(ctx.spec("cnn2"), ctx.splits.owner, seed=0, config=config)}  # noqa: E731
    return shared("mnist-cnn2", build)["model"]


@pytest.fixture(scope="session")
def mnist_content(mnist_cnn2, shared):
    """The content scheme at its defaults (seed 0) on ``mnist_cnn2``: (marked, key), embedded once per run."""
    from ownmark.families.classifier import Context
    from ownmark.watermarks import WATERMARKS

    owner = Context.load("mnist5k").splits.owner
    got = shared(
        "mnist-content",
        lambda: dict(zip(("marked", "key"), WATERMARKS.get("content")().embed(mnist_cnn2, owner, seed=0), strict=True)),
    )
    return got["marked"], got["key"]
