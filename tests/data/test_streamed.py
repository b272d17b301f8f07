"""Streamed datasets (issue 16 item 3): folders and torchvision arrays read batch by batch.

A streamed set must be the same dataset as its in-memory twin: the same labels, splits and images,
and a model trained on it must end with the same weights (on the CPU, bit for bit), whether the
training process reads the batches or DataLoader workers do.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image
from typer.testing import CliRunner

from ownmark import cli
from ownmark.data import StreamedImageSet, load_dataset, load_image_folder, make_splits
from ownmark.data.datasets import mnist5k
from ownmark.data.external import load_torchvision
from ownmark.errors import ConfigError, ShapeError
from ownmark.models import ModelSpec
from ownmark.train import TrainConfig, fit


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """90 mnist5k digits of classes 0-2 (30 each) as PNG files in one folder per class."""
    root = tmp_path_factory.mktemp("digits")
    data = mnist5k()
    for label in range(3):
        folder = root / f"class{label}"
        folder.mkdir()
        members = torch.nonzero(data.y == label).flatten()[:30]
        for k, i in enumerate(members):
            Image.fromarray((data.x[i, 0] * 255).round().byte().numpy(), mode="L").save(folder / f"{k:03d}.png")
    return root


def test_a_streamed_folder_is_the_same_dataset(digit_folder):
    memory, streamed = load_image_folder(digit_folder, stream=False), load_image_folder(digit_folder, stream=True)
    assert isinstance(streamed, StreamedImageSet) and not isinstance(memory, StreamedImageSet)
    assert streamed.shape == memory.shape == (1, 28, 28) and streamed.num_classes == memory.num_classes == 3
    assert torch.equal(streamed.y, memory.y) and torch.equal(streamed.x, memory.x)
    a, b = make_splits(memory, seed=4), make_splits(streamed, seed=4)
    assert isinstance(b.attacker, StreamedImageSet)
    for part in ("owner", "attacker", "test"):
        assert torch.equal(getattr(a, part).x, getattr(b, part).x) and torch.equal(
            getattr(a, part).y, getattr(b, part).y
        )


@pytest.mark.parametrize("workers", ["0", "1"])
def test_training_on_a_streamed_folder_gives_the_in_memory_weights(digit_folder, monkeypatch, workers):
    monkeypatch.setenv("OWNMARK_LOADER_WORKERS", workers)
    memory, streamed = load_image_folder(digit_folder, stream=False), load_image_folder(digit_folder, stream=True)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05)
    a, b = ModelSpec("cnn2", 1, 3, 28).build(), ModelSpec("cnn2", 1, 3, 28).build()
    b.load_state_dict(a.state_dict())
    ra, rb = fit(a, memory, config, seed=2), fit(b, streamed, config, seed=2)
    assert ra.images == rb.images == 2 * 90
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert streamed._x is None  # training never loaded the whole set


def test_read_takes_positions_of_any_shape_or_a_mask_as_x_does(digit_folder):
    memory, streamed = load_image_folder(digit_folder, stream=False), load_image_folder(digit_folder, stream=True)
    mask = memory.y == 1
    for idx in (torch.tensor([[0, 89], [5, 5]]), torch.tensor([7]), mask, torch.arange(0)):
        assert torch.equal(streamed.read(idx), memory.x[idx]) and torch.equal(memory.read(idx), memory.x[idx])
    assert streamed._x is None
    more = streamed.extended(torch.zeros(2, 1, 28, 28), torch.tensor([2, 0]), 3, "digits+2")
    assert len(more) == 92 and more.y[-2:].tolist() == [2, 0]
    assert torch.equal(more.read(torch.tensor([91, 3, 90])), torch.cat([torch.zeros(1, 1, 28, 28), memory.x[3:4],
                                                                        torch.zeros(1, 1, 28, 28)]))  # fmt: skip
    with pytest.raises(ShapeError, match="extra images must be of the set's shape"):
        streamed.extended(torch.zeros(1, 3, 28, 28), torch.tensor([0]), 3, "bad")


@pytest.mark.parametrize("scheme", ["fcw", "content"])
def test_embedding_on_a_streamed_folder_reads_only_its_samples_and_gives_the_in_memory_mark(digit_folder, scheme):
    """Trigger schemes take a few images (fusion sources, trigger sources) with ``read`` and train through
    the streaming loop: on a set too large for memory they embed without loading it, the same key and
    weights as in memory."""
    import ownmark as om
    from ownmark.train import accuracy

    memory, streamed = load_image_folder(digit_folder, stream=False), load_image_folder(digit_folder, stream=True)
    settings = {"epochs": 1, "batch_size": 16, "triggers_per_batch": 2, "n_embed": 10, "n_verify": 10}
    torch.manual_seed(0)
    clean = ModelSpec("cnn2", 1, 3, 28).build()
    (ma, ka), (mb, kb) = (om.create_scheme(scheme, **settings).embed(clean, d, seed=3) for d in (memory, streamed))
    assert streamed._x is None  # never loaded whole
    assert ka.tensors.keys() == kb.tensors.keys()
    assert all(torch.equal(ka.tensors[k], kb.tensors[k]) for k in ka.tensors) and ka.meta == kb.meta
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert accuracy(ma, streamed) == accuracy(ma, memory) and streamed._x is None
    assert om.verify(mb, kb).p_value == om.verify(ma, ka).p_value


@pytest.mark.parametrize("trigger", ["secret", "adversarial"])
def test_awencoder_on_a_streamed_folder_gives_the_in_memory_mark(digit_folder, trigger):
    """AWEncoder reads its verification images, key-image references, PGD batches and batch-norm images with
    ``read``, the clean features a few batches at a time, and trains through the streaming loop: the same
    key and weights as in memory, without loading the set."""
    from ownmark.watermarks.awencoder import AWEncoder, AWEncoderConfig

    memory, streamed = load_image_folder(digit_folder, stream=False), load_image_folder(digit_folder, stream=True)
    cfg = AWEncoderConfig(trigger=trigger, epochs=1, batch_size=16, pgd_steps=2, pgd_batch=4, n_verify=8, decoys=9,
                          key_candidates=2, bn_refresh=2)  # fmt: skip
    torch.manual_seed(0)
    clean = ModelSpec("conv4", 1, 16, 28, family="encoder").build()
    (ma, ka), (mb, kb) = (AWEncoder(cfg).embed(clean, d, seed=3) for d in (memory, streamed))
    assert streamed._x is None  # never loaded whole
    assert all(torch.equal(ka.tensors[k], kb.tensors[k]) for k in ka.tensors) and ka.meta == kb.meta
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_ptynet_on_a_streamed_folder_gives_the_in_memory_mark(digit_folder):
    """PTYNet reads its probe, trigger sources and negatives with ``read`` and trains the proprietary net on the
    owner's images streamed, followed by its samples in memory: the in-memory key and weights, set unloaded."""
    from ownmark.watermarks.ptynet import PTYNet, PTYNetConfig

    memory, streamed = load_image_folder(digit_folder, stream=False), load_image_folder(digit_folder, stream=True)
    cfg = PTYNetConfig(n_embed=16, n_verify=8, n_probe=16, n_decoys=9, n_negative=16, epochs=2, batch_size=16)
    torch.manual_seed(0)
    target = ModelSpec("cnn2", 1, 3, 28).build().eval()
    (ma, ka), (mb, kb) = (PTYNet(cfg).embed(target, d, seed=3) for d in (memory, streamed))
    assert streamed._x is None  # never loaded whole
    assert all(torch.equal(ka.tensors[k], kb.tensors[k]) for k in ka.tensors) and ka.meta == kb.meta
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize(
    ("attack", "settings"),
    [("ftal", {}), ("label-noise", {}), ("transfer", {}), ("weight-shift", {}), ("distill", {"budget": 40})],
)
def test_attacks_on_a_streamed_attacker_set_match_the_in_memory_ones(digit_folder, attack, settings):
    """Attacks that relabel the attacker's data (label noise, transfer tasks, the victim's labels) or take a
    query budget of it keep a streamed set streamed: the attacked weights of the same set in memory."""
    import ownmark as om

    memory, streamed = load_image_folder(digit_folder, stream=False), load_image_folder(digit_folder, stream=True)
    torch.manual_seed(0)
    victim = ModelSpec("cnn2", 1, 3, 28).build().eval()
    unit = om.create_attack(attack, epochs=1, **settings)
    (a, _), (b, _) = (unit(victim, d, seed=2) for d in (memory, streamed))
    assert streamed._x is None  # never loaded whole
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_probes_on_streamed_parts_read_a_few_batches_at_a_time(digit_folder):
    """The linear and k-NN probes (an encoder's utility, AWEncoder's black-box verdict) take features
    batch by batch: the in-memory accuracy, the parts never loaded."""
    from ownmark.train.probe import knn_accuracy, linear_probe

    memory, streamed = load_image_folder(digit_folder, stream=False), load_image_folder(digit_folder, stream=True)
    torch.manual_seed(0)
    encoder = ModelSpec("conv4", 1, 16, 28, family="encoder").build().eval()
    a, b = make_splits(memory, seed=1), make_splits(streamed, seed=1)
    pa, pb = (linear_probe(encoder, s.attacker, s.test, steps=30) for s in (a, b))
    assert pa.accuracy == pb.accuracy and torch.equal(pa.classifier.linear.weight, pb.classifier.linear.weight)
    assert knn_accuracy(encoder, a.attacker, a.test, k=5) == knn_accuracy(encoder, b.attacker, b.test, k=5)
    assert b.attacker._x is None and b.test._x is None


def test_large_folders_stream_and_refuse_to_load_whole(digit_folder, monkeypatch):
    monkeypatch.setenv("OWNMARK_IN_MEMORY_GB", "0.0002")  # 210 KB: the 90 images take 282 KB as float32
    data = load_dataset(f"folder:{digit_folder}")
    assert isinstance(data, StreamedImageSet) and len(data) == 90
    with pytest.raises(ConfigError, match=r"all 90 images .* in memory: .* over OWNMARK_IN_MEMORY_GB=0.0002"):
        _ = data.x
    part = data.subset(torch.arange(20))  # 63 KB: a small part loads
    assert part.x.shape == (20, 1, 28, 28) and float(part.x.max()) <= 1.0
    monkeypatch.setenv("OWNMARK_IN_MEMORY_GB", "lots")
    with pytest.raises(ConfigError, match="OWNMARK_IN_MEMORY_GB='lots' is not a number"):
        load_dataset(f"folder:{digit_folder}")


class FakeSTL10:
    """torchvision's STL10 as the loader sees it (split argument, ``data`` (N, 3, H, W) uint8, ``labels``;
    -1 for the unlabelled split), without the 2.6 GB download."""

    def __init__(self, root: str, split: str = "train", download: bool = False) -> None:
        if split not in ("train", "test", "unlabeled", "train+unlabeled"):
            raise ValueError(f'Unknown value \'{split}\' for argument split. Valid values are {{"train", "test"}}.')
        rng = np.random.default_rng(0)
        self.data = rng.integers(0, 256, size=(12, 3, 10, 10), dtype=np.uint8)
        self.labels = np.full(12, -1) if split == "unlabeled" else np.arange(12) % 10
        self.classes = [] if split == "unlabeled" else [f"c{i}" for i in range(10)]


def test_stl10_unlabelled_split_for_self_supervised_training(monkeypatch, tmp_path):
    monkeypatch.setattr(torchvision.datasets, "STL10", FakeSTL10)
    unlabelled = load_torchvision("STL10:unlabeled", tmp_path, stream=True)
    raw = FakeSTL10("", "unlabeled").data
    assert isinstance(unlabelled, StreamedImageSet) and unlabelled.name == "tv:STL10:unlabeled"
    assert unlabelled.num_classes == 1 and unlabelled.y.tolist() == [0] * 12 and unlabelled.shape == (3, 10, 10)
    assert torch.equal(unlabelled.read(torch.tensor([5, 2])), torch.from_numpy(raw[[5, 2]]).float() / 255)
    labelled = load_torchvision("STL10", tmp_path)  # small: in memory, channels-first kept
    assert not isinstance(labelled, StreamedImageSet) and labelled.num_classes == 10
    assert torch.equal(labelled.x, torch.from_numpy(raw).float() / 255)
    with pytest.raises(ConfigError, match="tv:STL10: Unknown value 'extra'"):
        load_torchvision("STL10:extra", tmp_path)
    with pytest.raises(ConfigError, match="tv:MNIST has the splits train and test"):
        load_torchvision("MNIST:unlabeled", tmp_path)


def test_cli_pretrains_an_encoder_on_a_streamed_unlabelled_split(monkeypatch, tmp_path):
    monkeypatch.setattr(torchvision.datasets, "STL10", FakeSTL10)
    monkeypatch.setenv("OWNMARK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OWNMARK_IN_MEMORY_GB", "0.00001")  # 10 KB: the 12 images (14 KB) stream
    monkeypatch.setenv("OWNMARK_LOADER_WORKERS", "0")
    from ownmark.data.datasets import _load_once

    _load_once.cache_clear()
    out = tmp_path / "enc.safetensors"
    result = CliRunner().invoke(cli.app, [
        "train", "--family", "encoder", "--dataset", "tv:STL10:unlabeled", "--arch", "conv4", "--dim", "16",
        "--set", "epochs=1", "--set", "batch_size=4", "--out", str(out),
    ])  # fmt: skip
    _load_once.cache_clear()
    assert result.exit_code == 0, result.output
    assert "no labels in tv:STL10:unlabeled to measure it" in result.output and out.is_file()
