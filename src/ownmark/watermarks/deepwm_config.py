"""Settings of deep output watermarking (:mod:`ownmark.watermarks.deepwm`) and its named presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ownmark.errors import (
    ConfigError,
    require_choice,
    require_in_range,
    require_non_negative,
    require_positive,
)
from ownmark.watermarks.base import Preset


@dataclass(frozen=True)
class DeepWMConfig:
    """Settings of deep output watermarking; the defaults finish in a few CPU minutes at 32x32.

    Args:
        form: ``barrier`` (H after the target) or ``absorbed`` (the target learns the marked outputs).
        watermark: ``bits`` (a k x k block pattern of ``n_bits`` secret bits, half of them ones: an exact
            test over the secret decides) or ``logo`` (scikit-image's logo, as the paper hides a logo; it is
            public, so its verdict rests on a rank among the key's few null models and cannot reach 0.01).
        embedder: H's architecture; ``lite`` (three 3x3 convolutions of width 8) only adds a residual
            and keeps the barrier's latency near the target's.
        extractor_head: ``sigmoid`` bounds R's output to [0, 1], the range of watermark and blank.
        extractor_epochs: epochs of R alone after stage 1, H frozen (0 skips them): joint training
            leaves R behind the mark H settles on.
        w_fidelity: weight of ||b' - b||^2; the watermark's strength falls as it grows.
        w_ssim: weight of 1 - SSIM(b', b) (the offline stand-in for the paper's perceptual loss).
        w_adv: weight of the PatchGAN term (paper 0.01; 0 trains no discriminator).
        distort: noise std of the distorted copies of b' that R must also decode in stage 1, a stand-in
            for surrogates' imprecision (0 turns it off, as in the paper).
        surrogate_epochs: epochs of the owner's surrogate for stage 2 (0 skips stage 2).
        nc_threshold: success means centred NC above this (paper: NC > 0.95).
        n_probe: owner inputs held out of training and kept in the key to query suspects with.
        screen_alpha: a key whose mark the extractor already reads from the owner's controls (probe
            inputs, clean outputs, a surrogate trained on clean pairs) at p <= this, or that a control
            passes the NC threshold on more than 5% of outputs, is refused at embedding.
    """

    form: str = "barrier"
    watermark: str = "bits"
    n_bits: int = 64
    embedder: str = "lite"
    extractor: str = "unet"
    extractor_head: str = "sigmoid"
    epochs: int = 12
    extractor_epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    w_fidelity: float = 50.0
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
    screen_alpha: float = 1e-3

    def __post_init__(self) -> None:
        require_choice(self, "form", ("barrier", "absorbed"))
        require_choice(self, "watermark", ("bits", "logo"))
        require_choice(self, "extractor_head", ("sigmoid", "linear"))
        require_positive(self, "n_bits", "epochs", "batch_size", "lr", "finetune_lr", "n_probe")
        require_non_negative(self, "w_fidelity", "w_ssim", "w_extract", "w_clean", "w_consistency", "w_adv")
        require_non_negative(
            self, "distort", "surrogate_epochs", "finetune_epochs", "absorb_epochs", "extractor_epochs"
        )
        require_in_range(self, "nc_threshold", -1, 1)
        require_in_range(self, "screen_alpha", 0, 1)
        require_choice(self, "surrogate_loss", ("l1", "l2", "l2+gan", "ssim+gan"))
        ints = ("epochs", "extractor_epochs", "batch_size", "n_probe", "n_bits", "surrogate_epochs", "finetune_epochs")
        for name in ints:
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"DeepWMConfig.{name} must be an int, got {getattr(self, name)!r}")
        if math.isqrt(self.n_bits) ** 2 != self.n_bits:
            raise ConfigError(f"DeepWMConfig.n_bits must be a square (k x k blocks), got {self.n_bits}")
        if self.n_bits % 2:
            raise ConfigError(f"DeepWMConfig.n_bits must be even (balanced keys: half ones), got {self.n_bits}")


DEEPWM_PRESETS = {
    "paper": Preset(
        replace(
            DeepWMConfig(),
            embedder="unet",  # the paper's H is a UNet; ownmark's CPU default `lite` is for latency
            extractor_head="linear",
            extractor_epochs=0,  # the paper trains R jointly only (then stage 2)
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
