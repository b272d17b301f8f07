"""The training stages of deep output watermarking: the watermark image, joint training of H and R
(stage 1), R alone with H frozen (:func:`fit_extractor`), the absorbed form, and fine-tuning R on an
owner surrogate's outputs (stage 2).

For a bit-string watermark every stage trains H and R on *random* balanced messages (:func:`messages`),
drawn from a stream the owner's secret bits never enter, so R is one draw independent of the secret:
that is what makes the verification test of :class:`ownmark.watermarks.deepwm.DeepWM` exact. A logo
(public) watermark trains on the logo itself, as the paper does."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.errors import ConfigError, ShapeError
from ownmark.models.image2image import BarrierModel, PatchDiscriminator, build_i2i
from ownmark.models.layout import cpu_channels_last
from ownmark.train import key_seed
from ownmark.train.image2image import I2ITrainConfig, discriminator_loss, fit_i2i, predict, seeded
from ownmark.verify.metrics import bits_image
from ownmark.watermarks.deepwm_config import DeepWMConfig

log = logging.getLogger(__name__)


def make_watermark(cfg: DeepWMConfig, channels: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The watermark image (C, H, W) in [0, 1] and, for ``bits``, the secret bits drawn from ``seed``:
    one uniform draw among the strings with as many ones as zeros (:func:`balanced_bits`), so an extractor
    that outputs all ones (or all zeros) matches exactly half of them whatever the key.

    Example:
        >>> image, bits = make_watermark(DeepWMConfig(n_bits=16), 1, 8, seed=3)
        >>> int(bits.sum()), tuple(image.shape)
        (8, (1, 8, 8))
    """
    if cfg.watermark == "bits":
        bits = balanced_bits(cfg.n_bits, torch.Generator().manual_seed(key_seed(seed, 17)))
        return bits_image(bits, channels, size), bits
    import skimage.data

    logo = torch.from_numpy(skimage.data.logo()).float().div(255).permute(2, 0, 1)
    rgb = logo[:3] * logo[3:] + (1 - logo[3:])  # over white
    rgb = F.interpolate(rgb[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return (rgb if channels == 3 else rgb.mean(0, keepdim=True).expand(channels, -1, -1)).clamp(0, 1), None


def balanced_bits(n_bits: int, generator: torch.Generator, count: int | None = None) -> torch.Tensor:
    """A uniform draw among the bit strings of length ``n_bits`` (even) with ``n_bits / 2`` ones;
    ``count`` draws give (count, n_bits).

    Example:
        >>> balanced_bits(8, torch.Generator().manual_seed(0), 3).sum(1).tolist()
        [4, 4, 4]
    """
    if n_bits % 2:
        raise ConfigError(f"balanced bit strings need an even number of bits, got {n_bits}")
    rows = 1 if count is None else count
    base = (torch.arange(n_bits) < n_bits // 2).long()
    keys = torch.rand(rows, n_bits, generator=generator).argsort(1)
    out = base[keys]
    return out[0] if count is None else out


def messages(cfg: DeepWMConfig, watermark: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Watermark images (count, C, H, W) to train H and R on: for ``bits`` random balanced messages,
    drawn in pairs (each twice, so the consistency term compares two outputs that carry one message);
    for ``logo`` the logo itself."""
    if cfg.watermark != "bits":
        return watermark.expand(count, -1, -1, -1)
    channels, size = watermark.shape[0], watermark.shape[-1]
    bits = balanced_bits(cfg.n_bits, generator, (count + 1) // 2).repeat_interleave(2, 0)[:count]
    return torch.stack([bits_image(b, channels, size) for b in bits])


def mark(embedder: nn.Module, b: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Marked outputs ``clamp(b + H(cat(b, delta)))``; ``delta`` (N, C, H, W) may differ per image."""
    return (b + embedder(torch.cat([b, delta.expand_as(b)], 1))).clamp(0, 1)


def consistency(ext: torch.Tensor, cfg: DeepWMConfig) -> torch.Tensor:
    """The paper's consistency term: extractions of outputs carrying one message should agree. Bit
    messages come in pairs (:func:`messages`), so pairs are compared; a logo is one message for all."""
    if cfg.watermark != "bits":
        return F.mse_loss(ext, ext.mean(0, keepdim=True).expand_as(ext))
    n = len(ext) // 2 * 2
    if n == 0:
        return ext.sum() * 0
    pairs = ext[:n].reshape(n // 2, 2, *ext.shape[1:])
    return F.mse_loss(pairs[:, 0], pairs[:, 1])


def joint_training(
    barrier: BarrierModel, extractor: nn.Module, a: torch.Tensor, b: torch.Tensor, cfg: DeepWMConfig, *, seed: int
) -> list[float]:
    """Stage 1: train H (in ``barrier``), R and, with ``w_adv > 0``, a PatchGAN discriminator."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    watermark = barrier.watermark  # for bits only its shape is used: H and R train on random messages
    blank = torch.ones_like(watermark)
    params = [*barrier.embedder.parameters(), *extractor.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.5, 0.999))
    disc = seeded(lambda: PatchDiscriminator(b.shape[1]), seed, 3) if cfg.w_adv > 0 else None
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999)) if disc is not None else None
    barrier.embedder.train()
    extractor.train()
    losses = []
    with cpu_channels_last(barrier.embedder, extractor, disc):
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(a), generator=torch.Generator().manual_seed(key_seed(seed, epoch, 4)))
            total, w_fidelity = 0.0, fidelity_weight(cfg, epoch)
            for i in range(0, len(a) - cfg.batch_size + 1, cfg.batch_size):  # even batches (paper)
                idx = order[i : i + cfg.batch_size]
                ab, bb = a[idx], b[idx]
                delta = messages(cfg, watermark, len(idx), torch.Generator().manual_seed(key_seed(seed, epoch, i, 18)))
                marked = mark(barrier.embedder, bb, delta)
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
                loss = loss + cfg.w_extract * F.mse_loss(ext, delta.repeat(len(seen), 1, 1, 1))
                loss = loss + cfg.w_consistency * consistency(ext[: len(idx)], cfg)
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


Batch = list[tuple[torch.Tensor, torch.Tensor]]


def finetune_extractor(
    embedder: nn.Module,
    target: nn.Module,
    extractor: nn.Module,
    a: torch.Tensor,
    watermark: torch.Tensor,
    blank: torch.Tensor,
    cfg: DeepWMConfig,
    *,
    seed: int,
) -> nn.Module:
    """Stage 2: train an owner surrogate on (a, marked(a)) and fine-tune R on its outputs, mixed with
    marked outputs (to their message) and inputs and clean outputs (to the blank); return a surrogate
    the owner trained on clean pairs (a negative here, and a control of the key).

    For bits the surrogate imitates the barrier with a *decoy* message (its own stream), never the
    owner's secret bits, and R also learns random messages on the clean surrogate's outputs, so R stays
    independent of the secret. For a logo the decoy is the logo.
    """
    clean_b = i2i_outputs(target, a)
    decoy = messages(cfg, watermark, 1, torch.Generator().manual_seed(key_seed(seed, 19)))
    with torch.no_grad():
        decoy_b = mark(embedder, clean_b, decoy.expand_as(clean_b))
    channels, size = clean_b.shape[1], clean_b.shape[-1]
    config = I2ITrainConfig(epochs=cfg.surrogate_epochs, batch_size=cfg.batch_size, loss=cfg.surrogate_loss)
    surrogate = seeded(lambda: build_i2i(cfg.surrogate_arch, a.shape[1], channels, size), seed, 8)
    fit_i2i(surrogate, a, decoy_b, config, seed=key_seed(seed, 9))
    clean_sur = seeded(lambda: build_i2i(cfg.surrogate_arch, a.shape[1], channels, size), seed, 20)
    fit_i2i(clean_sur, a, clean_b, config, seed=key_seed(seed, 21))
    surrogate_b, clean_sur_b = i2i_outputs(surrogate, a), i2i_outputs(clean_sur, a)

    def positives(idx: torch.Tensor, g: torch.Generator) -> Batch:
        d1, d2 = messages(cfg, watermark, len(idx), g), messages(cfg, watermark, len(idx), g)
        with torch.no_grad():
            marked, on_sur = mark(embedder, clean_b[idx], d1), mark(embedder, clean_sur_b[idx], d2)
        return [(surrogate_b[idx], decoy.expand(len(idx), -1, -1, -1)), (marked, d1), (on_sur, d2)]

    negatives = torch.cat([a, clean_b, clean_sur_b], 1)
    fit_extractor(extractor, positives, negatives, blank, cfg, cfg.finetune_epochs, cfg.finetune_lr, seed=seed)
    return clean_sur


def fit_extractor(
    extractor: nn.Module,
    positives: Callable[[torch.Tensor, torch.Generator], Batch],
    negatives: torch.Tensor,
    blank: torch.Tensor,
    cfg: DeepWMConfig,
    epochs: int,
    lr: float,
    *,
    seed: int,
    stream: int = 10,
) -> None:
    """Train R alone: ``positives(idx, generator)`` gives groups of (images, messages) R must extract,
    ``negatives`` (N, k*C, H, W) holds images stacked along channels that R maps to the blank; the
    consistency term compares extractions of one message within each group."""
    channels = blank.shape[0]
    opt = torch.optim.Adam(extractor.parameters(), lr=lr, betas=(0.5, 0.999))
    extractor.train()
    with cpu_channels_last(extractor):
        for epoch in range(epochs):
            g = torch.Generator().manual_seed(key_seed(seed, epoch, stream))
            order = torch.randperm(len(negatives), generator=g)
            for i in range(0, len(negatives), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                groups = positives(idx, torch.Generator().manual_seed(key_seed(seed, epoch, i, stream, 18)))
                pos = extractor(torch.cat([images for images, _ in groups]))
                target = torch.cat([deltas for _, deltas in groups])
                neg = extractor(torch.cat(negatives[idx].split(channels, 1)))
                loss = F.mse_loss(pos, target) + F.mse_loss(neg, blank.expand_as(neg))
                parts = pos.split([len(images) for images, _ in groups])
                loss = loss + cfg.w_consistency * sum(consistency(part, cfg) for part in parts) / len(parts)
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
