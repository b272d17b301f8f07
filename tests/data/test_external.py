import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from ownmark.data import load_dataset, load_image_folder
from ownmark.data.external import load_torchvision
from ownmark.errors import ConfigError, MissingFileError


def write_image(path: pathlib.Path, mode: str, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


def test_folder_of_mixed_images_becomes_rgb_of_first_size(tmp_path: pathlib.Path) -> None:
    write_image(tmp_path / "cat" / "a.png", "RGB", (12, 10), 255)  # PIL sizes are (width, height)
    write_image(tmp_path / "cat" / "b.png", "L", (6, 6), 0)
    write_image(tmp_path / "dog" / "c.jpg", "RGB", (24, 20), 128)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = load_dataset(f"folder:{tmp_path}")
    assert data.name == f"folder:{tmp_path}" and data.num_classes == 2
    assert data.x.shape == (3, 3, 10, 12) and data.y.tolist() == [0, 0, 1]
    assert torch.allclose(data.x[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert data.x[1].max() == 0


def test_grayscale_folder_keeps_one_channel_and_size_option(tmp_path: pathlib.Path) -> None:
    for k in range(3):
        write_image(tmp_path / str(k) / "x.png", "L", (8, 8), 60 * k)
    data = load_image_folder(tmp_path, size=(4, 5))
    assert data.shape == (1, 4, 5) and data.y.tolist() == [0, 1, 2]
    assert torch.allclose(data.x[:, 0, 0, 0], torch.tensor([0, 60, 120]) / 255)


def test_missing_folder_is_missing_file_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(MissingFileError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_empty_folder_is_config_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "cat").mkdir()
    with pytest.raises(ConfigError, match="holds no images"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("folder:")


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    """The big-endian IDX format of the MNIST files: magic (0, 0, dtype 0x08, ndim), dims, bytes."""
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_from_local_files(tmp_path: pathlib.Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(6 * 28 * 28).reshape(6, 28, 28) % 256
    labels = np.array([3, 1, 4, 1, 5, 9])
    for prefix in ("train", "t10k"):  # torchvision checks both splits exist before skipping the download
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    data = load_torchvision("MNIST", tmp_path)
    assert data.name == "tv:MNIST" and data.shape == (1, 28, 28) and data.num_classes == 10
    assert data.y.tolist() == labels.tolist()
    assert torch.allclose(data.x[:, 0], torch.from_numpy(images).float() / 255)


def test_a_corrupt_image_names_its_file(tmp_path: pathlib.Path) -> None:
    from ownmark.errors import IntegrityError

    write_image(tmp_path / "a" / "ok.png", "L", (4, 4), 10)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a header, then nothing
    with pytest.raises(IntegrityError, match=r"cannot read image .*b/cut\.png .*repair or remove the file"):
        load_image_folder(tmp_path)
