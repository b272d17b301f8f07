"""Image sets too large to hold as float tensors: read batch by batch from files or a uint8 array.

An in-memory :class:`~ownmark.data.ImageSet` keeps every image as float32, four bytes per pixel value:
CIFAR-10's 50,000 images take 0.6 GB, STL-10's 100,000 unlabelled ones 11 GB, ImageNet hundreds. A
:class:`StreamedImageSet` keeps only the labels and where each image is (a file, or a row of a uint8
array, one byte per value) and reads the images a batch needs when the batch is drawn. The training
loops stream it through a DataLoader (:class:`ownmark.train.loop.Batches`): worker processes decode the
next batches while the model trains on this one.

It is an ImageSet, so splits, subsets and every command take it. A step that needs all of a part's
images at once (an attack's query set, a probe's features) reads them through :attr:`StreamedImageSet.x`,
which loads the part when it takes at most ``OWNMARK_IN_MEMORY_GB`` (default 4) as float32 and refuses
with the way out otherwise.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from ownmark.data.imageset import ImageSet
from ownmark.errors import ConfigError, ShapeError

IN_MEMORY_ENV = "OWNMARK_IN_MEMORY_GB"
DEFAULT_IN_MEMORY_GB = 4.0


def in_memory_limit() -> float:
    """Bytes of float32 images a dataset (or a part of one) may take in memory: ``$OWNMARK_IN_MEMORY_GB``
    gigabytes (default 4); larger ones are streamed."""
    raw = os.environ.get(IN_MEMORY_ENV, "")
    if not raw:
        return DEFAULT_IN_MEMORY_GB * 2**30
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{IN_MEMORY_ENV}={raw!r} is not a number of gigabytes >= 0; e.g. {IN_MEMORY_ENV}=8")
    return value * 2**30


class ImageSource(Protocol):
    """Where a streamed set's images are: ``read`` returns float32 (N, C, H, W) in [0, 1]."""

    shape: tuple[int, int, int]

    def __len__(self) -> int: ...

    def read(self, positions: torch.Tensor) -> torch.Tensor: ...


class FileSource:
    """Image files decoded on demand, all converted to one mode (``"L"`` grey or ``"RGB"``) and size.

    Args:
        files: the image files, in dataset order.
        mode: ``"L"`` or ``"RGB"``.
        size: (height, width); other sizes are resized bilinearly.
    """

    def __init__(self, files: Sequence[pathlib.Path], mode: str, size: tuple[int, int]) -> None:
        if mode not in ("L", "RGB"):
            raise ConfigError(f"FileSource mode must be 'L' or 'RGB', got {mode!r}")
        self.files, self.mode, self.size = list(files), mode, size
        self.shape = (1 if mode == "L" else 3, size[0], size[1])

    def __len__(self) -> int:
        return len(self.files)

    def read(self, positions: torch.Tensor) -> torch.Tensor:
        from ownmark.data.external import images_to_tensor, read_image

        return images_to_tensor([read_image(self.files[int(i)]) for i in positions], self.size, mode=self.mode)


class ArraySource:
    """Images in a uint8 array (N, C, H, W), in memory or a numpy memmap, converted per batch."""

    def __init__(self, array: np.ndarray) -> None:
        if array.dtype != np.uint8 or array.ndim != 4:
            raise ShapeError(f"ArraySource needs a uint8 array (N, C, H, W), got {array.dtype} of shape {array.shape}")
        self.array = array
        c, h, w = array.shape[1:]
        self.shape = (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def read(self, positions: torch.Tensor) -> torch.Tensor:
        rows = np.asarray(self.array[positions.numpy()])  # fancy indexing copies, also from a memmap
        return torch.from_numpy(rows).float().div_(255)


class ExtendedSource:
    """A streamed set's images, then extra images held in memory (:meth:`StreamedImageSet.extended`)."""

    def __init__(self, base: StreamedImageSet, extra: torch.Tensor) -> None:
        if tuple(extra.shape[1:]) != tuple(base.shape):
            raise ShapeError(f"extra images must be of the set's shape {base.shape}, got {tuple(extra.shape[1:])}")
        self.base, self.extra, self.shape = base, extra, base.shape

    def __len__(self) -> int:
        return len(self.base) + len(self.extra)

    def read(self, positions: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(positions), *self.shape)
        inside = positions < len(self.base)
        if inside.any():
            out[inside] = self.base.read(positions[inside])
        if not inside.all():
            out[~inside] = self.extra[positions[~inside] - len(self.base)]
        return out


class StreamedImageSet(ImageSet):
    """A labelled image set whose images stay in their source until a batch is read.

    Args:
        name: where the images came from.
        source: a :class:`FileSource` or :class:`ArraySource` (or anything with ``shape``, ``len`` and
            ``read``).
        y: labels (N,), int64 in [0, num_classes).
        num_classes: number of classes.
        positions: which of the source's images this set holds, in order (default: all).

    Example:
        >>> data = StreamedImageSet("toy", ArraySource(np.zeros((6, 1, 4, 4), np.uint8)), torch.arange(6) % 2, 2)
        >>> part = data.subset([4, 1])
        >>> part, tuple(part.read(torch.tensor([1])).shape)
        (StreamedImageSet('toy', 2 images of (1, 4, 4), 2 classes), (1, 1, 4, 4))
    """

    def __init__(
        self, name: str, source: ImageSource, y: torch.Tensor, num_classes: int, positions: torch.Tensor | None = None
    ) -> None:
        self.name, self.source, self.num_classes = name, source, num_classes
        self.positions = torch.arange(len(source)) if positions is None else positions
        self.y = y
        self._x: torch.Tensor | None = None
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (len(self.positions),):
            raise ShapeError(
                f"StreamedImageSet {name!r} y must be int64 of shape ({len(self.positions)},), got "
                f"{getattr(y, 'dtype', type(y).__name__)} of shape {tuple(getattr(y, 'shape', ()))}"
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"StreamedImageSet.num_classes must be a positive int, got {num_classes!r}")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ConfigError(
                f"StreamedImageSet {name!r} labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]"
            )

    def __len__(self) -> int:
        return len(self.positions)

    def __repr__(self) -> str:
        return f"StreamedImageSet({self.name!r}, {len(self)} images of {self.shape}, {self.num_classes} classes)"

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.source.shape

    @property
    def nbytes(self) -> int:
        """Bytes the images take as float32 tensors."""
        c, h, w = self.shape
        return len(self) * c * h * w * 4

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """The images at ``idx`` (positions in this set, any shape) as float32 ``(*idx.shape, C, H, W)`` in
        [0, 1], read from the source (or taken from memory once :attr:`x` has loaded the set)."""
        idx = torch.as_tensor(idx)
        idx = torch.nonzero(idx).flatten() if idx.dtype == torch.bool else idx.long()  # a mask, as x[mask] takes
        if self._x is not None:
            return self._x[idx]
        if idx.numel() == 0:
            return torch.empty(*idx.shape, *self.shape)
        flat = self.source.read(self.positions[idx.reshape(-1)])
        return flat.view(*idx.shape, *flat.shape[1:])

    @property
    def x(self) -> torch.Tensor:  # type: ignore[override]
        """All of this set's images in memory (read once), when they take at most ``OWNMARK_IN_MEMORY_GB``."""
        if self._x is None:
            limit = in_memory_limit()
            if self.nbytes > limit:
                raise ConfigError(
                    f"this step needs all {len(self):,} images of {self.name!r} (a streamed dataset) in memory: "
                    f"{self.nbytes / 2**30:.1f} GB as float32, over {IN_MEMORY_ENV}={limit / 2**30:g}; set "
                    f"{IN_MEMORY_ENV} higher if the machine has the memory, or give this step a smaller dataset"
                )
            self._x = self.read(torch.arange(len(self)))
        return self._x

    def extended(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, name: str) -> StreamedImageSet:
        """This set's images, still streamed, followed by ``x`` (in memory) with labels ``y``."""
        return StreamedImageSet(name, ExtendedSource(self, x), torch.cat([self.y, y]), num_classes)

    def relabel(self, y: torch.Tensor, num_classes: int) -> StreamedImageSet:
        """The same images, still streamed, with labels ``y`` in [0, num_classes)."""
        return StreamedImageSet(self.name, self.source, y, num_classes, self.positions)

    def subset(self, idx: torch.Tensor | Sequence[int]) -> StreamedImageSet:
        """The images at ``idx``, still streamed (nothing is read)."""
        if not isinstance(idx, torch.Tensor):
            idx = torch.as_tensor(idx, dtype=torch.int64)
        return StreamedImageSet(self.name, self.source, self.y[idx], self.num_classes, self.positions[idx])
