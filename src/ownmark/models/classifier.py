"""Small image classifiers that train in seconds on a CPU, and real architectures by name.

``cnn2`` is the plain two-conv CNN the guide's speed figures are measured on; ``lenet`` is the
LeNet-style net of the FCW paper's MNIST experiments; ``resnet-s`` is a small ResNet (three
stages of one basic block, 16/32/64 channels). ``tv:NAME`` builds any torchvision classifier
and ``timm:NAME`` any timm model, both untrained (nothing is downloaded). A ``:cifar`` suffix
(``tv:resnet18:cifar``) swaps a ResNet's ImageNet stem (7x7 stride-2 convolution and max-pool, which
leave a 1x1 map of a 32-px image after the last stage) for the CIFAR stem of He et al. 2016 (one 3x3
stride-1 convolution, no pool), as the papers' CIFAR-10 ResNet-18s use.
"""

from __future__ import annotations

import torch
from torch import nn

from ownmark.errors import ConfigError, UnknownNameError
from ownmark.registry import Registry

MODELS: Registry = Registry("model")


@MODELS.register("cnn2")
def cnn2(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Two 3x3 conv layers (32, 64 channels) with max-pooling, then a 128-unit hidden layer."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )  # fmt: skip


@MODELS.register("lenet")
def lenet(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """LeNet-5 style: conv 6 and 16 channels (5x5), hidden layers of 120 and 84 units."""
    side = ((image_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ConfigError(f"lenet needs images of at least 16x16 pixels, got {image_size}; use cnn2 or resnet-s")
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * side * side, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )  # fmt: skip


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


class SmallResNet(nn.Module):
    """A ResNet with a 3x3 stem and one basic block per stage (widths 16, 32, 64)."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(_Block(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


@MODELS.register("resnet-s")
def resnet_s(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Small ResNet (about 0.18M parameters)."""
    return SmallResNet(in_channels, num_classes)


class _ChannelAdapter(nn.Module):
    """Repeats a grey channel to three so that RGB architectures accept digit images."""

    def __init__(self, body: nn.Module, in_channels: int) -> None:
        super().__init__()
        self.body, self.repeat = body, 3 // in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.repeat(1, self.repeat, 1, 1))


def _torchvision(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UnknownNameError(f"torchvision has no classifier named {name!r}; see torchvision.models.list_models()")
    body = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return body if in_channels == 3 else _ChannelAdapter(body, in_channels)


def _timm(name: str, in_channels: int, num_classes: int) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"timm:{name} needs the timm package; run `pip install timm`") from None
    if name not in timm.list_models():
        raise UnknownNameError(f"timm has no model named {name!r}; see timm.list_models()")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def cifar_stem(model: nn.Module, name: str) -> nn.Module:
    """Replace a ResNet's ``conv1`` (7x7, stride 2) by a 3x3 stride-1 convolution and drop its ``maxpool``.

    Reference:
        He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
        arXiv:1512.03385 (section 4.2: the CIFAR-10 networks' 3x3 first layer).
    """
    body = model.body if isinstance(model, _ChannelAdapter) else model
    conv = getattr(body, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(getattr(body, "maxpool", None), nn.Module):
        raise ConfigError(
            f"{name}: ':cifar' replaces a ResNet-style stem (conv1 + maxpool) and this architecture has none; "
            "drop ':cifar' or choose a ResNet (tv:resnet18, timm:resnet50, ...)"
        )
    body.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
    body.maxpool = nn.Identity()
    return model


def build_classifier(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build an untrained classifier; ``tv:``/``timm:`` prefixes select real architectures and
    ``pkg.module:factory`` a user's own (:mod:`ownmark.models.user`).

    Example:
        >>> m = build_classifier("cnn2", 1, 10, 28)
        >>> m(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    from ownmark.models.user import build_user, is_user_arch

    if is_user_arch(name):  # pkg.module:factory, a user's own architecture
        return build_user(name, in_channels, num_classes, image_size)
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 or 3, got {in_channels}")
    if name.startswith(("tv:", "timm:")) and name.endswith(":cifar"):
        return cifar_stem(build_classifier(name.removesuffix(":cifar"), in_channels, num_classes, image_size), name)
    if name.startswith("tv:"):
        return _torchvision(name[3:], in_channels, num_classes)
    if name.startswith("timm:"):
        return _timm(name[5:], in_channels, num_classes)
    return MODELS.get(name)(in_channels, num_classes, image_size)
