"""Training of image-to-image networks: pixel, SSIM and adversarial losses, paired augmentation.

The same loop trains the owner's target models and the attacker's surrogates. As in
:mod:`ownmark.train.loop`, every random choice (batch order, augmentation) is keyed by
``(seed, epoch)`` or ``(seed, step)``, so a run resumed from its checkpoint ends with the same
weights as one that never stopped. It runs on the shared Fabric engine (:class:`~ownmark.train.Engine`:
CPU by default, ``cuda`` and mixed precision on a GPU); in one full-precision process it steps the
unwrapped modules, as :func:`ownmark.train.fit` does, so the CPU path is plain PyTorch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.errors import (
    ConfigError,
    IntegrityError,
    check_same_shape,
    require_choice,
    require_non_negative,
    require_positive,
)
from ownmark.io import load_checkpoint, save_checkpoint
from ownmark.models.image2image import PatchDiscriminator
from ownmark.models.layout import cpu_channels_last
from ownmark.train.loop import Batches, Engine, TrainResult, _fabric, cpu_seeded, key_seed, optimizer_state_to

LOSSES = ("l1", "l2", "l2+gan", "ssim+gan")


@dataclass(frozen=True)
class I2ITrainConfig:
    """How an image-to-image network is trained.

    Args:
        loss: ``l1``, ``l2``, ``l2+gan`` or ``ssim+gan``. ``ssim+gan`` is the offline stand-in for
            the paper's perceptual (VGG) + adversarial loss: 1 - SSIM plus an L1 term of weight 0.1.
        gan_weight: weight of the adversarial term of a conditional PatchGAN (pix2pix style).
        augment: rotate (multiples of 90 degrees), crop (24..32 pixels) and resize back, each batch,
            inputs and targets alike; known to hurt deep output watermarking.
    """

    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    loss: str = "l1"
    gan_weight: float = 0.01
    augment: bool = False

    def __post_init__(self) -> None:
        require_positive(self, "epochs", "batch_size", "lr")
        require_non_negative(self, "gan_weight")
        require_choice(self, "loss", LOSSES)
        if not isinstance(self.epochs, int) or not isinstance(self.batch_size, int):
            raise ConfigError(
                f"I2ITrainConfig.epochs and batch_size must be ints, got {self.epochs!r}, {self.batch_size!r}"
            )


def pixel_loss(out: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """The non-adversarial part of ``loss`` between outputs and targets."""
    if loss == "l1":
        return F.l1_loss(out, target)
    if loss.startswith("ssim"):
        from torchmetrics.functional.image import structural_similarity_index_measure

        ssim = structural_similarity_index_measure(out, target, data_range=1.0)
        return 1 - ssim + 0.1 * F.l1_loss(out, target)
    return F.mse_loss(out, target)


def augment_pair(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random rotation by 90-degree steps and crop-and-resize applied to ``x`` and ``y``.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> a, b = augment_pair(x, x.clone(), seed=3)
        >>> torch.equal(a, b), a.shape
        (True, torch.Size([2, 3, 32, 32]))
    """
    g = torch.Generator().manual_seed(seed)
    k = int(torch.randint(4, (1,), generator=g))
    size = x.shape[-1]
    crop = int(torch.randint(3 * size // 4, size + 1, (1,), generator=g))
    top, left = (int(torch.randint(size - crop + 1, (1,), generator=g)) for _ in range(2))

    def apply(t: torch.Tensor) -> torch.Tensor:
        t = torch.rot90(t, k, (2, 3))[..., top : top + crop, left : left + crop]
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False) if crop != size else t

    return apply(x), apply(y)


def fit_i2i(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: I2ITrainConfig = I2ITrainConfig(),
    *,
    seed: int,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    engine: Engine = Engine(),
) -> TrainResult:
    """Train ``model`` in place to map inputs ``x`` to targets ``y`` (both (N, C, H, W) in [0, 1]).

    The model (and the PatchGAN of an adversarial loss) is placed by ``engine``; the data is placed as
    :class:`ownmark.train.loop.Batches` says (on an accelerator: resident when it fits). The model comes
    back on the CPU in eval mode.

    Args:
        checkpoint: file written atomically after each epoch; with ``resume`` an existing one is
            loaded and training continues after its last finished epoch.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> net = ModelSpec("conv3", 3, 3, 16, family="image2image").build()
        >>> x = torch.rand(32, 3, 16, 16)
        >>> fit_i2i(net, x, x.flip(1), I2ITrainConfig(epochs=2), seed=0).epochs_run
        2
    """
    check_same_shape("x", x, "y", y)
    gan = config.loss.endswith("+gan") and config.gan_weight > 0
    disc = seeded(lambda: PatchDiscriminator(x.shape[1] + y.shape[1]), seed, 99) if gan else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=(0.5, 0.999)) if disc is not None else None
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        state = load_checkpoint(checkpoint)
        if state.get("seed") != seed or state.get("config") != asdict(config):
            raise IntegrityError(f"{checkpoint} was written by a run with another seed or config; delete it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if disc is not None and d_opt is not None:
            disc.load_state_dict(state["disc"])
            d_opt.load_state_dict(state["d_opt"])
        start = int(state["epoch"])
    fabric = _fabric(engine)
    if fabric.world_size > 1:
        raise ConfigError("the image-to-image trainer runs in one process; use --devices 1")
    fmodel, foptimizer = fabric.setup(model, optimizer)
    optimizer_state_to(optimizer, fabric.device)
    plain = engine.precision == "32-true"  # one process in full precision: step the unwrapped modules
    forward, stepper = (fmodel.module, foptimizer.optimizer) if plain else (fmodel, foptimizer)
    d_forward = d_stepper = None
    if disc is not None and d_opt is not None:
        fdisc, fd_opt = fabric.setup(disc, d_opt)
        optimizer_state_to(d_opt, fabric.device)
        d_forward, d_stepper = (fdisc.module, fd_opt.optimizer) if plain else (fdisc, fd_opt)

    def backward(value: torch.Tensor) -> None:
        value.backward() if plain else fabric.backward(value)

    result, n = TrainResult(), len(x)
    batches = Batches([x, y], fabric.device)  # resident on an accelerator when it fits
    fmodel.train()
    with cpu_channels_last(model, disc, device=fabric.device):
        for epoch in range(start, config.epochs):
            t0, total = time.perf_counter(), 0.0
            order = torch.randperm(n, generator=torch.Generator().manual_seed(key_seed(seed, epoch)))
            for i, (xb, yb) in enumerate(batches.epoch(order, config.batch_size)):
                if config.augment:
                    xb, yb = augment_pair(xb, yb, key_seed(seed, epoch, i, 1))
                out = forward(xb)
                loss = pixel_loss(out, yb, config.loss)
                if d_forward is not None:
                    fake_logit = d_forward(torch.cat([xb, out], 1))
                    loss = loss + config.gan_weight * F.binary_cross_entropy_with_logits(
                        fake_logit, torch.ones_like(fake_logit)
                    )
                stepper.zero_grad(set_to_none=True)
                backward(loss)
                stepper.step()
                if d_forward is not None and d_stepper is not None:
                    d_stepper.zero_grad(set_to_none=True)
                    backward(discriminator_loss(d_forward, torch.cat([xb, yb], 1), torch.cat([xb, out.detach()], 1)))
                    d_stepper.step()
                total = total + loss.detach() * len(xb)  # no .item() per step: it would sync every batch
            result.seconds += time.perf_counter() - t0
            result.images += n
            result.epochs_run += 1
            result.losses.append(float(total) / n)
            if checkpoint is not None:
                cpu = {k: v.cpu() for k, v in model.state_dict().items()}
                state = {"model": cpu, "optimizer": optimizer.state_dict(), "epoch": epoch + 1}
                if disc is not None and d_opt is not None:
                    state |= {"disc": {k: v.cpu() for k, v in disc.state_dict().items()}, "d_opt": d_opt.state_dict()}
                save_checkpoint(checkpoint, {**state, "seed": seed, "config": asdict(config)})
    model.cpu().eval()
    if disc is not None:
        disc.cpu()
    return result


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a PatchGAN telling real (1) from fake (0) patches."""
    r, f = disc(real), disc(fake)
    return F.binary_cross_entropy_with_logits(r, torch.ones_like(r)) + F.binary_cross_entropy_with_logits(
        f, torch.zeros_like(f)
    )


def seeded(factory: Callable[[], nn.Module], seed: int, stream: int = 0) -> nn.Module:
    """``factory()`` with its weights initialised from ``seed`` (the global RNG is forked, not touched).

    Example:
        >>> from ownmark.models import ModelSpec
        >>> spec = ModelSpec("conv3", 3, 3, 16, family="image2image")
        >>> a, b = seeded(spec.build, 1), seeded(spec.build, 1)
        >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        True
    """
    with cpu_seeded(key_seed(seed, stream, 31)):
        return factory()


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Outputs of ``model`` (a module or any batch function) on ``x``, batched, clamped to [0, 1], in the
    default layout: :func:`ownmark.models.encode`'s forward pass (eval mode, no gradients, channels-last
    convolutions on the CPU; inside :func:`ownmark.models.encoder.inference_on` a module answers on that
    device)."""
    from ownmark.models.encoder import encode

    return encode(model, x, batch_size).clamp(0, 1).contiguous()
