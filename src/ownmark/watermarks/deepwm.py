"""Deep output watermarking of image-to-image networks (Zhang et al., TPAMI 2021 / AAAI 2020).

An embedding network H hides one watermark image in every output of the target model; an extractor
R recovers the watermark from marked outputs, and from the outputs of a surrogate model trained on
them, while it maps unmarked images (inputs, clean outputs) to a blank image. Stage 1 trains H, R
(and a PatchGAN discriminator) jointly; stage 2 fine-tunes R on the outputs of a surrogate the owner
trains on its own (input, marked output) pairs. The barrier form keeps H at the target's output;
the absorbed form (TPAMI) trains the target itself to emit the marked outputs, so no H runs at all.

This module holds the scheme (embed, detect) and the measurement of R's output; the settings live in
:mod:`ownmark.watermarks.deepwm_config`, the training stages in :mod:`ownmark.watermarks.deepwm_train`.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ownmark.core import Evidence, Key
from ownmark.errors import ConfigError, KeyMismatchError, ShapeError
from ownmark.models.image2image import BarrierModel, build_i2i
from ownmark.models.store import ModelSpec
from ownmark.train import Engine
from ownmark.train.image2image import predict, seeded
from ownmark.verify.metrics import centred_nc, decode_bits, nc, success_rate
from ownmark.verify.tests import binomial_pvalue, upper_bound
from ownmark.watermarks.base import WATERMARKS, config_dict
from ownmark.watermarks.deepwm_config import DEEPWM_PRESETS, DeepWMConfig
from ownmark.watermarks.deepwm_train import (
    absorb,
    build_extractor,
    fidelity_weight,
    finetune_extractor,
    fit_extractor,
    i2i_outputs,
    joint_training,
    make_watermark,
    zero_last,
)

__all__ = [
    "DEEPWM_PRESETS", "DeepWM", "DeepWMConfig", "absorb", "build_extractor", "fidelity_weight",
    "finetune_extractor", "fit_extractor", "joint_training", "load_extractor", "make_watermark", "measure",
]  # fmt: skip


@WATERMARKS.register("deepwm")
class DeepWM:
    """Deep output watermarking: every output carries one watermark image an extractor recovers.

    H maps cat(clean output b, watermark delta) to a residual, b' = clamp(b + H(b, delta)); R maps b'
    to delta and inputs a and clean outputs b to a blank (white) image. Losses (Eq. 1-5): fidelity
    ||b' - b||^2 (+ SSIM, + adversarial), extraction ||R(b') - delta||^2, clean ||R(a) - blank||^2 +
    ||R(b) - blank||^2, consistency of R's outputs across images. After stage 1, R alone trains on with
    H frozen (``extractor_epochs``), since joint training leaves R behind the mark H settles on; R ends
    in a sigmoid by default, so its output lies in [0, 1] like watermark and blank. Stage 2 fine-tunes R
    on outputs of a surrogate the owner trains on its own marked pairs. ``detect`` queries a suspect with the key's
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
        train_b = i2i_outputs(target, train_a)
        channels, size = train_b.shape[1], train_b.shape[-1]
        watermark, bits = make_watermark(cfg, channels, size, seed)
        blank = torch.ones_like(watermark)
        embedder = seeded(lambda: build_i2i(cfg.embedder, 2 * channels, channels, size, residual=False), seed, 1)
        zero_last(embedder)  # H starts as the identity barrier: b' = b
        barrier = BarrierModel(target, embedder, watermark)
        extractor = seeded(lambda: build_extractor(cfg.extractor, channels, size, cfg.extractor_head), seed, 2)
        joint_training(barrier, extractor, train_a, train_b, cfg, seed=seed)
        if cfg.extractor_epochs > 0:  # H frozen: R alone catches up with the mark H settled on
            with torch.no_grad():
                pos, neg = barrier.embed(train_b), torch.cat([train_a, train_b], 1)
            fit_extractor(
                extractor, pos, neg, watermark, blank, cfg, cfg.extractor_epochs, cfg.lr, seed=seed, stream=11
            )
        marked: nn.Module = barrier
        if cfg.form == "absorbed":
            marked = absorb(barrier, extractor, train_a, cfg, seed=seed)
        if cfg.surrogate_epochs > 0 and cfg.finetune_epochs > 0:
            finetune_extractor(marked, target, extractor, train_a, watermark, blank, cfg, seed=seed)
        spec = getattr(model, "spec", None)
        if isinstance(spec, ModelSpec):
            marked.spec = spec if cfg.form == "absorbed" else replace(spec, arch=f"barrier:{spec.arch}+{cfg.embedder}")
        probe_clean = i2i_outputs(target, probe_a)
        tensors = {f"R.{k}": v.detach().clone() for k, v in extractor.state_dict().items()}
        tensors |= {"watermark": watermark, "blank": blank, "probe_x": probe_a.clone(), "probe_clean": probe_clean}
        if bits is not None:
            tensors["bits"] = bits
        meta = {"extractor": cfg.extractor, "extractor_head": cfg.extractor_head, "channels": channels}
        meta["image_size"] = size
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
    head = meta.get("extractor_head", "linear")  # keys written before the sigmoid head had none
    extractor = build_extractor(meta["extractor"], meta["channels"], meta["image_size"], head)
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
