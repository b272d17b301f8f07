"""Deep output watermarking of image-to-image networks (Zhang et al., TPAMI 2021 / AAAI 2020).

An embedding network H hides one watermark image in every output of the target model; an extractor
R recovers the watermark from marked outputs, and from the outputs of a surrogate model trained on
them, while it maps unmarked images (inputs, clean outputs) to a blank image. Stage 1 trains H, R
(and a PatchGAN discriminator) jointly; stage 2 fine-tunes R on the outputs of a surrogate the owner
trains on its own (input, marked output) pairs. The barrier form keeps H at the target's output;
the absorbed form (TPAMI) trains the target itself to emit the marked outputs, so no H runs at all.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.core import Evidence, Key
from ownmark.errors import (
    ConfigError,
    KeyMismatchError,
    ShapeError,
    require_choice,
    require_in_range,
    require_non_negative,
    require_positive,
)
from ownmark.models.image2image import BarrierModel, PatchDiscriminator, build_i2i
from ownmark.models.store import ModelSpec
from ownmark.train import Engine, key_seed
from ownmark.train.image2image import I2ITrainConfig, discriminator_loss, fit_i2i, predict, seeded
from ownmark.verify.metrics import bits_image, centred_nc, decode_bits, nc, success_rate
from ownmark.verify.tests import binomial_pvalue, upper_bound
from ownmark.watermarks.base import WATERMARKS, Preset, config_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeepWMConfig:
    """Settings of deep output watermarking; the defaults finish in a few CPU minutes at 32x32.

    Args:
        form: ``barrier`` (H after the target) or ``absorbed`` (the target learns the marked outputs).
        watermark: ``bits`` (a k x k block pattern of ``n_bits`` random bits: bit accuracy and a
            binomial p-value) or ``logo`` (scikit-image's logo, as the paper hides a logo).
        w_fidelity: weight of ||b' - b||^2; the watermark's strength falls as it grows.
        w_ssim: weight of 1 - SSIM(b', b) (the offline stand-in for the paper's perceptual loss).
        w_adv: weight of the PatchGAN term (paper 0.01; 0 trains no discriminator).
        distort: noise std of the distorted copies of b' that R must also decode in stage 1, a stand-in
            for surrogates' imprecision (0 turns it off, as in the paper).
        surrogate_epochs: epochs of the owner's surrogate for stage 2 (0 skips stage 2).
        nc_threshold: success means centred NC above this (paper: NC > 0.95).
        n_probe: owner inputs held out of training and kept in the key to query suspects with.
    """

    form: str = "barrier"
    watermark: str = "bits"
    n_bits: int = 64
    embedder: str = "unet"
    extractor: str = "unet"
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
    w_fidelity: float = 30.0
    w_ssim: float = 0.0
    w_extract: float = 1.0
    w_clean: float = 1.0
    w_consistency: float = 1.0
    w_adv: float = 0.01
    distort: float = 0.0
    surrogate_arch: str = "unet"
    surrogate_loss: str = "l2"
    surrogate_epochs: int = 12
    finetune_epochs: int = 6
    finetune_lr: float = 1e-4
    absorb_epochs: int = 10
    nc_threshold: float = 0.95
    n_probe: int = 64

    def __post_init__(self) -> None:
        require_choice(self, "form", ("barrier", "absorbed"))
        require_choice(self, "watermark", ("bits", "logo"))
        require_positive(self, "n_bits", "epochs", "batch_size", "lr", "finetune_lr", "n_probe")
        require_non_negative(self, "w_fidelity", "w_ssim", "w_extract", "w_clean", "w_consistency", "w_adv")
        require_non_negative(self, "distort", "surrogate_epochs", "finetune_epochs", "absorb_epochs")
        require_in_range(self, "nc_threshold", -1, 1)
        require_choice(self, "surrogate_loss", ("l1", "l2", "l2+gan", "ssim+gan"))
        for name in ("epochs", "batch_size", "n_probe", "n_bits", "surrogate_epochs", "finetune_epochs"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"DeepWMConfig.{name} must be an int, got {getattr(self, name)!r}")
        if math.isqrt(self.n_bits) ** 2 != self.n_bits:
            raise ConfigError(f"DeepWMConfig.n_bits must be a square (k x k blocks), got {self.n_bits}")


DEEPWM_PRESETS = {
    "paper": Preset(
        replace(
            DeepWMConfig(),
            lr=2e-4,
            w_fidelity=1.0,
            w_ssim=1.0,
            w_adv=0.01,
            distort=0.0,
            epochs=100,
            surrogate_epochs=100,
            finetune_epochs=50,
            absorb_epochs=100,
            batch_size=16,
            n_probe=200,
        ),
        source="Zhang et al. TPAMI 2021, Sec. 4 (weights 1:1:1:1, adversarial 0.01, Adam 2e-4, batch 16; "
        "R fine-tuned at 1e-4); epochs sized for a GPU",
    ),  # fmt: skip
    "absorbed": Preset(replace(DeepWMConfig(), form="absorbed"), source="TPAMI 2021 absorbed form, CPU sizes"),
}


@WATERMARKS.register("deepwm")
class DeepWM:
    """Deep output watermarking: every output carries one watermark image an extractor recovers.

    H maps cat(clean output b, watermark delta) to a residual, b' = clamp(b + H(b, delta)); R maps b'
    to delta and inputs a and clean outputs b to a blank (white) image. Losses (Eq. 1-5): fidelity
    ||b' - b||^2 (+ SSIM, + adversarial), extraction ||R(b') - delta||^2, clean ||R(a) - blank||^2 +
    ||R(b) - blank||^2, consistency of R's outputs across images. Stage 2 fine-tunes R on outputs of a
    surrogate the owner trains on its own marked pairs. ``detect`` queries a suspect with the key's
    probe inputs and reports centred NC, success rate and, for a bit-string watermark, the bits
    decoded from the mean extraction with an exact binomial test; it always reports the negative
    controls (probe inputs and their clean outputs) beside them.

    Reference:
        Zhang, Chen, Liao, Zhang, Feng, Hua, Yu, "Deep Model Intellectual Property Protection via Deep
        Watermarking", IEEE TPAMI 2021, arXiv:2103.04980; AAAI 2020 ("Model Watermarking for Image
        Processing Networks", arXiv:2002.11088).

    Example:
        >>> from ownmark.models import ModelSpec
        >>> from ownmark.data.image2image import make_pairs
        >>> target = ModelSpec("conv3", 3, 3, 16, family="image2image").build()
        >>> data = make_pairs("deblur", torch.rand(40, 3, 16, 16), torch.arange(40))
        >>> toy = DeepWMConfig(n_bits=16, embedder="conv3", extractor="conv3", epochs=1, surrogate_epochs=0,
        ...                    n_probe=8, w_adv=0)
        >>> marked, key = DeepWM(toy).embed(target, data, seed=0)
        >>> DeepWM().detect(marked, key).n
        16
    """

    family = "image2image"
    config_class = DeepWMConfig
    presets = DEEPWM_PRESETS

    def __init__(self, config: DeepWMConfig = DeepWMConfig()) -> None:
        if not isinstance(config, DeepWMConfig):
            raise TypeError(f"DeepWM needs a DeepWMConfig, got {type(config).__name__}")
        self.config = config

    def embed(self, model: nn.Module, data: Any, *, seed: int, engine: Engine = Engine()) -> tuple[nn.Module, Key]:
        """Train H and R on the owner's inputs (``data.x`` or a tensor (N, C, H, W)); return the marked
        model (barrier or absorbed form) and the key (R's weights, watermark, blank, probe inputs)."""
        cfg = self.config
        inputs = data.x if hasattr(data, "x") else data
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
            raise ShapeError(f"deepwm embeds with input images (N, C, H, W), got {getattr(inputs, 'shape', inputs)}")
        if len(inputs) <= cfg.n_probe + cfg.batch_size:
            raise ConfigError(f"deepwm needs more than n_probe + batch_size = {cfg.n_probe + cfg.batch_size} inputs")
        target = copy.deepcopy(model).eval()
        train_a, probe_a = inputs[: -cfg.n_probe], inputs[-cfg.n_probe :]
        train_b = _outputs(target, train_a)
        channels, size = train_b.shape[1], train_b.shape[-1]
        watermark, bits = make_watermark(cfg, channels, size, seed)
        blank = torch.ones_like(watermark)
        embedder = seeded(lambda: build_i2i(cfg.embedder, 2 * channels, channels, size, residual=False), seed, 1)
        _zero_last(embedder)  # H starts as the identity barrier: b' = b
        barrier = BarrierModel(target, embedder, watermark)
        extractor = seeded(lambda: build_i2i(cfg.extractor, channels, channels, size, residual=False), seed, 2)
        joint_training(barrier, extractor, train_a, train_b, cfg, seed=seed)
        marked: nn.Module = barrier
        if cfg.form == "absorbed":
            marked = absorb(barrier, extractor, train_a, cfg, seed=seed)
        if cfg.surrogate_epochs > 0 and cfg.finetune_epochs > 0:
            finetune_extractor(marked, target, extractor, train_a, watermark, blank, cfg, seed=seed)
        spec = getattr(model, "spec", None)
        if isinstance(spec, ModelSpec):
            marked.spec = spec if cfg.form == "absorbed" else replace(spec, arch=f"barrier:{spec.arch}+{cfg.embedder}")
        probe_clean = _outputs(target, probe_a)
        tensors = {f"R.{k}": v.detach().clone() for k, v in extractor.state_dict().items()}
        tensors |= {"watermark": watermark, "blank": blank, "probe_x": probe_a.clone(), "probe_clean": probe_clean}
        if bits is not None:
            tensors["bits"] = bits
        meta = {"extractor": cfg.extractor, "channels": channels, "image_size": size}
        meta["in_shape"] = list(inputs.shape[1:])
        key = Key("deepwm", config_dict(cfg), tensors, meta)
        controls = self._controls(key, extractor)
        k_null = sum(round(c["success"] * c["n"]) for c in controls.values())
        n_null = sum(c["n"] for c in controls.values())
        key.meta["null_rate"] = upper_bound(k_null, n_null, 0.99)  # 99% bound on negatives' success
        return marked.eval(), key

    def detect(self, suspect: Any, key: Key, *, p0: float | None = None) -> Evidence:
        """Query ``suspect`` (a module or a batch function) with the key's probe inputs; measure R's output."""
        extractor, watermark = self._check(key)
        probe_x = key.tensors["probe_x"]
        outputs = predict(suspect, probe_x)
        if outputs.shape[1:] != watermark.shape:
            raise KeyMismatchError(
                f"the suspect answers {tuple(outputs.shape[1:])} images but the key's watermark is "
                f"{tuple(watermark.shape)}; load the key made for this model"
            )
        m = measure(extractor, outputs, key)
        details = {**m, "controls": self._controls(key, extractor), "threshold": key.config["nc_threshold"]}
        n = len(probe_x)
        if "bits" in key.tensors:
            nb = key.tensors["bits"].numel()
            return Evidence(
                "deepwm", k=m["bit_matches"], n=nb, p0=0.5, queries=n, details=details,
                test="exact one-sided binomial on the decoded bits", p_value=m["bit_p_value"],
                statistic=float(m["bit_matches"]),
                null_hypothesis=f"the suspect's outputs are independent of the owner's {nb} secret bits, so each "
                "bit decoded from R's mean extraction matches with probability 1/2",
            )  # fmt: skip
        k = round(m["success"] * n)
        p0 = p0 if p0 is not None else max(float(key.meta["null_rate"]), 1e-3)
        return Evidence(
            "deepwm", k=k, n=n, p0=p0, queries=n, details=details,
            null_hypothesis=f"each of the suspect's {n} outputs passes centred NC > "
            f"{key.config['nc_threshold']} with at most the rate {p0:.3g} measured on negative controls",
        )  # fmt: skip

    def extract(self, suspect: Any, key: Key) -> torch.Tensor:
        """R's output on the suspect's answers to the key's probe inputs (N, C, H, W)."""
        extractor, _ = self._check(key)
        return predict(extractor, predict(suspect, key.tensors["probe_x"]))

    def _check(self, key: Key) -> tuple[nn.Module, torch.Tensor]:
        if key.scheme != "deepwm":
            raise KeyMismatchError(f"this key was made by {key.scheme!r}, not deepwm; verify with its scheme")
        return load_extractor(key), key.tensors["watermark"]

    def _controls(self, key: Key, extractor: nn.Module) -> dict[str, dict[str, Any]]:
        return {
            "inputs": measure(extractor, key.tensors["probe_x"], key),
            "clean_outputs": measure(extractor, key.tensors["probe_clean"], key),
        }


def load_extractor(key: Key) -> nn.Module:
    """R, rebuilt from the key's tensors (``R.*``) and meta."""
    meta = key.meta
    extractor = build_i2i(meta["extractor"], meta["channels"], meta["channels"], meta["image_size"], residual=False)
    state = {k.removeprefix("R."): v for k, v in key.tensors.items() if k.startswith("R.")}
    try:
        extractor.load_state_dict(state)
    except RuntimeError as err:
        raise KeyMismatchError(f"the key's extractor weights do not fit {meta['extractor']!r} ({err})") from None
    return extractor.eval()


def measure(extractor: nn.Module, images: torch.Tensor, key: Key) -> dict[str, Any]:
    """R's output on ``images``: centred and raw NC with the watermark, success rate and bits."""
    watermark = key.tensors["watermark"]
    ext = predict(extractor, images)
    cnc, raw = centred_nc(ext, watermark), nc(ext, watermark)
    out: dict[str, Any] = {
        "n": len(images),
        "centred_nc": float(cnc.mean()),
        "raw_nc": float(raw.mean()),
        "success": success_rate(cnc, key.config["nc_threshold"]),
        "raw_success": success_rate(raw, key.config["nc_threshold"]),
    }
    if "bits" in key.tensors:
        bits = key.tensors["bits"]
        decoded = decode_bits(ext.mean(0), bits.numel())
        matches = int((decoded == bits).sum())
        per_image = (decode_bits(ext, bits.numel()) == bits).float().mean(1)
        out |= {
            "bit_matches": matches,
            "bit_accuracy": matches / bits.numel(),
            "bit_accuracy_per_image": float(per_image.mean()),
            "bit_p_value": binomial_pvalue(matches, bits.numel(), 0.5),
        }
    return out


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
    marked_b = _outputs(barrier, a)
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
    marked_b, clean_b = _outputs(marked, a), _outputs(target, a)
    channels, size = marked_b.shape[1], marked_b.shape[-1]
    surrogate = seeded(lambda: build_i2i(cfg.surrogate_arch, a.shape[1], channels, size), seed, 8)
    config = I2ITrainConfig(epochs=cfg.surrogate_epochs, batch_size=cfg.batch_size, loss=cfg.surrogate_loss)
    fit_i2i(surrogate, a, marked_b, config, seed=key_seed(seed, 9))
    surrogate_b = _outputs(surrogate, a)
    opt = torch.optim.Adam(extractor.parameters(), lr=cfg.finetune_lr, betas=(0.5, 0.999))
    extractor.train()
    for epoch in range(cfg.finetune_epochs):
        order = torch.randperm(len(a), generator=torch.Generator().manual_seed(key_seed(seed, epoch, 10)))
        for i in range(0, len(a), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            pos = extractor(torch.cat([surrogate_b[idx], marked_b[idx]]))
            neg = extractor(torch.cat([a[idx], clean_b[idx]]))
            loss = F.mse_loss(pos, watermark.expand_as(pos)) + F.mse_loss(neg, blank.expand_as(neg))
            loss = loss + cfg.w_consistency * F.mse_loss(pos, pos.mean(0, keepdim=True).expand_as(pos))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    extractor.eval()


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = predict(model, x)
    if out.ndim != 4 or out.shape[-2:] != x.shape[-2:]:
        raise ShapeError(
            f"deepwm marks image-to-image models, but this model maps {tuple(x.shape[1:])} inputs to "
            f"{tuple(out.shape[1:])}; use a classifier scheme for classifiers"
        )
    return out


def _zero_last(net: nn.Module) -> None:
    last = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(0.01)
        if last.bias is not None:
            last.bias.zero_()
