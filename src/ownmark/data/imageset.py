"""ImageSet, the labelled image tensors every other unit trains on, and a seeded DataLoader."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from ownmark.errors import ConfigError, ShapeError, check_images


@dataclass(eq=False, repr=False)  # tensors have no single truth value, so no field-wise ``==``
class ImageSet:
    """A labelled image set held in memory as two tensors.

    Construction checks shapes, dtypes and value ranges once, so code that receives an ImageSet
    can trust it.

    Args:
        name: where the images came from, e.g. ``"mnist5k"`` or ``"folder:/data/pets"``.
        x: images (N, C, H, W), float32 in [0, 1].
        y: labels (N,), int64 in [0, num_classes).
        num_classes: number of classes; may exceed the labels present (a subset keeps it).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> data = toy_images()
        >>> len(data), data.shape, data.num_classes
        (64, (3, 16, 16), 4)
        >>> data.subset([0, 5, 9])
        ImageSet('toy', 3 images of (3, 16, 16), 4 classes)
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        check_images(f"ImageSet {self.name!r} x", self.x)
        if not isinstance(self.y, torch.Tensor):
            raise TypeError(f"ImageSet {self.name!r} y must be a torch.Tensor, got {type(self.y).__name__}")
        if self.y.shape != (self.x.shape[0],) or self.y.dtype != torch.int64:
            raise ShapeError(
                f"ImageSet {self.name!r} y must be int64 of shape ({self.x.shape[0]},) to match x, "
                f"got {self.y.dtype} of shape {tuple(self.y.shape)}"
            )
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ConfigError(f"ImageSet.num_classes must be a positive int, got {self.num_classes!r}")
        if len(self) == 0:
            return
        if self.x.min() < 0 or self.x.max() > 1:
            raise ConfigError(
                f"ImageSet {self.name!r} x must lie in [0, 1], got values in "
                f"[{self.x.min().item():.3g}, {self.x.max().item():.3g}]; divide by 255 or clamp"
            )
        if self.y.min() < 0 or self.y.max() >= self.num_classes:
            raise ConfigError(
                f"ImageSet {self.name!r} labels must lie in [0, {self.num_classes}), got values in "
                f"[{self.y.min().item()}, {self.y.max().item()}]"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, {len(self)} images of {self.shape}, {self.num_classes} classes)"

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape (C, H, W) of one image."""
        c, h, w = self.x.shape[1:]
        return (c, h, w)

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """The images at ``idx`` (int positions of any shape), shaped ``(*idx.shape, C, H, W)``. The way to
        take a few images: a :class:`~ownmark.data.streamed.StreamedImageSet` reads only those from its
        source, where ``x[idx]`` would load the whole set first.

        Example:
            >>> data = ImageSet("toy", torch.rand(6, 1, 4, 4), torch.arange(6) % 2, 2)
            >>> tuple(data.read(torch.tensor([[0, 5], [1, 2]])).shape)
            (2, 2, 1, 4, 4)
        """
        return self.x[idx]

    def relabel(self, y: torch.Tensor, num_classes: int) -> ImageSet:
        """The same images (not copied, a streamed set still streamed) with labels ``y`` in [0, num_classes).

        Example:
            >>> data = ImageSet("toy", torch.rand(3, 1, 4, 4), torch.zeros(3, dtype=torch.long), 2)
            >>> data.relabel(torch.arange(3), 3).y.tolist()
            [0, 1, 2]
        """
        return ImageSet(self.name, self.x, y, num_classes)

    def extended(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, name: str) -> ImageSet:
        """This set's images followed by ``x`` (labels ``y``), named ``name``: a training set that adds a
        few made images to a large one (a streamed set stays streamed; ``x`` is kept in memory).

        Example:
            >>> data = ImageSet("toy", torch.rand(3, 1, 4, 4), torch.zeros(3, dtype=torch.long), 2)
            >>> more = data.extended(torch.rand(2, 1, 4, 4), torch.ones(2, dtype=torch.long), 2, "toy+2")
            >>> len(more), more.y.tolist()
            (5, [0, 0, 0, 1, 1])
        """
        return ImageSet(name, torch.cat([self.x, x]), torch.cat([self.y, y]), num_classes)

    def subset(self, idx: torch.Tensor | Sequence[int]) -> ImageSet:
        """A new ImageSet with the images at ``idx``, in that order; name and num_classes stay.

        Args:
            idx: int indices into this set (or a bool mask of length N). The result holds copies,
                so editing it leaves this set untouched.
        """
        if not isinstance(idx, torch.Tensor):
            idx = torch.as_tensor(idx, dtype=torch.int64)
        return ImageSet(self.name, self.x[idx], self.y[idx], self.num_classes)


def make_loader(
    data: ImageSet, *, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False
) -> DataLoader:
    """A single-process DataLoader of ``(x, y)`` batches over ``data``.

    Args:
        seed: seeds the loader's own torch.Generator when ``shuffle`` is set, so the batch order
            is the same on every run and the global RNG is never touched.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> x, y = next(iter(make_loader(toy_images(), batch_size=16, shuffle=True, seed=1)))
        >>> tuple(x.shape), tuple(y.shape)
        ((16, 3, 16, 16), (16,))
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"make_loader batch_size must be a positive int, got {batch_size!r}")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        TensorDataset(data.x, data.y),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=0,
    )


def to_image_shape(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Images ``x`` (N, C', H', W') converted to ``shape`` (C, H, W): the mean over RGB for grey,
    grey repeated for RGB, then bilinear antialiased resizing; values stay in [0, 1].

    Example:
        >>> to_image_shape(torch.rand(2, 3, 32, 32), (1, 28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """
    c, h, w = shape
    if x.shape[1] != c:
        if c == 1:
            x = x.mean(dim=1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.repeat(1, c, 1, 1)
        else:
            raise ConfigError(f"cannot convert {x.shape[1]}-channel images to {c} channels; pick another source")
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1)
