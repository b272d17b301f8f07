"""Tiny seeded image data for tests and doctests: learnable in a few CPU steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ownmark.data.imageset import ImageSet, make_loader
from ownmark.errors import ConfigError

PATTERN_SEED = 20240101  # class patterns are fixed, so toy sets with different seeds share classes
NOISE_STD = 0.1


def toy_images(seed: int = 0, n: int = 64, classes: int = 4, size: int = 16) -> ImageSet:
    """``n`` seeded RGB images of ``size`` x ``size`` pixels in ``classes`` balanced classes.

    Each class has its own smooth mean pattern (random 4x4 colours, upsampled); an image is its
    class pattern plus Gaussian noise (std 0.1), clamped to [0, 1]. The patterns do not depend on
    ``seed``, only the noise and the label order do, so a model trained on ``toy_images(0)`` can
    be tested on ``toy_images(1)``.

    Example:
        >>> data = toy_images()
        >>> data.x.shape, data.y.bincount().tolist()
        (torch.Size([64, 3, 16, 16]), [16, 16, 16, 16])
    """
    for arg, value in (("seed", seed), ("n", n), ("classes", classes), ("size", size)):
        low = 0 if arg == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"toy_images {arg} must be an int >= {low}, got {value!r}")
    coarse = torch.rand(classes, 3, 4, 4, generator=torch.Generator().manual_seed(PATTERN_SEED))
    patterns = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    generator = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % classes)[torch.randperm(n, generator=generator)]
    noise = torch.randn(n, 3, size, size, generator=generator) * NOISE_STD
    x = (patterns[y] + noise).clamp(0, 1)
    return ImageSet("toy", x, y, classes)


def toy_loader(seed: int = 0, batch_size: int = 16) -> DataLoader:
    """A shuffled loader over ``toy_images(seed)``; batch order is seeded by ``seed`` too.

    Example:
        >>> x, y = next(iter(toy_loader()))
        >>> tuple(x.shape), y.dtype
        ((16, 3, 16, 16), torch.int64)
    """
    return make_loader(toy_images(seed), batch_size=batch_size, shuffle=True, seed=seed)
