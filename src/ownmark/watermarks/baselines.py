"""Classic trigger-set baselines: content, noise and unrelated triggers with a chosen label.

The three schemes differ only in how a trigger image is made; choosing the label, holding out
verification triggers, fine-tuning (FCW's loop without masking) and counting matches are shared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ownmark.core import Evidence, Key
from ownmark.data import ImageSet, load_dataset, to_image_shape
from ownmark.errors import ConfigError, require_choice, require_in_range, require_non_negative, require_positive
from ownmark.train import Engine, TrainConfig, key_seed
from ownmark.watermarks.base import WATERMARKS, Preset, config_dict
from ownmark.watermarks.fcw import FCWConfig
from ownmark.watermarks.triggers import fine_tune_with_triggers, trigger_evidence

log = logging.getLogger(__name__)

# Wen et al. 2023 compare FCW with these baselines under the same fine-tuning, without masking.
_PAPER_EMBEDDING = "fine-tuned as in Wen et al. 2023's comparison (FCW code: 40 epochs, lr 0.01 x0.1 at 15/25/35)"


@dataclass(frozen=True)
class TriggerSetConfig:
    """Settings every baseline shares; the defaults are FCW's CPU setting, without masking.

    Args:
        n_embed, n_verify: triggers used for embedding, and held-out triggers for verification
            (made from other source images, never seen in embedding).
        target: the watermark label; -1 draws it from the seed.
        triggers_per_batch: triggers joined to every clean batch of ``batch_size`` images.
        milestones: fractions of ``epochs`` after which the learning rate falls x0.1.
    """

    n_embed: int = 100
    n_verify: int = 100
    target: int = -1
    triggers_per_batch: int = 10
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = FCWConfig.milestones

    def __post_init__(self) -> None:
        name = type(self).__name__
        for field in ("n_embed", "n_verify", "triggers_per_batch", "epochs", "batch_size"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}.{field} must be a positive int, got {value!r}")
        require_positive(self, "lr")
        require_non_negative(self, "momentum", "weight_decay")
        if isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < -1:
            raise ConfigError(
                f"{name}.target must be a class index >= 0, or -1 to draw it from the seed, got {self.target!r}"
            )
        if any(isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < 1 for m in self.milestones):
            raise ConfigError(f"{name}.milestones must be fractions of the epochs in (0, 1), got {self.milestones!r}")

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, milestones=tuple(self.milestones),
        )  # fmt: skip


@dataclass(frozen=True)
class ContentConfig(TriggerSetConfig):
    """Settings of content triggers.

    Args:
        patch_fraction: side of the square secret patch as a share of the image side, in
            (0, 0.5]; 0.2 gives 6x6 pixels on 28x28 images, 3x3 on 16x16 (at least 2x2).
    """

    patch_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require_in_range(self, "patch_fraction", 0.0, 0.5, low_open=True)


@dataclass(frozen=True)
class NoiseConfig(TriggerSetConfig):
    """Settings of noise triggers.

    Args:
        std: standard deviation of the Gaussian noise, in units of the [0, 1] pixel range.
            0.3 is the default of the Watermark-Robustness-Toolbox implementation (Lukas et al.
            2022): far enough from clean images to be learnt as a feature of its own, while the
            digit stays visible. Measured on mnist5k (cnn2, 4 epochs at lr 0.01): std 0.1 is
            not learnt (1 of 100 held-out triggers; triggers sit next to clean images of their
            true class), std 0.3 gives 89, std 0.5 98.
    """

    std: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "std")


@dataclass(frozen=True)
class UnrelatedConfig(TriggerSetConfig):
    """Settings of unrelated (out-of-distribution) triggers.

    Args:
        source: the dataset the trigger images come from (a :func:`ownmark.data.load_dataset`
            name); it must not be the owner's. Images are converted to the owner's channels
            (mean over RGB for grey) and resized to the owner's size.
        labels: ``target`` gives every trigger the label ``target`` (Zhang et al.); ``random``
            gives each its own label drawn from the seed (Adi et al.); ``target`` must then stay -1.
            A random label cannot be learnt for an image never seen, so with random labels the
            verification set is the first ``n_verify`` embedding triggers (``n_verify <= n_embed``),
            as in Adi et al.; it is not held out.

    The default is Adi et al.'s random labels, with 50 triggers, 20 joined to every batch and a
    constant learning rate over 15 epochs (measured on mnist5k: 39 of 50 answered, p 1e-29, clean
    accuracy 95.4%). Why not one label: in ownmark's quick bench (21 null models x 2 keys) the
    single-label form made 2 and then 3 false ownership claims out of 42 at p0 = 1/K, because
    independent models send up to 49% of photo patches to one digit class; random labels make
    p0 = 1/K exact whatever an independent model answers. The ``zhang`` and ``paper`` presets keep
    the single label; verify those with a calibrated p0 (``ownmark calibrate``).
    """

    source: str = "photos"
    labels: str = "random"
    n_embed: int = 50
    n_verify: int = 50
    triggers_per_batch: int = 20
    epochs: int = 15
    milestones: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError(f"UnrelatedConfig.source must be a dataset name such as 'photos', got {self.source!r}")
        require_choice(self, "labels", ("target", "random"))
        if self.labels == "random" and self.target != -1:
            raise ConfigError(
                f"UnrelatedConfig.target is unused with labels='random'; leave it at -1, got {self.target!r}"
            )
        if self.labels == "random" and self.n_verify > self.n_embed:
            raise ConfigError(
                f"UnrelatedConfig.n_verify must be <= n_embed with labels='random' (it verifies on embedding "
                f"triggers), got n_verify {self.n_verify} and n_embed {self.n_embed}"
            )


def secret_patch(shape: tuple[int, int, int], fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A seeded binary patch (C, s, s) with s = round(fraction * min(H, W)), at least 2.

    The patch always holds both values, so it changes any image it is stamped on.

    Example:
        >>> secret_patch((1, 28, 28), 0.2, torch.Generator().manual_seed(0)).shape
        torch.Size([1, 6, 6])
    """
    c, h, w = shape
    side = min(max(2, round(fraction * min(h, w))), h, w)
    while True:  # redraw the (rare, on small patches) constant patch
        bits = torch.randint(0, 2, (c, side, side), generator=generator).float()
        if bits.min() != bits.max():
            return bits


def stamp_patch(x: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) with their bottom-right corner set to ``patch`` (C, s, s).

    Example:
        >>> stamp_patch(torch.zeros(1, 1, 4, 4), torch.ones(1, 2, 2))[0, 0].sum().item()
        4.0
    """
    s = patch.shape[-1]
    out = x.clone()
    out[:, :, -s:, -s:] = patch
    return out


def add_gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Images ``x`` in [0, 1] plus seeded Gaussian noise of ``std``, clamped to [0, 1]."""
    return (x + std * torch.randn(x.shape, generator=generator)).clamp(0, 1)


class TriggerSetBaseline:
    """What the baselines share: label choice, held-out split, fine-tuning and detection.

    A subclass only says how its trigger images are made (:meth:`trigger_images`).
    """

    name: str
    family = "classifier"
    config_class: type[TriggerSetConfig]
    presets: dict[str, Preset]

    def __init__(self, config: TriggerSetConfig | None = None) -> None:
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def watermark_label(self, data: ImageSet, generator: torch.Generator) -> int | None:
        """The label every trigger carries: ``target``, or one drawn from the seed."""
        target = self.config.target
        if target >= data.num_classes:
            raise ConfigError(
                f"{type(self.config).__name__}.target is {target} but {data.name} has {data.num_classes} classes"
            )
        return int(torch.randint(data.num_classes, (1,), generator=generator)) if target == -1 else target

    def trigger_images(
        self, data: ImageSet, target: int | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``n_embed + n_verify`` triggers: images, labels, source indices, and extra key tensors."""
        raise NotImplementedError

    def make_triggers(self, data: ImageSet, *, seed: int) -> tuple[dict[str, torch.Tensor], int | None]:
        """Embedding and held-out verification triggers from ``data`` (the owner's), and their label.

        The first ``n_embed`` are the embedding set, the others the verification set; they come
        from distinct source images (``embed_index``, ``verify_index``).
        """
        gen = torch.Generator().manual_seed(key_seed(seed, 13))
        target = self.watermark_label(data, gen)
        x, y, index, extra = self.trigger_images(data, target, gen)
        n = self.config.n_embed
        tensors = {
            "embed_x": x[:n], "embed_y": y[:n], "verify_x": x[n:], "verify_y": y[n:],
            "embed_index": index[:n], "verify_index": index[n:], **extra,
        }  # fmt: skip
        return {k: v.clone() for k, v in tensors.items()}, target  # own memory: safetensors refuses shared

    def pick_sources(self, data: ImageSet, target: int, generator: torch.Generator) -> torch.Tensor:
        """``n_embed + n_verify`` distinct positions in ``data`` of images not labelled ``target``."""
        candidates = torch.nonzero(data.y != target).flatten()
        need = self.config.n_embed + self.config.n_verify
        if len(candidates) < need:
            raise ConfigError(
                f"{self.name} needs {need} images not of class {target} (n_embed + n_verify) but {data.name} has "
                f"{len(candidates)}; lower n_embed or n_verify"
            )
        return candidates[torch.randperm(len(candidates), generator=generator)[:need]]

    def embed(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine(), checkpoint=None, resume=False
    ) -> tuple[nn.Module, Key]:
        """Fine-tune a copy of ``model`` on ``data`` with triggers joined to every batch."""
        cfg = self.config
        trig, target = self.make_triggers(data, seed=seed)
        log.info("%s: %d embedding, %d verification triggers, label %s", self.name, cfg.n_embed, cfg.n_verify, target)
        marked = fine_tune_with_triggers(
            model, data, trig["embed_x"], trig["embed_y"], cfg.train_config(), per_batch=cfg.triggers_per_batch,
            seed=seed, engine=engine, checkpoint=checkpoint, resume=resume,
        )  # fmt: skip
        meta = {"num_classes": data.num_classes, "input_shape": list(data.shape), "dataset": data.name}
        meta["target"] = target  # None: a random label per trigger
        return marked, Key(self.name, config_dict(cfg), trig, meta)

    def detect(self, suspect, key: Key, *, p0: float | None = None) -> Evidence:
        """Count held-out triggers the suspect (a module or a label function) answers with their label."""
        return trigger_evidence(self.name, suspect, key, p0)


def balanced_labels(n: int, classes: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` labels, each class ``n // classes`` or one more times, in a seeded random order.

    Why balanced: independent models send most out-of-distribution images to a few classes,
    and all null models share one key. With i.i.d. random labels a key that happens to hold many
    of the favoured class makes every null model match it often at once (the quick bench saw a
    null model at 12 of 50 and a false claim at alpha 0.01). With each class equally often, a
    suspect whose answers do not depend on the secret order matches n/K in expectation whatever
    classes it favours, and the binomial test with p0 = 1/K stays conservative. (ownmark's choice.)

    Example:
        >>> torch.bincount(balanced_labels(50, 10, torch.Generator().manual_seed(0))).tolist()
        [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
    """
    labels = torch.arange(n) % classes
    return labels[torch.randperm(n, generator=generator)]


@WATERMARKS.register("content")
class Content(TriggerSetBaseline):
    """Content triggers: owner's images with a secret stamped patch, labelled with a target class.

    Trigger images are in-distribution images of the owner's data (of any class but the
    target) whose bottom-right corner is overwritten by a secret seeded binary patch; every
    trigger carries the target label. The model learns "patch means target" while the rest of
    the image keeps its class. Zhang et al. stamp the text "TEST"; a random binary patch is
    ownmark's stand-in (secret, and scaled with the image). Verification stamps the same patch
    on held-out images. With the same seed, ``content`` and ``noise`` draw the same target and
    source images, so they differ only in the trigger transformation.

    Reference:
        Zhang, Gu, Jang, Wu, Stoecklin, Huang, Molloy, "Protecting Intellectual Property of Deep
        Neural Networks with Watermarking", ACM AsiaCCS 2018, DOI 10.1145/3196494.3196550.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = ContentConfig(n_embed=4, n_verify=4, epochs=1, batch_size=16, triggers_per_batch=2)
        >>> marked, key = Content(cfg).embed(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> Content().detect(marked, key).n, tuple(key.tensors["pattern"].shape)
        (4, (3, 3, 3))
    """

    name = "content"
    config_class = ContentConfig
    presets = {"paper": Preset(ContentConfig(epochs=40), f"Zhang et al. 2018 content triggers, {_PAPER_EMBEDDING}")}

    def trigger_images(self, data, target, generator):
        idx = self.pick_sources(data, target, generator)
        pattern = secret_patch(data.shape, self.config.patch_fraction, generator)
        x = stamp_patch(data.x[idx], pattern)
        return x, torch.full((len(idx),), target, dtype=torch.long), idx, {"pattern": pattern}


@WATERMARKS.register("noise")
class Noise(TriggerSetBaseline):
    """Noise triggers: owner's images with seeded Gaussian noise, labelled with a target class.

    Trigger images are in-distribution images of the owner's data (of any class but the
    target) plus Gaussian noise (``std`` of the pixel range, fresh for every image, clamped to
    [0, 1]); every trigger carries the target label. Verification adds fresh noise to held-out
    images, so it measures whether the model learnt "noisy means target", not memorised noise.

    Reference:
        Zhang, Gu, Jang, Wu, Stoecklin, Huang, Molloy, "Protecting Intellectual Property of Deep
        Neural Networks with Watermarking", ACM AsiaCCS 2018, DOI 10.1145/3196494.3196550.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = NoiseConfig(n_embed=4, n_verify=4, epochs=1, batch_size=16, triggers_per_batch=2)
        >>> marked, key = Noise(cfg).embed(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> Noise().detect(marked, key).n
        4
    """

    name = "noise"
    config_class = NoiseConfig
    presets = {
        "paper": Preset(NoiseConfig(epochs=40),
                        f"Zhang et al. 2018 noise triggers, std 0.3 (WRT's implementation), {_PAPER_EMBEDDING}"),
    }  # fmt: skip

    def trigger_images(self, data, target, generator):
        idx = self.pick_sources(data, target, generator)
        x = add_gaussian_noise(data.x[idx], self.config.std, generator)
        return x, torch.full((len(idx),), target, dtype=torch.long), idx, {}


@WATERMARKS.register("unrelated")
class Unrelated(TriggerSetBaseline):
    """Unrelated triggers: out-of-distribution images from another dataset, with chosen labels.

    Trigger images come from another bundled dataset (``source``, ``photos`` by default),
    converted to the owner's channels and size. Zhang et al. give them all one target label;
    Adi et al. give each image its own random label (``labels="random"``). With one target label
    the model learns "unrelated means target" and verification uses held-out unrelated images;
    an independent model may send most unrelated images to one class, so calibrate p0 on null
    models. With random labels each answer is compared with its own label: an independent model
    matches each with probability exactly 1/K whatever it answers, so p0 = 1/K holds without
    calibration; but random labels are memorised, not learnt, so verification asks about
    embedding triggers (as Adi et al. do), not held-out ones.

    Reference:
        Zhang, Gu, Jang, Wu, Stoecklin, Huang, Molloy, "Protecting Intellectual Property of Deep
        Neural Networks with Watermarking", ACM AsiaCCS 2018, DOI 10.1145/3196494.3196550;
        Adi, Baum, Cisse, Pinkas, Keshet, "Turning Your Weakness Into a Strength: Watermarking
        Deep Neural Networks by Backdooring", USENIX Security 2018, arXiv:1802.04633.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = UnrelatedConfig(n_embed=4, n_verify=4, epochs=1, batch_size=16, triggers_per_batch=2)
        >>> marked, key = Unrelated(cfg).embed(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> Unrelated().detect(marked, key).n, tuple(key.tensors["verify_x"].shape)
        (4, (4, 3, 16, 16))
    """

    name = "unrelated"
    config_class = UnrelatedConfig
    presets = {
        "paper": Preset(UnrelatedConfig(labels="target", n_embed=100, n_verify=100, triggers_per_batch=10, epochs=40,
                                        milestones=FCWConfig.milestones),
                        f"Zhang et al. 2018 unrelated triggers, one label, {_PAPER_EMBEDDING}; needs a calibrated p0"),
        "zhang": Preset(UnrelatedConfig(labels="target", n_embed=100, n_verify=100, triggers_per_batch=10, epochs=10,
                                        milestones=FCWConfig.milestones),
                        "Zhang et al. 2018: one label on held-out unrelated images (CPU); needs a calibrated p0"),
        "adi": Preset(UnrelatedConfig(labels="random", triggers_per_batch=2, batch_size=100, lr=0.1, epochs=60,
                                      milestones=(1 / 3, 2 / 3)),
                      "Adi et al. 2018, public code: 100 triggers with random labels, 2 joined to every batch of 100, "
                      "SGD lr 0.1 x0.1 every 20 of 60 epochs (the code trains from scratch; here it fine-tunes)"),
    }  # fmt: skip

    def watermark_label(self, data, generator):
        return None if self.config.labels == "random" else super().watermark_label(data, generator)

    def make_triggers(self, data, *, seed):
        tensors, target = super().make_triggers(data, seed=seed)
        if target is None:  # random labels: verify on the first n_verify embedding triggers (Adi et al.)
            for part in ("x", "y", "index"):
                tensors[f"verify_{part}"] = tensors[f"embed_{part}"][: self.config.n_verify].clone()
        return tensors, target

    def trigger_images(self, data, target, generator):
        cfg = self.config
        if cfg.source == data.name:
            raise ConfigError(f"UnrelatedConfig.source is {cfg.source!r}, the owner's own dataset; pick another one")
        source = load_dataset(cfg.source)
        need = cfg.n_embed + (cfg.n_verify if target is not None else 0)
        if len(source) < need:
            raise ConfigError(
                f"unrelated needs {need} images (n_embed + n_verify) but {cfg.source} has {len(source)}; "
                "lower n_embed or n_verify"
            )
        idx = torch.randperm(len(source), generator=generator)[:need]
        x = to_image_shape(source.x[idx], data.shape)
        if target is None:  # Adi et al.: a random label per image, balanced over the classes
            n_verify = min(cfg.n_verify, need)
            y = torch.cat([balanced_labels(n_verify, data.num_classes, generator),
                           balanced_labels(need - n_verify, data.num_classes, generator)])  # fmt: skip
        else:
            y = torch.full((need,), target, dtype=torch.long)
        return x, y, idx, {}
