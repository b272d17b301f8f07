"""The memory layout CPU convolutions run in: one mechanism for training loops and batched inference."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ownmark.models.holders import Holders

# module classes from these packages keep their activations layout-agnostic (no .view of a conv output)
_LAYOUT_SAFE = ("torch.", "torchvision.", "timm.", "ownmark.", "lightly.", "kornia.")
# open blocks (nested, or in other threads) holding each 4-d parameter channels-last: the first switches it,
# the last puts it back
_CHANNELS_LAST = Holders()


@contextmanager
def cpu_channels_last(*models: nn.Module | None, device: torch.device | str = "cpu") -> Iterator[bool]:
    """Keep the 4-d weights (convolutions, transposed convolutions) of ``models`` in the channels-last
    layout for the block (a training loop, a trigger search, a batched forward pass), then put them back in
    the default layout (the same values; later inference and saving see the usual tensors). Yields whether
    every model given is in that layout inside the block, so a caller knows whether to feed it
    channels-last images too.

    On the CPU the oneDNN convolution kernels run channels-last faster: measured on this project's 2-core
    CPU, one thread, batch 64, a training step (forward, backward, SGD) of conv4 33.6 -> 29.0 ms, cnn2
    54 -> 35 ms, resnet-s 106 -> 76 ms, the 32-px UNet 172-188 -> 132-148 ms, encdec 209-231 -> 166 ms (lenet
    7.3 -> 7.6 ms, too small to gain); inference of cnn2 on 5,050 images 1.6 s -> 0.65 s. Only the weights
    change layout; each convolution's output follows its weight. Kernels that sum in another order give
    other last bits than the default layout (|diff| ~ 1e-7 in a forward pass), so runs are reproducible (and
    resume bit-identically) in this layout, not bit-identical to the same run in the default one.

    Applied on the CPU only (on a GPU channels-last pays with mixed precision and is left to the engine),
    and only to models whose module classes all come from torch, torchvision, timm, lightly, kornia or
    ownmark: a user's own module may ``.view`` an activation, which a channels-last tensor refuses, so it
    runs in the default layout. Blocks nest and may run at once in several threads (the HTTP service answers
    one model from a thread pool): a weight stays switched until the last block holding it ends (an
    evaluation inside a training loop keeps the loop's layout; a query never sees its weights switch back
    mid-forward because another query ended).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
        >>> with cpu_channels_last(net) as switched:
        ...     switched, net[0].weight.is_contiguous(memory_format=torch.channels_last)
        (True, True)
        >>> net[0].weight.is_contiguous()
        True
    """
    given = [m for m in models if m is not None]
    chosen = [m for m in given if _channels_last_ok(m)] if torch.device(device).type == "cpu" else []
    weights = {id(p): p for m in chosen for p in m.parameters() if p.dim() == 4}.values()
    with _CHANNELS_LAST.hold_each(weights, _switch):
        yield bool(given) and len(chosen) == len(given)


def _switch(p: torch.Tensor) -> tuple[None, Callable[[], None]]:
    _relayout(p, torch.channels_last)
    return None, lambda: _relayout(p, torch.contiguous_format)


def _relayout(p: torch.Tensor, layout: torch.memory_format) -> None:
    # .to, not .contiguous: with one input channel only .to sets the strides the fast kernels look for
    p.data = p.data.to(memory_format=layout)
    if p.grad is not None:
        p.grad.data = p.grad.data.to(memory_format=layout)


def _channels_last_ok(model: nn.Module) -> bool:
    mods = list(model.modules())
    return (
        any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in mods)
        and all(type(m).__module__.startswith(_LAYOUT_SAFE) for m in mods)
        and all(p.device.type == "cpu" for p in model.parameters() if p.dim() == 4)
    )
