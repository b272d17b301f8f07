"""Small image-to-image networks: a UNet, a conv encoder-decoder, a ResNet-style generator, a PatchGAN.

All are fully convolutional, CPU-fast at 32x32, and take and return ``(N, C, H, W)`` images with H
and W divisible by 4 (by 2**N for ``unet:N``). Depth is a setting of the name: ``unet:N`` is a UNet of
N levels (``unet`` has 2), ``resnet-i2i:N`` has N residual blocks (3 by default), ``encdec:N`` halves
the resolution N times (2 by default), for larger images (e.g. 256 px) that need a wider field of view.
When input and output channels match, a network predicts a residual that is
added to its input (restoration tasks start from the identity), unless ``residual=False`` (the
extractor R of deep output watermarking maps images to a watermark, not to themselves).

The image-to-image family (``ownmark.families``) builds them from a :class:`~ownmark.models.ModelSpec`, so
``save_model``/``load_model`` round-trip them; an arch named ``barrier:TARGET+EMBEDDER`` builds the
barrier form of deep output watermarking (a target with the embedding network H at its output),
see :class:`BarrierModel`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ownmark.errors import ConfigError, ShapeError
from ownmark.registry import Registry

I2I_MODELS: Registry[Callable[[int, int, int], nn.Module]] = Registry("image-to-image architecture")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2))


class I2INet(nn.Module):
    """A body ``(N, C_in, H, W) -> (N, C_out, H, W)``, plus the input when ``residual``."""

    def __init__(self, body: nn.Module, in_channels: int, out_channels: int, residual: bool) -> None:
        super().__init__()
        if residual and in_channels != out_channels:
            raise ConfigError(
                f"a residual network needs in_channels == out_channels, got {in_channels}, {out_channels}"
            )
        self.body, self.in_channels, self.out_channels, self.residual = body, in_channels, out_channels, residual
        self.multiple = getattr(body, "multiple", 4)  # what H and W must be divisible by

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.multiple
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-1] % m or x.shape[-2] % m:
            raise ShapeError(
                f"{type(self.body).__name__} takes (N, {self.in_channels}, H, W) with H, W divisible by {m}, "
                f"got {tuple(x.shape)}"
            )
        out = self.body(x)
        return x + out if self.residual else out


class UNetBody(nn.Module):
    """Two-level UNet: 32 -> 16 -> 8 -> 16 -> 32 with skip connections (width ``w``)."""

    def __init__(self, cin: int, cout: int, w: int = 16) -> None:
        super().__init__()
        self.e1 = nn.Sequential(_conv(cin, w), _conv(w, w))
        self.e2 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))
        self.mid = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w))
        self.u2 = _up(4 * w, 2 * w)
        self.d2 = _conv(4 * w, 2 * w)
        self.u1 = _up(2 * w, w)
        self.d1 = _conv(2 * w, w)
        self.out = nn.Conv2d(w, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(e1)
        m = self.mid(e2)
        d2 = self.d2(torch.cat([self.u2(m), e2], 1))
        d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
        return self.out(d1)


class DeepUNetBody(nn.Module):
    """UNet of ``levels`` levels (Ronneberger et al. 2015), width ``w`` doubling per level up to 8w: what
    ``unet:N`` builds (``unet`` keeps its two-level :class:`UNetBody`, so saved models load as before)."""

    def __init__(self, cin: int, cout: int, levels: int, w: int = 16) -> None:
        super().__init__()
        widths = [w * 2 ** min(i, 3) for i in range(levels + 1)]
        self.multiple = 2**levels
        self.stem = nn.Sequential(_conv(cin, w), _conv(w, w))
        self.down = nn.ModuleList(
            nn.Sequential(_conv(widths[i], widths[i + 1], 2), _conv(widths[i + 1], widths[i + 1]))
            for i in range(levels)
        )
        self.up = nn.ModuleList(_up(widths[i + 1], widths[i]) for i in range(levels))
        self.merge = nn.ModuleList(_conv(2 * widths[i], widths[i]) for i in range(levels))
        self.out = nn.Conv2d(w, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for i in reversed(range(len(self.up))):
            h = self.merge[i](torch.cat([self.up[i](h), skips.pop()], 1))
        return self.out(h)


class ResNetBody(nn.Module):
    """ResNet-style generator (Johnson et al. 2016): down 2x, ``blocks`` residual blocks, up 2x."""

    def __init__(self, cin: int, cout: int, w: int = 32, blocks: int = 3) -> None:
        super().__init__()
        self.head = nn.Sequential(_conv(cin, w), _conv(w, 2 * w, 2))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(2 * w, 2 * w, 3, 1, 1))
            for _ in range(blocks)
        )
        self.tail = nn.Sequential(_up(2 * w, w), nn.Conv2d(w, cout, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        for block in self.blocks:
            h = h + block(h)
        return self.tail(h)


@I2I_MODELS.register("unet")
def unet(cin: int, cout: int, residual: bool, depth: int | None = None) -> nn.Module:
    """Small UNet (width 16, two levels): about 0.12M parameters; ``unet:N``: N levels."""
    if depth is None:
        return I2INet(UNetBody(cin, cout), cin, cout, residual)
    return I2INet(DeepUNetBody(cin, cout, depth), cin, cout, residual)


@I2I_MODELS.register("encdec")
def encdec(cin: int, cout: int, residual: bool, depth: int | None = None) -> nn.Module:
    """Plain conv encoder-decoder without skips: 32 -> 16 -> 8 -> 16 -> 32; ``encdec:N`` halves N times."""
    n = 2 if depth is None else depth
    layers = [_conv(cin, 32), _conv(32, 64, 2), *(_conv(64, 64, 2) for _ in range(n - 1)), _conv(64, 64)]
    layers += [*(_up(64, 64) for _ in range(n - 1)), _up(64, 32), nn.Conv2d(32, cout, 3, 1, 1)]
    body = nn.Sequential(*layers)
    body.multiple = 2**n
    return I2INet(body, cin, cout, residual)


@I2I_MODELS.register("resnet-i2i")
def resnet_i2i(cin: int, cout: int, residual: bool, depth: int | None = None) -> nn.Module:
    """ResNet-style generator with three residual blocks at half resolution; ``resnet-i2i:N``: N blocks."""
    return I2INet(ResNetBody(cin, cout, blocks=3 if depth is None else depth), cin, cout, residual)


@I2I_MODELS.register("conv3")
def conv3(cin: int, cout: int, residual: bool) -> nn.Module:
    """Three 3x3 convolutions: the toy network of tests and doctests."""
    return I2INet(nn.Sequential(_conv(cin, 16), _conv(16, 16), nn.Conv2d(16, cout, 3, 1, 1)), cin, cout, residual)


@I2I_MODELS.register("lite")
def lite(cin: int, cout: int, residual: bool) -> nn.Module:
    """Three 3x3 convolutions of width 8 (about 1.2k weights): deep output watermarking's light
    embedding network H, which only adds a watermark residual and must cost little beside the target."""
    return I2INet(nn.Sequential(_conv(cin, 8), _conv(8, 8), nn.Conv2d(8, cout, 3, 1, 1)), cin, cout, residual)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017, pix2pix): a logit per overlapping patch.

    Example:
        >>> PatchDiscriminator(3)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, in_channels: int, w: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 1, 3, 1, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_i2i(
    arch: str, in_channels: int, out_channels: int, image_size: int, residual: bool | None = None
) -> nn.Module:
    """An untrained image-to-image network; ``residual`` defaults to ``in_channels == out_channels``.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> net = ModelSpec("unet", 3, 3, 32, family="image2image").build()
        >>> net(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """
    base, depth = split_depth(arch) if not arch.startswith("barrier:") else (arch, None)
    multiple = 2**depth if base in ("unet", "encdec") and depth is not None else 4
    if image_size % multiple:
        raise ConfigError(
            f"the image-to-image network {arch} needs an image_size divisible by {multiple}, got {image_size}; "
            "resize the images or use fewer levels"
        )
    if arch.startswith("barrier:"):
        target, _, embedder = arch.removeprefix("barrier:").partition("+")
        if not embedder:
            raise ConfigError(f"a barrier arch reads 'barrier:TARGET+EMBEDDER', got {arch!r}")
        return BarrierModel(
            build_i2i(target, in_channels, out_channels, image_size),
            build_i2i(embedder, 2 * out_channels, out_channels, image_size, residual=False),
            torch.zeros(out_channels, image_size, image_size),
        )
    builder = I2I_MODELS.get(base)
    residual = in_channels == out_channels if residual is None else residual
    if depth is None:
        return builder(in_channels, out_channels, residual)
    return builder(in_channels, out_channels, residual, depth=depth)


DEPTHS = ("unet", "encdec", "resnet-i2i")  # the architectures whose name takes ':N'


def split_depth(arch: str) -> tuple[str, int | None]:
    """``unet:4`` -> ("unet", 4); ``unet`` -> ("unet", None); the name is checked: a registered
    architecture, and a depth (an int 1-8) only on those that take one (UnknownNameError / ConfigError).

    Example:
        >>> split_depth("unet:3"), split_depth("encdec")
        (('unet', 3), ('encdec', None))
    """
    base, sep, depth = arch.partition(":")
    if sep and (not depth.isdigit() or not 1 <= int(depth) <= 8):
        raise ConfigError(f"the depth in {arch!r} must be an int from 1 to 8, e.g. 'unet:4'")
    I2I_MODELS.get(base)
    if sep and base not in DEPTHS:
        raise ConfigError(f"{base} has no depth setting; ':N' fits {', '.join(DEPTHS)}")
    return base, int(depth) if sep else None


def check_i2i_arch(arch: str) -> None:
    """Raise UnknownNameError / ConfigError for a name :func:`build_i2i` cannot build (``NAME`` or ``NAME:N``)."""
    split_depth(arch)


class BarrierModel(nn.Module):
    """A target network with deep output watermarking's embedding network H at its output.

    ``forward(a) = clamp(b + H(cat(b, watermark)), 0, 1)`` with ``b = target(a)``: H hides the one
    watermark image in every output. The watermark is a buffer, so the whole barrier model (target, H
    and watermark) is saved and loaded as one ownmark model (its spec's arch is ``barrier:T+H``).

    Example:
        >>> from ownmark.models import ModelSpec
        >>> barrier = ModelSpec("barrier:conv3+conv3", 3, 3, 16, family="image2image").build()
        >>> barrier(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, target: nn.Module, embedder: nn.Module, watermark: torch.Tensor) -> None:
        super().__init__()
        self.target, self.embedder = target, embedder
        self.register_buffer("watermark", watermark.detach().clone())

    def embed(self, b: torch.Tensor) -> torch.Tensor:
        """Marked outputs b' for clean outputs ``b`` (N, C, H, W)."""
        delta = self.watermark.expand(len(b), -1, -1, -1)
        return (b + self.embedder(torch.cat([b, delta], 1))).clamp(0, 1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.embed(self.target(a))
