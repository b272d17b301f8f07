"""The training stages of deep output watermarking: the watermark image, joint training of H and R
(stage 1), R alone with H frozen (:func:`fit_extractor`), the absorbed form, and fine-tuning R on an
owner surrogate's outputs (stage 2)."""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.errors import ShapeError
from ownmark.models.image2image import BarrierModel, PatchDiscriminator, build_i2i
from ownmark.train import key_seed
from ownmark.train.image2image import I2ITrainConfig, discriminator_loss, fit_i2i, predict, seeded
from ownmark.verify.metrics import bits_image
from ownmark.watermarks.deepwm_config import DeepWMConfig

log = logging.getLogger(__name__)


def make_watermark(cfg: DeepWMConfig, channels: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The watermark image (C, H, W) in [0, 1] and, for ``bits``, the secret bits drawn from ``seed``."""
    if cfg.watermark == "bits":
        bits = torch.randint(2, (cfg.n_bits,), generator=torch.Generator().manual_seed(key_seed(seed, 17)))
        return bits_image(bits, channels, size), bits
    import skimage.data

    logo = torch.from_numpy(skimage.data.logo()).float().div(255).permute(2, 0, 1)
    rgb = logo[:3] * logo[3:] + (1 - logo[3:])  # over white
    rgb = F.interpolate(rgb[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return (rgb if channels == 3 else rgb.mean(0, keepdim=True).expand(channels, -1, -1)).clamp(0, 1), None


def joint_training(
    barrier: BarrierModel, extractor: nn.Module, a: torch.Tensor, b: torch.Tensor, cfg: DeepWMConfig, *, seed: int
) -> list[float]:
    """Stage 1: train H (in ``barrier``), R and, with ``w_adv > 0``, a PatchGAN discriminator."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    watermark = barrier.watermark
    blank = torch.ones_like(watermark)
    params = [*barrier.embedder.parameters(), *extractor.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.5, 0.999))
    disc = seeded(lambda: PatchDiscriminator(b.shape[1]), seed, 3) if cfg.w_adv > 0 else None
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999)) if disc is not None else None
    barrier.embedder.train()
    extractor.train()
    losses = []
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(a), generator=torch.Generator().manual_seed(key_seed(seed, epoch, 4)))
        total, w_fidelity = 0.0, fidelity_weight(cfg, epoch)
        for i in range(0, len(a) - cfg.batch_size + 1, cfg.batch_size):  # even batches (paper)
            idx = order[i : i + cfg.batch_size]
            ab, bb = a[idx], b[idx]
            marked = barrier.embed(bb)
            loss = w_fidelity * F.mse_loss(marked, bb)
            if cfg.w_ssim:
                loss = loss + cfg.w_ssim * w_fidelity / cfg.w_fidelity * (1 - ssim(marked, bb, data_range=1.0))
            if disc is not None:
                logit = disc(marked)
                loss = loss + cfg.w_adv * F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
            seen = [marked]
            if cfg.distort:
                g = torch.Generator().manual_seed(key_seed(seed, epoch, i, 5))
                noise = torch.randn(marked.shape, generator=g) * cfg.distort
                seen.append((marked + noise).clamp(0, 1))
            ext = extractor(torch.cat(seen))
            loss = loss + cfg.w_extract * F.mse_loss(ext, watermark.expand_as(ext))
            loss = loss + cfg.w_consistency * F.mse_loss(ext, ext.mean(0, keepdim=True).expand_as(ext))
            clean = extractor(torch.cat([ab, bb]))
            loss = loss + cfg.w_clean * 2 * F.mse_loss(clean, blank.expand_as(clean))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if disc is not None and d_opt is not None:
                d_opt.zero_grad(set_to_none=True)
                discriminator_loss(disc, bb, marked.detach()).backward()
                d_opt.step()
            total += float(loss.detach())
        losses.append(total)
        log.info("deepwm stage 1 epoch %d: loss %.4f", epoch + 1, total)
    barrier.eval()
    extractor.eval()
    return losses


def fidelity_weight(cfg: DeepWMConfig, epoch: int) -> float:
    """Fidelity weight of ``epoch``: it rises geometrically from min(1, w_fidelity) to w_fidelity over
    the first half of stage 1, so that R learns to read a strong mark before H is asked to hide it.

    Example:
        >>> [round(fidelity_weight(DeepWMConfig(w_fidelity=100.0, epochs=4), e)) for e in range(4)]
        [1, 10, 100, 100]
    """
    start = min(1.0, cfg.w_fidelity)
    frac = min(1.0, epoch / max(1, cfg.epochs // 2))
    return start * (cfg.w_fidelity / start) ** frac if start > 0 else 0.0


def absorb(barrier: BarrierModel, extractor: nn.Module, a: torch.Tensor, cfg: DeepWMConfig, *, seed: int) -> nn.Module:
    """The absorbed form: a copy of the target trained to emit the barrier's marked outputs itself.

    The copy fits b' = barrier(a) (L2) while the frozen R must still extract the watermark from its
    outputs, so the mark survives in the single network that is deployed.
    """
    marked_b = i2i_outputs(barrier, a)
    model = copy.deepcopy(barrier.target).train()
    watermark = barrier.watermark
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    for p in extractor.parameters():
        p.requires_grad_(False)
    for epoch in range(cfg.absorb_epochs):
        order = torch.randperm(len(a), generator=torch.Generator().manual_seed(key_seed(seed, epoch, 6)))
        for i in range(0, len(a), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            out = model(a[idx])
            ext = extractor(out.clamp(0, 1))
            loss = F.mse_loss(out, marked_b[idx]) + 0.01 * cfg.w_extract * F.mse_loss(ext, watermark.expand_as(ext))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    for p in extractor.parameters():
        p.requires_grad_(True)
    return model.eval()


def finetune_extractor(
    marked: nn.Module,
    target: nn.Module,
    extractor: nn.Module,
    a: torch.Tensor,
    watermark: torch.Tensor,
    blank: torch.Tensor,
    cfg: DeepWMConfig,
    *,
    seed: int,
) -> None:
    """Stage 2: train an owner surrogate on (a, marked(a)) and fine-tune R on its outputs, mixed with
    marked outputs (to the watermark) and inputs and clean outputs (to the blank)."""
    marked_b, clean_b = i2i_outputs(marked, a), i2i_outputs(target, a)
    channels, size = marked_b.shape[1], marked_b.shape[-1]
    surrogate = seeded(lambda: build_i2i(cfg.surrogate_arch, a.shape[1], channels, size), seed, 8)
    config = I2ITrainConfig(epochs=cfg.surrogate_epochs, batch_size=cfg.batch_size, loss=cfg.surrogate_loss)
    fit_i2i(surrogate, a, marked_b, config, seed=key_seed(seed, 9))
    surrogate_b = i2i_outputs(surrogate, a)
    positives, negatives = torch.cat([surrogate_b, marked_b], 1), torch.cat([a, clean_b], 1)
    fit_extractor(
        extractor, positives, negatives, watermark, blank, cfg, cfg.finetune_epochs, cfg.finetune_lr, seed=seed
    )


def fit_extractor(
    extractor: nn.Module,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    watermark: torch.Tensor,
    blank: torch.Tensor,
    cfg: DeepWMConfig,
    epochs: int,
    lr: float,
    *,
    seed: int,
    stream: int = 10,
) -> None:
    """Train R alone: images stacked along channels in ``positives`` (N, k*C, H, W) to the watermark, those
    in ``negatives`` to the blank, with the consistency term across each batch's extractions."""
    channels = watermark.shape[0]
    opt = torch.optim.Adam(extractor.parameters(), lr=lr, betas=(0.5, 0.999))
    extractor.train()
    for epoch in range(epochs):
        order = torch.randperm(len(positives), generator=torch.Generator().manual_seed(key_seed(seed, epoch, stream)))
        for i in range(0, len(positives), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            pos = extractor(torch.cat(positives[idx].split(channels, 1)))
            neg = extractor(torch.cat(negatives[idx].split(channels, 1)))
            loss = F.mse_loss(pos, watermark.expand_as(pos)) + F.mse_loss(neg, blank.expand_as(neg))
            loss = loss + cfg.w_consistency * F.mse_loss(pos, pos.mean(0, keepdim=True).expand_as(pos))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    extractor.eval()


def build_extractor(arch: str, channels: int, size: int, head: str) -> nn.Module:
    """R: an image-to-image network ``arch``, followed by a sigmoid when ``head`` is ``sigmoid`` (its
    output then lies in [0, 1], the range of the watermark and the blank)."""
    net = build_i2i(arch, channels, channels, size, residual=False)
    return nn.Sequential(net, nn.Sigmoid()) if head == "sigmoid" else net


def i2i_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s outputs on ``x``, refused unless they are images of the inputs' size."""
    out = predict(model, x)
    if out.ndim != 4 or out.shape[-2:] != x.shape[-2:]:
        raise ShapeError(
            f"deepwm marks image-to-image models, but this model maps {tuple(x.shape[1:])} inputs to "
            f"{tuple(out.shape[1:])}; use a classifier scheme for classifiers"
        )
    return out


def zero_last(net: nn.Module) -> None:
    """Scale ``net``'s last convolution to near zero, so a residual H starts as the identity: b' = b."""
    last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(0.01)
        if last.bias is not None:
            last.bias.zero_()
