"""PTYNet: a frozen model protected by a proprietary classifier injected at its output."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass

import kornia
import torch
from torch import nn

from ownmark.core import Evidence, Key
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, KeyMismatchError, ShapeError, require_choice, require_in_range, require_positive
from ownmark.models import ModelSpec
from ownmark.models.injected import InjectedModel, load_target  # noqa: F401  (load_target: bring your own model)
from ownmark.train import Engine, TrainConfig, fit, key_seed, predict_logits
from ownmark.watermarks.base import WATERMARKS, Preset, config_dict
from ownmark.watermarks.triggers import trigger_evidence

log = logging.getLogger(__name__)

_INIT, _SAMPLES, _AUGMENT = 0x50494E49, 0x5053414D, 0x50415547  # streams of key_seed(seed, ...)
_CODE = "Wang et al. 2023, public code: Adam lr 1e-3, 50 epochs, random flip and +-15 degree rotation"


@dataclass(frozen=True)
class PTYNetConfig:
    """Settings of PTYNet; the defaults are ownmark's CPU setting (fixed background) for mnist5k.

    Args:
        strategy: ``fixed`` (one secret background), ``multi`` (``n_backgrounds`` of them) or
            ``generated`` (a fresh background per sample from a seeded generator).
        alpha: injection strength: ``score_t = p_t + alpha * q_w`` (paper: 1.5, 1.0, 2.0).
        n_wm: watermark classes of the proprietary net (plus one clean class); backgrounds are
            dealt to them in turn (``multi``), or each has its own generator (``generated``).
        target: the label every watermark class answers with; -1 gives each class the label the
            target model believes least in (mean softmax) on probe images with that class's
            backgrounds (distinct labels while there are enough), so an unmarked model rarely
            matches. Source images never carry a watermark label.
        intensity: peak value of the secret background, in (0, 1]. ownmark's choice, measured
            on mnist5k with 9 independent cnn2/lenet models: at 1.0 the samples are so far from
            digits that unmarked models guess, and one matched 13 of 100 held-out samples
            (p0 = 0.1); at 0.5 digits stay legible, unmarked models read them (never the
            watermark label) and matched at most 8, while the injected model still answers 100%.
        mask: where the background is. ``threshold``: pixels darker than ``threshold`` in every
            channel (digits: the black surround of the stroke); ``border``: a frame of
            ``border`` x the image side (photo patches); ``auto``: threshold for grey images,
            border for colour ones.
        n_embed, n_verify: verification samples that train the proprietary net, and held-out
            ones made from other source images, never used in training.
        n_probe: owner images used to pick the target labels when ``target`` is -1.
        arch: the proprietary net's architecture (any :func:`ownmark.models.build_classifier` name).
        flip, degrees: augmentation while training it: random horizontal flips, rotation by up
            to ``degrees`` either way.
    """

    strategy: str = "fixed"
    alpha: float = 1.5
    n_backgrounds: int = 1
    n_wm: int = 1
    target: int = -1
    intensity: float = 0.5
    mask: str = "auto"
    threshold: float = 0.1
    border: float = 0.125
    n_embed: int = 500
    n_verify: int = 100
    n_probe: int = 200
    arch: str = "cnn2"
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    flip: bool = True
    degrees: float = 15.0

    def __post_init__(self) -> None:
        require_choice(self, "strategy", ("fixed", "multi", "generated"))
        require_choice(self, "mask", ("auto", "threshold", "border"))
        for field in ("n_backgrounds", "n_wm", "n_embed", "n_verify", "n_probe", "epochs", "batch_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"PTYNetConfig.{field} must be a positive int, got {value!r}")
        require_positive(self, "alpha", "lr")
        require_in_range(self, "intensity", 0.0, 1.0, low_open=True)
        require_in_range(self, "threshold", 0.0, 1.0, low_open=True, high_open=True)
        require_in_range(self, "border", 0.0, 0.5, low_open=True, high_open=True)
        require_in_range(self, "degrees", 0.0, 180.0)
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < -1:
            raise ConfigError(f"PTYNetConfig.target must be a class index >= 0, or -1 to pick it, got {self.target!r}")
        if not isinstance(self.arch, str) or not self.arch:
            raise ConfigError(f"PTYNetConfig.arch must be an architecture name such as 'cnn2', got {self.arch!r}")
        if self.strategy == "fixed" and (self.n_backgrounds, self.n_wm) != (1, 1):
            raise ConfigError(
                f"PTYNetConfig with strategy 'fixed' has one background and one watermark class; got n_backgrounds "
                f"{self.n_backgrounds} and n_wm {self.n_wm}: use strategy 'multi' for more"
            )
        if self.strategy == "multi" and (self.n_backgrounds < 2 or self.n_wm > self.n_backgrounds):
            raise ConfigError(
                f"PTYNetConfig.n_backgrounds must be >= 2 for strategy 'multi' and >= n_wm, got "
                f"n_backgrounds {self.n_backgrounds} and n_wm {self.n_wm}"
            )

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer="adam", weight_decay=0.0
        )


def background_mask(x: torch.Tensor, mode: str, threshold: float = 0.1, border: float = 0.125) -> torch.Tensor:
    """Where the background of images ``x`` (N, C, H, W) is: a bool mask (N, 1, H, W).

    ``threshold``: pixels below ``threshold`` in every channel; ``border``: a frame
    ``max(1, round(border * min(H, W)))`` pixels wide; ``auto``: threshold if C is 1, else border.

    Example:
        >>> background_mask(torch.zeros(1, 3, 8, 8), "border")[0, 0, :, 0].all().item()
        True
    """
    n, c, h, w = x.shape
    if mode == "auto":
        mode = "threshold" if c == 1 else "border"
    if mode == "threshold":
        return x.amax(1, keepdim=True) < threshold
    side = max(1, round(border * min(h, w)))
    frame = torch.ones(1, 1, h, w, dtype=torch.bool)
    frame[..., side : h - side, side : w - side] = False
    return frame.expand(n, 1, h, w)


def secret_backgrounds(n: int, shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """``n`` seeded block patterns (n, C, H, W) in [0, 1]: uniform noise on a grid of about 4x4-pixel cells.

    Example:
        >>> secret_backgrounds(2, (1, 28, 28), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 28, 28])
    """
    c, h, w = shape
    coarse = torch.rand(n, c, max(2, h // 4), max(2, w // 4), generator=generator)
    return nn.functional.interpolate(coarse, size=(h, w), mode="nearest")


def wave_frequencies(n_wm: int, generator: torch.Generator, waves: int = 3) -> torch.Tensor:
    """The secret of a generator per watermark class: ``waves`` plane-wave frequencies (n_wm, waves, 2),
    cycles per image along x in [-4, 4] and along y in [0, 4], never both 0."""
    fx = torch.randint(-4, 5, (n_wm, waves), generator=generator)
    fy = torch.randint(0, 5, (n_wm, waves), generator=generator)
    fy = torch.where((fx == 0) & (fy == 0), torch.ones_like(fy), fy)
    return torch.stack([fx, fy], dim=-1)


def generated_backgrounds(
    frequencies: torch.Tensor, n: int, shape: tuple[int, int, int], generator: torch.Generator
) -> torch.Tensor:
    """``n`` backgrounds (n, C, H, W) from one class's generator: a sum of its plane waves
    (``frequencies`` (waves, 2)) with random phase per channel and amplitude in [0.5, 1],
    stretched to [0, 1] per image. Every draw differs; all share the secret frequencies.

    Example:
        >>> f = wave_frequencies(1, torch.Generator().manual_seed(0))[0]
        >>> generated_backgrounds(f, 2, (3, 16, 16), torch.Generator().manual_seed(1)).shape
        torch.Size([2, 3, 16, 16])
    """
    c, h, w = shape
    u, v = torch.arange(w) / w, torch.arange(h) / h
    f = frequencies.float()
    angle = 2 * math.pi * (f[:, 0, None, None] * u[None, None, :] + f[:, 1, None, None] * v[None, :, None])
    phase = 2 * math.pi * torch.rand(n, c, len(f), generator=generator)
    amp = 0.5 + 0.5 * torch.rand(n, 1, len(f), generator=generator)
    # sin(angle + phase) = sin(angle) cos(phase) + cos(angle) sin(phase), summed over the waves
    bg = torch.einsum("ncj,jhw->nchw", amp * phase.cos(), angle.sin()) + torch.einsum(
        "ncj,jhw->nchw", amp * phase.sin(), angle.cos()
    )
    low, high = bg.amin((1, 2, 3), keepdim=True), bg.amax((1, 2, 3), keepdim=True)
    return (bg - low) / (high - low).clamp_min(1e-6)


def augment_hook(seed: int, flip: bool, degrees: float):
    """A ``fit`` batch hook: random horizontal flips and rotations by up to ``degrees``, keyed by step."""

    def hook(x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(key_seed(seed, step, _AUGMENT))
        flips, angles = torch.rand(len(x), generator=gen) < 0.5, (2 * torch.rand(len(x), generator=gen) - 1) * degrees
        if flip:
            x = torch.where(flips[:, None, None, None], x.flip(-1), x)
        if degrees > 0:
            x = kornia.geometry.transform.rotate(x, angles)
        return x, y

    return hook


@WATERMARKS.register("ptynet")
class PTYNet:
    """PTYNet: a proprietary classifier, injected beside a frozen target, answers secret samples.

    The target model is never trained or changed. Verification samples are benign images whose
    background is replaced by a secret one: one fixed background, several, or a fresh one per
    sample from a seeded generator (here plane waves with secret frequencies and random phases,
    ownmark's stand-in for the paper's generative model). On digit images the background is the
    pixels below a small intensity threshold; on colour photo patches it is a border frame.
    A small proprietary net (``n_wm`` watermark classes + 1 clean class) learns to tell them from
    clean images and is injected at the output: ``scores = softmax(target(x)) + alpha *
    softmax(ptynet(x))[:, :n_wm] @ mix`` (:class:`~ownmark.models.injected.InjectedModel`).
    Verification counts held-out samples answered with their class's target label. Fidelity is
    bounded by the proprietary net's false positives on clean images (:func:`false_positive_rate`).
    Source images never carry a watermark label and the background is drawn at half intensity
    (``intensity``), so an unmarked model reads the digit and rarely answers a watermark label.

    Reference:
        Wang, Ren, et al., "Free Fine-tuning: A Plug-and-Play Watermarking Scheme for Deep Neural
        Networks", ACM MM 2023, arXiv:2210.07809.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> cfg = PTYNetConfig(n_embed=8, n_verify=4, n_probe=8, epochs=1, batch_size=16)
        >>> marked, key = PTYNet(cfg).embed(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> PTYNet().detect(marked, key).n, type(marked).__name__
        (4, 'InjectedModel')
    """

    family = "classifier"
    config_class = PTYNetConfig
    presets = {
        "fixed": Preset(PTYNetConfig(), "Wang et al. 2023: one fixed secret background, alpha 1.5 (CPU training)"),
        "multi": Preset(PTYNetConfig(strategy="multi", alpha=1.0, n_backgrounds=4),
                        "Wang et al. 2023: several backgrounds, one watermark class as in the code, alpha 1.0 (CPU)"),
        "generated": Preset(PTYNetConfig(strategy="generated", alpha=2.0),
                            "Wang et al. 2023: backgrounds from a seeded generator, alpha 2.0 (CPU training)"),
        "paper": Preset(PTYNetConfig(epochs=50), f"fixed background, alpha 1.5; {_CODE}, batch 64"),
        "paper-multi": Preset(PTYNetConfig(strategy="multi", alpha=1.0, n_backgrounds=4, epochs=50, batch_size=32),
                              f"four backgrounds, alpha 1.0; {_CODE}, batch 32"),
        "paper-generated": Preset(PTYNetConfig(strategy="generated", alpha=2.0, epochs=50, batch_size=32),
                                  f"generated backgrounds, alpha 2.0; {_CODE}, batch 32"),
    }  # fmt: skip

    def __init__(self, config: PTYNetConfig = PTYNetConfig()) -> None:
        self.config = config

    def make_samples(self, target: nn.Module, data: ImageSet, *, seed: int) -> dict[str, torch.Tensor]:
        """Embedding and held-out verification samples from ``data`` (the owner's), with their
        watermark classes, target labels and the secret backgrounds (or generator frequencies)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(key_seed(seed, _SAMPLES))
        if cfg.strategy == "generated":
            secret = {"frequencies": wave_frequencies(cfg.n_wm, gen)}
        else:
            secret = {"backgrounds": secret_backgrounds(cfg.n_backgrounds, data.shape, gen)}

        def draw(classes: torch.Tensor) -> torch.Tensor:  # one background per sample of watermark class w
            if cfg.strategy == "generated":
                out = torch.empty(len(classes), *data.shape)
                for w in range(cfg.n_wm):
                    picked = classes == w
                    out[picked] = generated_backgrounds(secret["frequencies"][w], int(picked.sum()), data.shape, gen)
                return out
            # background b belongs to watermark class b % n_wm: class w owns w, w + n_wm, w + 2 n_wm, ...
            owned = torch.tensor([len(range(w, cfg.n_backgrounds, cfg.n_wm)) for w in range(cfg.n_wm)])
            pick = torch.randint(0, 1 << 30, (len(classes),), generator=gen) % owned[classes]
            return secret["backgrounds"][classes + pick * cfg.n_wm]

        def compose(x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
            mask = background_mask(x, cfg.mask, cfg.threshold, cfg.border)
            return torch.where(mask, cfg.intensity * draw(classes), x)

        targets = self._pick_targets(target, data, compose, gen)
        candidates = torch.nonzero(~torch.isin(data.y, targets)).flatten()
        need = cfg.n_embed + cfg.n_verify
        if len(candidates) < need:
            raise ConfigError(
                f"PTYNet needs {need} source images (n_embed + n_verify) not labelled {targets.tolist()} but "
                f"{data.name} has {len(candidates)}; lower n_embed or n_verify"
            )
        index = candidates[torch.randperm(len(candidates), generator=gen)[:need]]
        classes = torch.arange(need) % cfg.n_wm
        x = compose(data.x[index], classes)
        n = cfg.n_embed
        tensors = {
            "embed_x": x[:n], "embed_y": targets[classes[:n]], "embed_class": classes[:n], "embed_index": index[:n],
            "verify_x": x[n:], "verify_y": targets[classes[n:]], "verify_class": classes[n:],
            "verify_index": index[n:], "targets": targets, **secret,
        }  # fmt: skip
        return {k: v.clone() for k, v in tensors.items()}  # own memory: safetensors refuses shared

    def _pick_targets(self, target: nn.Module, data: ImageSet, compose, gen: torch.Generator) -> torch.Tensor:
        """Each watermark class's label: ``target``, or the free label the target model believes
        least in (mean softmax) on probe images with that class's backgrounds."""
        cfg = self.config
        if cfg.target != -1:
            if cfg.target >= data.num_classes:
                raise ConfigError(f"PTYNetConfig.target is {cfg.target} but {data.name} has {data.num_classes} classes")
            return torch.full((cfg.n_wm,), cfg.target, dtype=torch.long)
        probe = data.x[torch.randperm(len(data), generator=gen)[: cfg.n_probe]]
        order = torch.randperm(data.num_classes, generator=gen)
        chosen: list[int] = []
        for w in range(cfg.n_wm):
            logits = predict_logits(target, compose(probe, torch.full((len(probe),), w)))
            mass = logits.softmax(1).mean(0)[order].tolist()  # the target's mean belief in each label
            free = [i for i in range(len(order)) if int(order[i]) not in chosen] or list(range(len(order)))
            chosen.append(int(order[min(free, key=lambda i: mass[i])]))
        return torch.tensor(chosen)

    def embed(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine(), checkpoint=None, resume=False
    ) -> tuple[InjectedModel, Key]:
        """Train a proprietary net on ``data`` plus verification samples and inject it beside a
        copy of ``model``, whose weights are never trained; ``model`` itself stays untouched."""
        cfg = self.config
        if not isinstance(model, nn.Module):
            raise TypeError(f"PTYNet.embed protects an nn.Module classifier, got {type(model).__name__}")
        target = copy.deepcopy(model).eval()
        num_classes = _answer_width(target, data)
        samples = self.make_samples(target, data, seed=seed)
        proprietary = self.train_proprietary(
            data, samples, seed=seed, engine=engine, checkpoint=checkpoint, resume=resume
        )
        meta_targets = samples["targets"].tolist()
        injected = InjectedModel(target, proprietary, meta_targets, cfg.alpha, num_classes).eval()
        held_out = data.x[samples["verify_index"]]  # clean source images of the verification samples, never seen
        fpr = false_positive_rate(injected, held_out)
        log.info(
            "PTYNet: labels %s, %.3f false positives on %d held-out clean images", meta_targets, fpr, len(held_out)
        )
        meta = {
            "num_classes": num_classes, "input_shape": list(data.shape), "dataset": data.name,
            "strategy": cfg.strategy, "alpha": cfg.alpha, "n_wm": cfg.n_wm, "clean_class": cfg.n_wm,
            "targets": meta_targets, "proprietary": dataclasses.asdict(proprietary.spec),
            "heldout_clean_fpr": fpr, "heldout_clean_n": len(held_out),
        }  # fmt: skip
        return injected, Key("ptynet", config_dict(cfg), samples, meta)

    def train_proprietary(
        self, data: ImageSet, samples: dict[str, torch.Tensor], *, seed: int, engine: Engine = Engine(),
        checkpoint=None, resume: bool = False,
    ) -> nn.Module:  # fmt: skip
        """The proprietary net, trained from a seeded initialisation with cross-entropy on the
        owner's clean images (class ``n_wm``; verification sources left out) and the embedding samples."""
        cfg = self.config
        c, h, w = data.shape
        if h != w:
            raise ShapeError(f"PTYNet builds a square-input proprietary net, got images of {data.shape}")
        keep = torch.ones(len(data), dtype=torch.bool)
        keep[samples["verify_index"]] = False
        x = torch.cat([data.x[keep], samples["embed_x"]])
        y = torch.cat([torch.full((int(keep.sum()),), cfg.n_wm), samples["embed_class"]])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key_seed(seed, _INIT))
            proprietary = ModelSpec(cfg.arch, c, cfg.n_wm + 1, h).build()
        hook = augment_hook(seed, cfg.flip, cfg.degrees) if cfg.flip or cfg.degrees > 0 else None
        train = ImageSet(f"{data.name}+ptynet", x, y, cfg.n_wm + 1)
        fit(proprietary, train, cfg.train_config(), seed=seed, engine=engine, checkpoint=checkpoint, resume=resume,
            batch_hook=hook)  # fmt: skip
        return proprietary

    def detect(self, suspect, key: Key, *, p0: float | None = None) -> Evidence:
        """Count held-out verification samples the suspect (a module or a label function)
        answers with their class's target label."""
        return trigger_evidence("ptynet", suspect, key, p0)


def _answer_width(target: nn.Module, data: ImageSet) -> int:
    """How many classes ``target`` (in eval mode) answers with; it must match ``data``."""
    try:
        width = predict_logits(target, data.x[:1]).shape[1]
    except RuntimeError as err:
        raise ShapeError(
            f"the target cannot take {data.name} images {data.shape} ({str(err).splitlines()[0][:120]}); "
            "pass the data the model was trained on"
        ) from None
    if width != data.num_classes:
        raise KeyMismatchError(
            f"the target answers with {width} classes but {data.name} has {data.num_classes}; "
            "pass the data the model was trained on"
        )
    return width


def false_positive_rate(model: InjectedModel, x: torch.Tensor) -> float:
    """Share of images ``x`` (clean ones) the proprietary net assigns to a watermark class.

    This is the fidelity cost the paper reports: where the net stays silent (``q_w`` near 0)
    the injected model answers as the target does.
    """
    if not isinstance(model, InjectedModel):
        raise TypeError(f"false_positive_rate needs an InjectedModel, got {type(model).__name__}")
    if len(x) == 0:
        return 0.0
    return (predict_logits(model.proprietary, x).argmax(1) != model.clean_class).float().mean().item()
