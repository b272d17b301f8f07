"""Adaptive attacks: what an adversary who knows the watermarking *method* (not the key) can do.

The threat model of each (the SoK's "adaptive attacker", Lukas et al. 2022, Sec. III): the thief holds
a copy of the marked model, has read the method's paper and its public settings, owns data of the
task, and never sees the owner's key, trigger images or training data.

- **trigger-detect** (trigger-set classifiers: FCW, content, noise, unrelated, PTYNet): the thief runs
  the method's *public* trigger procedure (``Scheme.draw_key``) on its own images with its own seeds,
  which gives trigger images of the kind the owner will query with (FCW: fusions of in-distribution
  images; content: a stamped patch; noise: added noise; unrelated: out-of-task images), trains a small
  detector (its own images against its own triggers), sets its threshold so that at most ``fpr`` of
  held-out clean images are flagged, and deploys the stolen model behind it: a flagged query is answered
  with the model's second choice (top-1 and top-2 scores swapped). Costs: the detector's epochs, the
  flagged clean images (accuracy lost), no query to the victim. A detector-based evasion of this kind is
  how Hitaj et al. and the SoK's input-detection attacks evade trigger-set verification.
- **enc-purify** (AWEncoder): AWEncoder's mark is an L-inf perturbation of a known budget ``eps``
  (0.15 on digits in ownmark, 8/255-16/255 in the paper on colour images). The thief puts an input
  purifier in front of the encoder that erases perturbations of that size: bit-depth reduction to the
  most levels whose step still exceeds ``2 * eps`` (so ``x + delta`` rounds back to ``x`` where ``x`` sits
  on a level), then a median filter. Nothing is trained; the cost is the probe accuracy the purifier
  takes from legitimate users.

PTYNet's own adaptive attacks (the injected branch removed, the target fine-tuned alone: ``strip``,
``ft-target``) live in :mod:`ownmark.attacks.ptynet_attacks`; its faint backgrounds meet 1-bit
squeezing (``squeeze``). For deep output watermarking the adaptive attacker trains its surrogate on
purified outputs (a chain: ``output-jpeg`` then ``surrogate``, in the ``image2image`` bench preset).

Written here: no maintained library offers a method-aware trigger detector or purifier around a
watermark scheme; the filters are :mod:`ownmark.attacks.preprocess`'s (kornia), the detector is trained
with ownmark's loop.

Reference:
    Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
    Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (adaptive attacks, input detection); Hitaj, Hitaj,
    Mancini, "Evasion Attacks Against Watermarking Techniques found in MLaaS Systems", SNAMS 2019
    (an ensemble / detector that refuses watermark queries); Xu, Evans, Qi, "Feature Squeezing:
    Detecting Adversarial Examples in Deep Neural Networks", NDSS 2018, arXiv:1704.01155 (bit depth
    and median filtering against small perturbations); Wen et al. 2023 (FCW) and Zhang et al. 2023
    (AWEncoder, arXiv:2307.04540) for the methods attacked.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.preprocess import BitDepth, Smooth
from ownmark.attacks.transforms import TransformedModel, require_odd_kernel
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, require_in_range, require_positive
from ownmark.train import Engine, TrainConfig, cpu_seeded, fit, key_seed

DETECT_STREAM = 0x54444554  # the thief's own key draws and its calibration split


@dataclass(frozen=True)
class TriggerDetectConfig:
    """The thief's detector of watermark queries.

    Attributes:
        scheme: the watermarking method the thief assumes (a registered trigger-set classifier scheme,
            at its default settings: the public ones).
        keys: own keys drawn with the method's procedure on the thief's images (positives).
        fpr: share of the thief's held-out clean images the detector may flag (accuracy it gives up).
        arch, epochs, lr, batch_size: the detector (a binary classifier) and its training.
    """

    scheme: str = "fcw"
    keys: int = 4
    fpr: float = 0.02
    arch: str = "cnn2"
    epochs: int = 5
    lr: float = 0.01  # at 0.05 the detector collapsed to "clean" in 3 of 4 seeds (FCW, mnist5k); 4 of 4 learnt at 0.01
    batch_size: int = 128

    def __post_init__(self) -> None:
        from ownmark.watermarks import WATERMARKS

        cls = WATERMARKS.get(self.scheme)
        if getattr(cls, "family", "classifier") not in TriggerDetect.families or not hasattr(cls, "draw_key"):
            raise ConfigError(
                f"TriggerDetectConfig.scheme must be a trigger-set classifier scheme (fcw, content, noise, unrelated, "
                f"ptynet), got {self.scheme!r}"
            )
        for name in ("keys", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TriggerDetectConfig.{name} must be a positive int, got {value!r}")
        require_positive(self, "lr")
        require_in_range(self, "fpr", 0.0, 1.0, low_open=True, high_open=True)


class DeflectedModel(nn.Module):
    """``model`` behind a detector: where ``detector`` scores an input above ``threshold``, the answer's
    top-1 and top-2 entries are swapped (labels, probabilities and logits stay consistent)."""

    def __init__(self, model: nn.Module, detector: nn.Module, threshold: float) -> None:
        super().__init__()
        self.model, self.detector, self.threshold = model, detector, float(threshold)
        if hasattr(model, "spec"):
            self.spec = model.spec

    def flagged(self, x: torch.Tensor) -> torch.Tensor:
        """Which inputs the detector flags as watermark queries."""
        return self.detector(x).softmax(1)[:, 1] > self.threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        hit = self.flagged(x)
        if not bool(hit.any()):
            return out
        top2 = out.topk(2, dim=1).indices
        rows = hit.nonzero().squeeze(1)
        first, second = top2[rows, 0], top2[rows, 1]
        swapped = out.clone()
        swapped[rows, first], swapped[rows, second] = out[rows, second], out[rows, first]
        return swapped


def own_triggers(
    scheme: str, model: nn.Module, data: ImageSet, keys: int, seed: int, *, per_key: bool = False
) -> torch.Tensor | list[torch.Tensor]:
    """Trigger images the method's public procedure makes from ``data`` with the thief's own seeds (its
    default settings; trigger counts halved until the thief's data holds enough images for them); one
    tensor, or one per key with ``per_key``."""
    import dataclasses

    from ownmark.watermarks import WATERMARKS

    cls = WATERMARKS.get(scheme)
    config = cls.config_class()
    found = []
    for k in range(keys):
        while True:
            try:
                key = cls(config).draw_key(model, data, seed=key_seed(seed, DETECT_STREAM) + k)
                break
            except ConfigError:
                counts = {f: getattr(config, f) for f in ("n_embed", "n_verify") if hasattr(config, f)}
                if not counts or max(counts.values()) <= 1:
                    raise
                config = dataclasses.replace(config, **{f: max(1, v // 2) for f, v in counts.items()})
        images = [key.tensors[name] for name in ("embed_x", "verify_x") if name in key.tensors]
        if not images:
            raise ConfigError(
                f"the {scheme} procedure drew no trigger images; trigger-detect needs a trigger-set scheme"
            )
        found.append(torch.cat(images).float())
    return found if per_key else torch.cat(found)


@ATTACKS.register("trigger-detect")
class TriggerDetect:
    """Deploy the stolen classifier behind a detector of the method's trigger queries (see the module).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> victim = ModelSpec("cnn2", 3, 4, 16).build()
        >>> wrapped, cost = TriggerDetect(TriggerDetectConfig(keys=1, epochs=1))(victim, toy_images(), seed=0)
        >>> wrapped(toy_images().x[:3]).shape, cost.queries
        (torch.Size([3, 4]), 0)
    """

    access = "white-box"  # the thief holds the model and deploys it
    group = "adaptive"
    query_time = True  # the result is the victim behind a trained detector, not one set of weights
    families = ("classifier",)
    config_class = TriggerDetectConfig
    presets: dict = {}

    def __init__(self, config: TriggerDetectConfig | None = None) -> None:
        self.config = config or TriggerDetectConfig()

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        from ownmark.models import ModelSpec

        cfg, cost = self.config, Cost()
        with timed(cost):
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(key_seed(seed, DETECT_STREAM)))
            cut = max(1, len(data) // 5)
            held, own = data.read(order[:cut]), data.subset(order[cut:])
            drawn = own_triggers(cfg.scheme, model, own, cfg.keys + 1, seed, per_key=True)
            positives, unseen = torch.cat(drawn[:-1]), drawn[-1]  # the last own key only measures the detector
            # as many clean images as triggers (repeated triggers where the thief has more clean images)
            reps = max(1, len(own) // max(1, len(positives)))
            x = torch.cat([own.x, positives.repeat(reps, 1, 1, 1)])
            y = torch.cat(
                [torch.zeros(len(own), dtype=torch.long), torch.ones(len(positives) * reps, dtype=torch.long)]
            )
            with cpu_seeded(key_seed(seed, DETECT_STREAM) + 1):
                detector = ModelSpec(cfg.arch, data.shape[0], 2, data.shape[1]).build()
            train = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
            fit(detector, ImageSet("detector", x, y, 2), train, seed=seed, engine=engine)
            detector.eval()
            with torch.no_grad():
                clean_scores = detector(held).softmax(1)[:, 1]
                threshold = float(torch.quantile(clean_scores, 1.0 - cfg.fpr))
                caught = float((detector(unseen).softmax(1)[:, 1] > threshold).float().mean())
            wrapped = DeflectedModel(copy.deepcopy(model), detector, threshold).eval()
        cost.epochs = float(cfg.epochs)
        cost.details.update({
            "scheme": cfg.scheme, "own_triggers": len(positives), "threshold": threshold,
            "flagged_clean": float((clean_scores > threshold).float().mean()), "caught_unseen_triggers": caught,
        })  # fmt: skip
        return wrapped, cost


@dataclass(frozen=True)
class EncoderPurifyConfig:
    """The perturbation budget the thief assumes (``eps``, L-inf on [0, 1] pixels: AWEncoder's default
    for digits) and the median filter after requantisation (``kernel_size`` 1: none)."""

    eps: float = 0.15
    kernel_size: int = 3

    def __post_init__(self) -> None:
        require_in_range(self, "eps", 0.0, 0.5, low_open=True, high_open=True)
        if self.kernel_size != 1:
            require_odd_kernel(self)

    @property
    def bits(self) -> int:
        """The most bits whose quantisation step (``1 / (2**bits - 1)``) still exceeds ``2 * eps``."""
        bits = 1
        while 1.0 / (2 ** (bits + 1) - 1) > 2 * self.eps:
            bits += 1
        return bits


@ATTACKS.register("enc-purify")
class EncoderPurify:
    """An encoder behind an input purifier sized to AWEncoder's perturbation budget (see the module).

    Example:
        >>> EncoderPurifyConfig(eps=0.15).bits, EncoderPurifyConfig(eps=4 / 255).bits
        (2, 5)
    """

    access = "black-box"  # the thief only controls what reaches the encoder
    group = "adaptive"
    input_transform = True  # applied at verification time (`ownmark verify --transform enc-purify`)
    families = ("encoder",)
    config_class = EncoderPurifyConfig
    presets: dict = {}

    def __init__(self, config: EncoderPurifyConfig | None = None) -> None:
        self.config = config or EncoderPurifyConfig()

    def __call__(
        self, model: nn.Module, data: ImageSet | None, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cfg, cost = self.config, Cost()
        with timed(cost):
            stages: list[nn.Module] = [BitDepth(cfg.bits)]
            if cfg.kernel_size > 1:
                stages.append(Smooth("median", cfg.kernel_size))
            wrapped = TransformedModel(copy.deepcopy(model), nn.Sequential(*stages)).eval()
        cost.details.update({"bits": cfg.bits, "kernel_size": cfg.kernel_size})
        return wrapped, cost
