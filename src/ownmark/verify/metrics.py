"""Image metrics of deep output watermarking: pure functions that check shapes first.

Fidelity: :func:`psnr` and :func:`ssim` (torchmetrics) of marked against clean outputs. Extraction:
:func:`nc` (raw normalised correlation, as in the paper) and :func:`centred_nc` (Pearson: the mean
of each image removed, so a blank image with a logo does not pass), :func:`success_rate` (share of
images whose NC exceeds a threshold), and for a bit-string watermark :func:`decode_bits` and
:func:`bit_accuracy`. P-values go through :mod:`ownmark.verify.tests`.
"""

from __future__ import annotations

import torch

from ownmark.errors import ConfigError, ShapeError, check_images, check_same_shape


def psnr(marked: torch.Tensor, clean: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1], over the whole batch.

    Example:
        >>> x = torch.full((1, 3, 8, 8), 0.5)
        >>> round(psnr(x + 0.01, x), 1)
        40.0
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _pair("marked", marked, "clean", clean)
    return float(peak_signal_noise_ratio(marked.clamp(0, 1), clean, data_range=1.0))


def ssim(marked: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean structural similarity (Gaussian window 11, sigma 1.5) of images in [0, 1].

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> ssim(x, x)
        1.0
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    _pair("marked", marked, "clean", clean)
    return round(float(structural_similarity_index_measure(marked.clamp(0, 1), clean, data_range=1.0)), 6)


def nc(extracted: torch.Tensor, watermark: torch.Tensor) -> torch.Tensor:
    """Raw normalised correlation <e, w> / (|e| |w|) of each extracted image with the watermark.

    Args:
        extracted: (N, C, H, W).
        watermark: (C, H, W), the same for every image.

    Returns:
        (N,) values in [-1, 1]; 0 where an image is all zeros.
    """
    e, w = _flat(extracted, watermark)
    return (e * w).sum(1) / (e.norm(dim=1) * w.norm(dim=1)).clamp_min(1e-12)


def centred_nc(extracted: torch.Tensor, watermark: torch.Tensor) -> torch.Tensor:
    """Mean-centred NC (Pearson correlation) of each extracted image with the watermark.

    A constant image (a blank extraction) scores 0.

    Example:
        >>> w = torch.rand(3, 8, 8)
        >>> centred_nc(torch.stack([w, 0.5 * w + 0.2, torch.ones(3, 8, 8)]), w).round(decimals=4).tolist()
        [1.0, 1.0, 0.0]
    """
    e, w = _flat(extracted, watermark)
    e, w = e - e.mean(1, keepdim=True), w - w.mean(1, keepdim=True)
    return (e * w).sum(1) / (e.norm(dim=1) * w.norm(dim=1)).clamp_min(1e-12)


def success_rate(values: torch.Tensor, threshold: float = 0.95) -> float:
    """Share of ``values`` (N,) above ``threshold`` (the paper's success: NC > 0.95)."""
    if values.ndim != 1 or len(values) == 0:
        raise ShapeError(f"success_rate needs a non-empty 1-d tensor of NC values, got {tuple(values.shape)}")
    if not -1 <= threshold <= 1:
        raise ConfigError(f"success_rate threshold must lie in [-1, 1], got {threshold!r}")
    return float((values > threshold).float().mean())


def bits_image(bits: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """A bit string of k*k bits as a (channels, size, size) image of k x k blocks, 1 white and 0 black.

    Example:
        >>> bits_image(torch.tensor([1, 0, 0, 1]), 1, 4)[0].tolist()
        [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]
    """
    side = _side(bits.numel(), size)
    grid = bits.reshape(side, side).float()
    block = size // side
    return grid.repeat_interleave(block, 0).repeat_interleave(block, 1).expand(channels, size, size).contiguous()


def decode_bits(images: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Bits of a k x k block pattern: 1 where a block's mean over its pixels and channels exceeds 0.5.

    Args:
        images: (N, C, H, W) extracted watermarks, or (C, H, W) for one.

    Returns:
        (N, n_bits) int64, or (n_bits,) for one image.
    """
    single = images.ndim == 3
    batch = images[None] if single else images
    check_images("images", batch)
    side = _side(n_bits, batch.shape[-1])
    means = torch.nn.functional.adaptive_avg_pool2d(batch.mean(1, keepdim=True), side).flatten(1)
    bits = (means > 0.5).long()
    return bits[0] if single else bits


def bit_accuracy(decoded: torch.Tensor, bits: torch.Tensor) -> float:
    """Share of decoded bits equal to the key's bits; ``decoded`` is (n,) or (N, n).

    Example:
        >>> bit_accuracy(torch.tensor([[1, 0, 1, 1]]), torch.tensor([1, 0, 0, 1]))
        0.75
    """
    if decoded.shape[-1] != bits.shape[-1] or bits.ndim != 1:
        raise ShapeError(f"bit_accuracy got decoded bits {tuple(decoded.shape)} for a key of {tuple(bits.shape)}")
    return float((decoded == bits).float().mean())


def _side(n_bits: int, size: int) -> int:
    side = round(n_bits**0.5)
    if side * side != n_bits or size % side:
        raise ConfigError(f"a bit string needs k*k bits with k dividing the image size {size}, got {n_bits} bits")
    return side


def _pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    check_images(name_a, a)
    check_images(name_b, b)
    check_same_shape(name_a, a, name_b, b)


def _flat(extracted: torch.Tensor, watermark: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_images("extracted", extracted)
    if tuple(watermark.shape) != tuple(extracted.shape[1:]):
        raise ShapeError(
            f"extracted images are {tuple(extracted.shape[1:])} but the watermark is {tuple(watermark.shape)}; "
            "use the key made for this model"
        )
    return extracted.flatten(1).double(), watermark.reshape(1, -1).double()
