"""Image encoders for self-supervised pre-training: images in, feature vectors out.

``conv4`` is four 3x3 conv layers (16, 32, 64 and ``dim`` channels) with batch norm and global
average pooling, so its features are non-negative, like a ResNet's after ReLU and pooling;
``resnet-s`` is the small ResNet trunk of the classifiers with ``dim`` channels in its last
stage. ``tv:NAME`` and ``timm:NAME`` build real backbones whose classifier layer outputs ``dim``
features. Build them through ``ModelSpec(arch, channels, dim, size, family="encoder")``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ownmark.errors import ConfigError, KeyMismatchError
from ownmark.models.classifier import _Block, build_classifier
from ownmark.models.holders import Holders
from ownmark.models.layout import cpu_channels_last
from ownmark.models.store import load_model
from ownmark.registry import Registry

ENCODERS: Registry = Registry("encoder")


def _conv(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@ENCODERS.register("conv4")
def conv4(in_channels: int, dim: int, image_size: int) -> nn.Module:
    """Conv layers of 16, 32, 64 and ``dim`` channels (the last three with stride 2), average-pooled."""
    return nn.Sequential(
        *_conv(in_channels, 16, 1), *_conv(16, 32, 2), *_conv(32, 64, 2), *_conv(64, dim, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip


@ENCODERS.register("resnet-s")
def resnet_s(in_channels: int, dim: int, image_size: int) -> nn.Module:
    """The small ResNet trunk (stages of 32, 64 and ``dim`` channels), average-pooled."""
    return nn.Sequential(
        *_conv(in_channels, 32, 1), _Block(32, 32, 1), _Block(32, 64, 2), _Block(64, dim, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip


def build_encoder(name: str, in_channels: int, dim: int, image_size: int) -> nn.Module:
    """Build an untrained encoder with ``dim`` output features.

    Example:
        >>> build_encoder("conv4", 1, 32, 28)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 32])
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"an encoder's feature dimension must be a positive int, got {dim!r}")
    from ownmark.models.user import is_user_arch

    if name.startswith(("tv:", "timm:")) or is_user_arch(name):  # real backbones, or pkg.module:factory
        return build_classifier(name, in_channels, dim, image_size)
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 or 3, got {in_channels}")
    return ENCODERS.get(name)(in_channels, dim, image_size)


def load_encoder(path: str | Path, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """An ownmark encoder artefact, refused with one line if it is another family or, given
    ``input_shape`` (C, H, W), takes other images."""
    model, _ = load_model(path)
    from ownmark.families import FAMILIES, family_of

    spec = model.spec
    if family_of(model) is not FAMILIES.get("encoder"):
        raise KeyMismatchError(
            f"{path} holds a {spec.family} ({spec.arch}), not an encoder; pre-train one with "
            "`ownmark train --family encoder` (for classifiers, `ownmark attack distill` steals and verifies)"
        )
    if input_shape is not None and tuple(spec.input_shape) != tuple(input_shape):
        raise KeyMismatchError(
            f"the encoder takes {spec.input_shape} images but the dataset has {tuple(input_shape)}; "
            "pass the dataset the encoder was trained on"
        )
    return model


# the innermost inference_on's device, per thread and task (None: where the model is): a block in one
# thread does not move the models another thread runs, and blocks may end in any order across threads
_INFERENCE_DEVICE: contextvars.ContextVar[torch.device | None] = contextvars.ContextVar(
    "ownmark_inference_device", default=None
)


@contextlib.contextmanager
def inference_on(device: str | torch.device | None) -> Iterator[None]:
    """Run every :func:`encode` (so every verification query, probe feature and utility measurement)
    and image-to-image :func:`~ownmark.train.image2image.predict` inside on ``device``: a CPU model is
    moved there for the call and back, batches are sent there, outputs come back on the CPU. ``None``
    or ``"cpu"``: where the model is, as without the context. The setting belongs to the thread (and
    asyncio task) that entered the block, and to what it starts with a copy of its context.

    Example:
        >>> with inference_on("cpu"):
        ...     encode(nn.Linear(3, 2), torch.ones(4, 3)).shape
        torch.Size([4, 2])
    """
    placed = torch.device(device) if device is not None else None
    if placed is not None and placed.type == "cpu":
        placed = None
    token = _INFERENCE_DEVICE.set(placed)
    try:
        yield
    finally:
        _INFERENCE_DEVICE.reset(token)


def inference_device() -> torch.device | None:
    """The device :func:`inference_on` set, or None (the model's own)."""
    return _INFERENCE_DEVICE.get()


def engine_device(accelerator: str) -> torch.device:
    """The torch device an engine's accelerator name stands for (``auto``: CUDA when present)."""
    if accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("mps" if accelerator == "mps" else "cpu")


# a CPU call switches to channels-last when it has an image per this many conv weight values (see encode)
CHANNELS_LAST_WEIGHTS_PER_IMAGE = 100_000


def _conv_weights(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.dim() == 4)


_ON_DEVICE, _IN_EVAL = Holders(), Holders()  # calls holding a model on a device, in eval mode


@contextlib.contextmanager
def on_inference_device(model: object) -> Iterator[torch.device | None]:
    """``model`` moved to :func:`inference_device` for the block (and back where it was once the last
    concurrent block on it ends); yields the device batches go to (the model's, where another thread's
    block already moved it), or None to leave everything where it is."""
    device = inference_device()
    if device is None or not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
        yield None
        return

    def move() -> tuple[torch.device, Callable[[], None]]:
        home = next(model.parameters()).device
        model.to(device)
        return device, lambda: model.to(home)

    with _ON_DEVICE.hold(model, move) as held:
        yield held


@torch.no_grad()
def encode(
    encoder: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Outputs (features, logits, images) of ``x`` (N, C, H, W) in eval mode without gradients, batched;
    the model's mode is restored (any batch function works too), once the last of several concurrent calls on
    it (threads) ends. Inside :func:`inference_on` the model answers on that device.

    On the CPU, a convolutional model built from library modules answers in the channels-last memory
    layout (its weights and the images, for the call only, through :func:`ownmark.models.cpu_channels_last`),
    which runs the convolutions of this project's networks 2-2.5x faster here (cnn2, batch 50: 0.65 s vs
    1.6 s per 5,050 images, one thread). Outputs agree with the default layout to float rounding
    (|diff| ~ 1e-7), the same order as a change of thread count. A user's own module answers in the
    default layout (it may ``.view`` an activation), and so does a call of fewer images than one per
    :data:`CHANNELS_LAST_WEIGHTS_PER_IMAGE` convolution weight values: switching copies every such weight
    there and back, which costs more than it saves on a few images of a large model (ResNet-18, 11.2 M conv
    weights, one thread: 19 ms per switch against an 18-ms forward pass of one image; the switch paid for
    itself at 128 images, 1.42 s vs 1.73 s). It switches from 112 images there, from one for cnn2 or conv4."""
    module = encoder if isinstance(encoder, nn.Module) else None
    with _in_eval(module):
        with on_inference_device(encoder) as device:
            if device is not None:
                return torch.cat([
                    encoder(x[i : i + batch_size].to(device, non_blocking=True)).float().cpu()
                    for i in range(0, len(x), batch_size)
                ])  # fmt: skip
        worth = (
            x.dim() == 4 and module is not None and len(x) * CHANNELS_LAST_WEIGHTS_PER_IMAGE >= _conv_weights(module)
        )
        with cpu_channels_last(module if worth else None, device=x.device) as switched:
            if switched:
                x = x.to(memory_format=torch.channels_last)
            return torch.cat([encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


@contextlib.contextmanager
def _in_eval(module: nn.Module | None) -> Iterator[None]:
    """``module`` in eval mode for the block; its mode restored when the last concurrent block on it ends (a
    call in another thread never puts it back in training mode, batch statistics taken and updated, under
    this one's forward pass)."""
    if module is None:
        yield
        return

    def to_eval() -> tuple[None, Callable[[], None]]:
        was = module.training
        module.eval()
        return None, lambda: module.train(was)

    with _IN_EVAL.hold(module, to_eval):
        yield


def encode_set(
    encoder: nn.Module | Callable[[torch.Tensor], torch.Tensor], data: Any, batch_size: int = 512
) -> torch.Tensor:
    """:func:`encode` of every image of an :class:`~ownmark.data.ImageSet`; a streamed set is read eight
    batches at a time instead of loaded whole (the same batches, so the same outputs as in memory)."""
    from ownmark.data.streamed import StreamedImageSet

    if not isinstance(data, StreamedImageSet):
        return encode(encoder, data.x, batch_size)
    chunk = 8 * batch_size
    return torch.cat([
        encode(encoder, data.read(torch.arange(lo, min(lo + chunk, len(data)))), batch_size)
        for lo in range(0, len(data), chunk)
    ])  # fmt: skip


def reestimate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Set every batch-norm layer's running statistics to ``model``'s own on images ``x`` (an
    exact average over the batches, no gradients); the model is left in eval mode. This is what
    any user who trains the model on such data ends up with, whatever statistics it carried."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(device))
    for m, momentum in zip(layers, saved, strict=True):
        m.momentum = momentum
    model.eval()
