"""Image-to-image tasks on the bundled ``photos`` patches: (degraded input, clean target) pairs.

Each task degrades a clean patch deterministically (noise keyed by the seed and the patch's index
in the dataset, so a patch gets the same input in every split and run):

- ``denoise``: Gaussian noise of std 0.1, clamped to [0, 1].
- ``deblur``: Gaussian blur, 5x5 kernel, sigma 1.2 (reflect padding).
- ``colourise``: luminance (ITU-R BT.601) repeated on three channels; the target is the colour patch.

Owner, attacker and test pairs come from the disjoint, class-stratified splits of
:func:`ownmark.data.make_splits`, so an attacker never sees the owner's patches. A task runs on any
dataset as ``TASK@SOURCE`` (:func:`parse_task`), e.g. ``deblur@folder:/data/faces``: a user's image
folder (flat, or one sub-folder per class), every image resized to the first one's size (256 px images
stay 256 px); grey sources are repeated on three channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ownmark.data.datasets import load_dataset
from ownmark.data.splits import make_splits
from ownmark.errors import ConfigError, ShapeError, check_images
from ownmark.registry import Registry

TASKS: Registry[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = Registry("image-to-image task")
NOISE_STD = 0.1
BLUR_SIGMA = 1.2


@dataclass(eq=False)
class Pairs:
    """Inputs ``x`` and targets ``y``, both (N, C, H, W) in [0, 1], of one task."""

    task: str
    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        check_images("Pairs.x", self.x)
        check_images("Pairs.y", self.y)
        if len(self.x) != len(self.y) or self.x.shape[2:] != self.y.shape[2:]:
            raise ShapeError(
                f"Pairs need inputs and targets of one size, got {tuple(self.x.shape)}, {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> Pairs:
        """The first ``n`` pairs."""
        return Pairs(self.task, self.x[:n], self.y[:n])


@dataclass(eq=False)
class TaskSplits:
    """Owner, attacker and test pairs of one task; no patch is in two parts."""

    owner: Pairs
    attacker: Pairs
    test: Pairs


@TASKS.register("denoise")
def denoise(clean: torch.Tensor, index: torch.Tensor, seed: int) -> torch.Tensor:
    """Add Gaussian noise (std 0.1) drawn from a generator keyed by ``seed`` and each patch's index."""
    noise = torch.stack([torch.randn(clean.shape[1:], generator=_gen(seed, int(i))) for i in index])
    return (clean + NOISE_STD * noise).clamp(0, 1)


@TASKS.register("deblur")
def deblur(clean: torch.Tensor, index: torch.Tensor, seed: int) -> torch.Tensor:
    """Blur with a 5x5 Gaussian kernel of sigma 1.2 (no randomness)."""
    t = torch.arange(5, dtype=clean.dtype) - 2
    g = torch.exp(-(t**2) / (2 * BLUR_SIGMA**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(clean.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(clean, (2, 2, 2, 2), mode="reflect"), kernel, groups=clean.shape[1]).clamp(0, 1)


@TASKS.register("colourise")
def colourise(clean: torch.Tensor, index: torch.Tensor, seed: int) -> torch.Tensor:
    """Luminance 0.299 R + 0.587 G + 0.114 B, repeated on three channels."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=clean.dtype).view(1, 3, 1, 1)
    return (clean * weights).sum(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def _gen(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + index) & 0x7FFFFFFFFFFFFFFF)


def make_pairs(task: str, clean: torch.Tensor, index: torch.Tensor, *, seed: int = 0) -> Pairs:
    """Degrade ``clean`` images (N, 3, H, W) in [0, 1] by ``task``; ``index`` keys each patch's noise.

    Example:
        >>> clean = torch.rand(4, 3, 8, 8)
        >>> pairs = make_pairs("denoise", clean, torch.arange(4))
        >>> torch.equal(pairs.y, clean), 0.05 < (pairs.x - clean).abs().mean().item() < 0.1
        (True, True)
    """
    check_images("clean", clean, channels=3)
    return Pairs(task, TASKS.get(task)(clean, index, seed).contiguous(), clean)


def parse_task(name: str) -> tuple[str, str]:
    """``TASK`` or ``TASK@SOURCE`` -> (task, dataset name); the task is checked, the source defaults to
    the bundled ``photos``.

    Example:
        >>> parse_task("deblur"), parse_task("denoise@folder:/data/faces")
        (('deblur', 'photos'), ('denoise', 'folder:/data/faces'))
    """
    if not isinstance(name, str):
        raise ConfigError(f"an image-to-image task is a name such as 'deblur' or 'deblur@folder:PATH', got {name!r}")
    task, sep, source = name.partition("@")
    TASKS.get(task)
    if sep and not source:
        raise ConfigError(f"{name!r} names no images after '@'; e.g. 'deblur@folder:/data/faces'")
    return task, source or "photos"


def load_task(task: str = "denoise", *, split_seed: int = 0, dataset: str = "photos") -> TaskSplits:
    """Owner / attacker / test pairs of ``task`` on the disjoint splits of ``dataset`` (50/30/20).

    Example:
        >>> splits = load_task("deblur")
        >>> len(splits.owner), len(splits.attacker), len(splits.test), tuple(splits.test.x.shape[1:])
        (557, 335, 222, (3, 32, 32))
    """
    TASKS.get(task)  # unknown names fail before any work
    data = load_dataset(dataset)
    if data.x.shape[1] not in (1, 3):
        raise ShapeError(f"image-to-image tasks take grey or RGB images, {dataset} has {data.x.shape[1]} channels")
    splits = make_splits(data, seed=split_seed)
    parts = {
        part: make_pairs(task, _rgb(getattr(splits, part).x), splits.indices[part], seed=split_seed)
        for part in ("owner", "attacker", "test")
    }
    return TaskSplits(**parts)
