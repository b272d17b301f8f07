import pathlib

import pytest
import torch
import torchvision.datasets

from ownmark.data import DATASETS, cache_dir, load_dataset
from ownmark.errors import ConfigError, UnknownNameError

EXPECTED = {  # name -> (number of images, (C, H, W), classes)
    "mnist5k": (5000, (1, 28, 28), 10),
    "digits": (1797, (1, 8, 8), 10),
    "photos": (1114, (3, 32, 32), 5),
}


def test_registry_holds_the_offline_datasets() -> None:
    assert DATASETS.names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_offline_dataset_shapes_ranges_classes(name: str) -> None:
    data = load_dataset(name)
    n, shape, classes = EXPECTED[name]
    assert data.name == name and len(data) == n and data.shape == shape and data.num_classes == classes
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert 0 <= data.x.min() < 0.1 and 0.9 < data.x.max() <= 1
    assert data.y.unique().tolist() == list(range(classes))


def test_mnist5k_is_balanced_and_sorted_by_class() -> None:
    y = load_dataset("mnist5k").y
    assert y.bincount().tolist() == [500] * 10
    assert torch.equal(y, y.sort().values)


def test_returned_tensors_are_private_copies() -> None:
    first = load_dataset("digits")
    first.x.zero_()
    first.y.zero_()
    again = load_dataset("digits")
    assert again.x.max() == 1 and again.y.max() == 9


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'mnist5k'"):
        load_dataset("mnist5")


def test_unknown_torchvision_name_suggests_class() -> None:
    with pytest.raises(UnknownNameError, match="tv:CIFAR10"):
        load_dataset("tv:cifar10")


def test_failed_download_names_offline_datasets(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    def offline(self: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setenv("OWNMARK_CACHE", str(tmp_path))
    monkeypatch.setattr(torchvision.datasets.KMNIST, "download", offline)
    with pytest.raises(ConfigError, match=r"could not download .*mnist5k, digits and photos"):
        load_dataset("tv:KMNIST")


def test_cache_dir_honours_env_and_defaults_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("OWNMARK_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine" and cache_dir().is_dir()
    monkeypatch.delenv("OWNMARK_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "ownmark" and cache_dir().is_dir()
