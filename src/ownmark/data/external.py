"""Datasets from outside the package: an image folder on disk, or a torchvision dataset."""

from __future__ import annotations

import difflib
import inspect
import pathlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ownmark.data.imageset import ImageSet
from ownmark.errors import ConfigError, IntegrityError, MissingFileError, UnknownNameError

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
OFFLINE_HINT = "the datasets that need no download are mnist5k, digits and photos"
_GRAY_MODES = ("1", "L", "LA")
_NOT_CLASSIFICATION = {"VisionDataset", "ImageFolder", "DatasetFolder", "wrap_dataset_for_transforms_v2"}


def images_to_tensor(
    images: Sequence[Image.Image], size: tuple[int, int] | None = None, *, mode: str | None = None
) -> torch.Tensor:
    """Stack PIL images into one float batch (N, C, H, W) in [0, 1].

    All images become grayscale (C = 1) when every one of them is 1-bit or 8-bit grayscale, and RGB
    (C = 3) otherwise; alpha is dropped.

    Args:
        size: common (height, width); images of another size are resized bilinearly. Default:
            the size of the first image.
        mode: ``"L"`` or ``"RGB"`` for every image, instead of deciding from these images.
    """
    mode = mode or image_mode(images)
    height, width = size if size is not None else (images[0].height, images[0].width)
    arrays = []
    for im in images:
        im = im.convert(mode)
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.uint8))
    batch = torch.from_numpy(np.stack(arrays))
    batch = batch.unsqueeze(1) if mode == "L" else batch.permute(0, 3, 1, 2)
    return batch.float().div_(255)


def image_mode(images: Sequence[Image.Image]) -> str:
    """``"L"`` when every image is 1-bit or 8-bit grayscale, else ``"RGB"``."""
    return "L" if all(im.mode in _GRAY_MODES for im in images) else "RGB"


def read_image(file: pathlib.Path) -> Image.Image:
    """One decoded image, or IntegrityError naming the file that cannot be read."""
    try:
        with Image.open(file) as im:
            im.load()
            return im.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:  # PIL's decode errors
        raise IntegrityError(
            f"cannot read image {file} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'corrupt'}); "
            "repair or remove the file"
        ) from None


def load_image_folder(
    path: str | pathlib.Path, size: tuple[int, int] | None = None, *, stream: bool | None = None
) -> ImageSet:
    """Load a folder laid out as ``path/<class>/<image>``, like torchvision's ImageFolder.

    Classes are the sub-folders in sorted order, so label ``k`` is the k-th folder name; a folder with
    images and no sub-folder is one class.

    Args:
        size: common (height, width); default: the size of the first image (first class folder,
            first file by name). Colour handling as in :func:`images_to_tensor`.
        stream: read images batch by batch when needed (a
            :class:`~ownmark.data.streamed.StreamedImageSet`) instead of all now. Default: stream when
            the images would take more than ``OWNMARK_IN_MEMORY_GB`` (default 4) as float32. A
            streamed folder takes the first image's colour mode (grey or RGB) for all images.
    """
    if str(path) == "":
        raise ConfigError("folder dataset needs a path, e.g. 'folder:/data/pets'")
    root = pathlib.Path(path).expanduser()
    if not root.exists():
        raise MissingFileError(f"image folder {str(root)!r} does not exist; check the path after 'folder:'")
    if not root.is_dir():
        raise ConfigError(f"image folder {str(root)!r} is a file; expected a folder with one sub-folder per class")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes and any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
        classes = [root]  # a flat folder of images: one class (image-to-image tasks need no labels)
    files, labels = [], []
    for label, folder in enumerate(classes):
        for file in sorted(folder.iterdir()):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                files.append(file)
                labels.append(label)
    if not files:
        raise ConfigError(
            f"image folder {str(root)!r} holds no images; expected {root}/<class>/<image> "
            f"with suffixes {', '.join(IMAGE_SUFFIXES)}"
        )
    y = torch.tensor(labels, dtype=torch.int64)
    first = read_image(files[0])
    height, width = size if size is not None else (first.height, first.width)
    if stream is None:
        from ownmark.data.streamed import in_memory_limit

        channels = 1 if first.mode in _GRAY_MODES else 3
        stream = len(files) * channels * height * width * 4 > in_memory_limit()
    if stream:
        from ownmark.data.streamed import FileSource, StreamedImageSet

        source = FileSource(files, image_mode([first]), (height, width))
        return StreamedImageSet(f"folder:{path}", source, y, len(classes))
    x = images_to_tensor([first] + [read_image(file) for file in files[1:]], (height, width))
    return ImageSet(f"folder:{path}", x, y, len(classes))


def torchvision_names() -> list[str]:
    """Names of the torchvision dataset classes that ``tv:NAME`` may ask for."""
    import torchvision.datasets

    return sorted(n for n in torchvision.datasets.__all__ if n not in _NOT_CLASSIFICATION)


def load_torchvision(name: str, root: pathlib.Path, *, stream: bool | None = None) -> ImageSet:
    """Download (if needed) a split of the torchvision dataset class ``name`` into ``root``.

    ``name`` is ``NAME`` (the train split) or ``NAME:SPLIT`` for another one: ``tv:CIFAR10:test``,
    ``tv:STL10:unlabeled`` (STL-10's 100,000 unlabelled images, for self-supervised pre-training) or
    ``tv:STL10:train+unlabeled``. A split without labels (torchvision marks them -1) becomes one class
    of label 0: self-supervised training ignores labels, and a probe needs a labelled split.

    Only image-classification datasets with integer targets fit an ImageSet; images of varying
    size are resized to the first one's size. Datasets torchvision holds as one uint8 array (MNIST,
    CIFAR, SVHN, STL-10) are streamed from that array (a
    :class:`~ownmark.data.streamed.StreamedImageSet`, one byte per value) when they would take more than
    ``OWNMARK_IN_MEMORY_GB`` (default 4) as float32, or when ``stream`` says so.
    """
    import torchvision.datasets

    name, _, split_name = name.partition(":")
    known = torchvision_names()
    if name not in known:
        lower = {n.lower(): n for n in known}
        close = [lower[c] for c in difflib.get_close_matches(name.lower(), list(lower), n=3)]
        hint = f"did you mean {', '.join(f'tv:{c}' for c in close)}? " if close else ""
        raise UnknownNameError(f"no torchvision dataset named {name!r}; {hint}known: {', '.join(known)}")
    cls = getattr(torchvision.datasets, name)
    params = inspect.signature(cls).parameters
    if "split" in params:
        split = {"split": split_name or "train"}
    elif "train" in params:
        if split_name not in ("", "train", "test"):
            raise ConfigError(f"tv:{name} has the splits train and test, got {split_name!r}; e.g. tv:{name}:test")
        split = {"train": split_name != "test"}
    elif split_name:
        raise ConfigError(f"tv:{name} takes no split; use tv:{name}")
    else:
        split = {}
    label = f"tv:{name}" + (f":{split_name}" if split_name else "")
    try:
        ds = cls(str(root), download=True, **split)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision wraps some in RuntimeError
        raise ConfigError(
            f"could not download torchvision dataset {name!r} into {str(root)!r} "
            f"({type(err).__name__}: {' '.join(str(err).split())}); {OFFLINE_HINT}"
        ) from err
    except ValueError as err:  # torchvision's verify_str_arg: an unknown split
        raise ConfigError(f"tv:{name}: {' '.join(str(err).split())}") from None
    targets = getattr(ds, "targets", None)
    targets = getattr(ds, "labels", None) if targets is None else targets
    if hasattr(ds, "data") and targets is not None:  # MNIST, CIFAR, SVHN, STL-10: one uint8 array in memory
        array = np.asarray(ds.data)
        array = array[:, None] if array.ndim == 3 else array
        if array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
            array = array.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W); STL-10 and SVHN are stored so
        y = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
        num_classes = len(getattr(ds, "classes", None) or []) or int(y.max()) + 1
        if len(y) and int(y.min()) < 0:  # unlabelled images (STL-10's unlabeled split): one class
            y, num_classes = torch.zeros_like(y), 1
        if stream is None:
            from ownmark.data.streamed import in_memory_limit

            stream = array.size * 4 > in_memory_limit()
        if stream:
            from ownmark.data.streamed import ArraySource, StreamedImageSet

            return StreamedImageSet(label, ArraySource(np.ascontiguousarray(array, dtype=np.uint8)), y, num_classes)
        x = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255)
        return ImageSet(label, x, y, num_classes)
    pairs = [ds[i] for i in range(len(ds))]
    if not all(isinstance(t, int) for _, t in pairs):
        raise ConfigError(f"tv:{name} is not an image-classification dataset (targets are not ints)")
    x = images_to_tensor([im for im, _ in pairs])
    y = torch.tensor([t for _, t in pairs], dtype=torch.int64)
    num_classes = len(getattr(ds, "classes", None) or []) or int(y.max()) + 1
    return ImageSet(label, x.contiguous(), y, num_classes)
