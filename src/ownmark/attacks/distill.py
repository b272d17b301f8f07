"""Model extraction: a fresh surrogate trained on the victim's answers, bought through its API."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.core import Cost
from ownmark.data import ImageSet, load_dataset, to_image_shape
from ownmark.data.splits import ood_part
from ownmark.errors import ConfigError, ShapeError, require_choice, require_positive
from ownmark.models import MODELS, ModelSpec
from ownmark.train import Engine, TrainConfig, cpu_seeded, fit, key_seed, label_hook, predict_logits
from ownmark.verify.suspect import QueryFn

OUTPUTS = ("labels", "probs", "logits")
ORDER_STREAM, INIT_STREAM = 0x4F524452, 0x494E4954  # key the query order and the surrogate's init apart


@dataclass(frozen=True)
class DistillConfig:
    """What the API answers, how many images the attacker may send, and how the surrogate trains.

    Args:
        output: what the victim's API returns: hard ``"labels"``, softmax ``"probs"`` or ``"logits"``.
        budget: most images sent to the API; each attacker image is sent at most once.
        arch: surrogate architecture (a name ``ModelSpec`` accepts); None takes the victim's.
        temperature: divides the victim's logits (or log-probabilities) and the surrogate's
            logits for soft targets (Hinton et al.); unused with hard labels.
        query_batch: images per API call.
        source: empty to query with the attacker's data; else a dataset name (``photos``,
            ``digits``, ...) whose images, converted to the victim's input shape, are sent instead:
            extraction with data from another distribution. Only the attacker's half of that
            dataset is used (:func:`ownmark.data.splits.ood_part`): the owner draws unrelated
            triggers from the other half, so the attacker never queries a verification trigger.
    """

    output: str = "probs"
    budget: int = 10_000
    arch: str | None = None
    epochs: int = 10
    lr: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 64
    temperature: float = 1.0
    query_batch: int = 256
    source: str = ""

    def __post_init__(self) -> None:
        require_choice(self, "output", OUTPUTS)
        for name in ("budget", "epochs", "batch_size", "query_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"DistillConfig.{name} must be a positive int, got {value!r}")
        require_positive(self, "lr", "temperature")
        require_choice(self, "optimizer", ("sgd", "adam"))
        if self.arch is not None and (not isinstance(self.arch, str) or not self.arch):
            raise ConfigError(f"DistillConfig.arch must be an architecture name or None, got {self.arch!r}")
        if self.arch is not None and not self.arch.startswith(("tv:", "timm:")):
            MODELS.get(self.arch)  # an unknown name fails here, before any query is spent


def make_query(model: nn.Module, output: str = "probs") -> QueryFn:
    """The black-box view of ``model``: images (N, C, H, W) in, answers out, weights out of reach.

    Answers are labels (N,), softmax probabilities (N, K) or logits (N, K); the model runs in eval
    mode without gradients and its own mode is restored.

    Example:
        >>> from ownmark.models import MODELS, ModelSpec
        >>> model = ModelSpec("cnn2", 3, 4, 16).build()
        >>> [tuple(make_query(model, out)(torch.rand(2, 3, 16, 16)).shape) for out in ("labels", "probs", "logits")]
        [(2,), (2, 4), (2, 4)]
    """
    if output not in OUTPUTS:
        raise ConfigError(f"make_query output must be one of {list(OUTPUTS)}, got {output!r}")

    def query(x: torch.Tensor) -> torch.Tensor:
        logits = predict_logits(model, x)
        if output == "labels":
            return logits.argmax(1)
        return logits.softmax(1) if output == "probs" else logits

    return query


def soft_targets(answers: torch.Tensor, output: str, temperature: float) -> torch.Tensor:
    """Training targets from the API's answers: labels stay labels, scores become probabilities.

    Probabilities are turned back into logits by ``log`` (equal up to a per-image constant, which
    softmax ignores), so one temperature applies to both kinds; rows the API rounded or truncated
    are renormalised on the way.
    """
    if output == "labels":
        return answers.argmax(1) if answers.ndim == 2 else answers.long()
    if answers.ndim != 2:
        raise ShapeError(
            f"DistillConfig.output={output!r} needs (N, K) scores from the query function, got shape "
            f"{tuple(answers.shape)}; use output='labels' for an API that returns labels"
        )
    logits = answers.float().clamp_min(1e-12).log() if output == "probs" else answers.float()
    return (logits / temperature).softmax(1)


def check_fits(targets: torch.Tensor, num_classes: int) -> None:
    """Raise ShapeError unless labels (N,) or probabilities (N, K) fit a surrogate of ``num_classes``."""
    if targets.ndim == 2 and targets.shape[1] != num_classes:
        raise ShapeError(
            f"the victim answered with {targets.shape[1]} scores but the surrogate has {num_classes} classes"
        )
    if targets.ndim == 1 and not 0 <= int(targets.min()) <= int(targets.max()) < num_classes:
        raise ShapeError(
            f"the victim answered labels in [{int(targets.min())}, {int(targets.max())}] but the surrogate has "
            f"{num_classes} classes; attack with data whose num_classes covers the victim's labels"
        )


class _Tempered(nn.Module):
    """The surrogate with its logits divided by the temperature, for training on soft targets."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


@ATTACKS.register("distill")
class Distill:
    """Extraction by distillation: label the attacker's images through the victim's API, train a copy.

    The attacker sends up to ``budget`` of its own images (a seeded random choice, each once, in
    batches of ``query_batch``) and trains a freshly initialised surrogate on the answers: cross-
    entropy on hard labels, soft cross-entropy (KL divergence up to a constant) on probabilities
    or logits. The attacker's own labels are never used, so its images may come from another
    distribution as long as they have the victim's input shape. No hard-label term is mixed in,
    so Hinton's T^2 loss factor is left out: under Adam it changes nothing, under SGD it equals a
    T^2 times larger learning rate. A higher temperature softens the targets and needs more epochs.

    The victim is either a module, which is only ever called through :func:`make_query`, or a
    black-box function used as the query function itself (then ``arch`` must be named, and with
    hard labels the surrogate gets ``data.num_classes`` outputs).

    Reference:
        Tramèr, Zhang, Juels, Reiter, Ristenpart, "Stealing Machine Learning Models via Prediction
        APIs", USENIX Security 2016, arXiv:1609.02943; Hinton, Vinyals, Dean, "Distilling the
        Knowledge in a Neural Network", NIPS Deep Learning Workshop 2014, arXiv:1503.02531.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import MODELS, ModelSpec
        >>> victim = ModelSpec("cnn2", 3, 4, 16).build()
        >>> surrogate, cost = Distill(DistillConfig(budget=40, epochs=1))(victim, toy_images(), seed=0)
        >>> cost.queries, surrogate(torch.rand(2, 3, 16, 16)).shape
        (40, torch.Size([2, 4]))
    """

    access = "black-box"
    group = "extraction"
    families = ("classifier",)
    config_class = DistillConfig
    presets: dict = {}
    queries_per_image = 1

    def __init__(self, config: DistillConfig = DistillConfig()) -> None:
        self.config = config

    def __call__(
        self, victim: nn.Module | QueryFn, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cfg = self.config
        if cfg.source:  # another distribution: labels are never used, the victim's answers are
            other = ood_part(load_dataset(cfg.source), "attacker")  # the owner's triggers are in the other half
            data = ImageSet(cfg.source, to_image_shape(other.x, data.shape), torch.zeros(len(other), dtype=torch.long),
                            num_classes=data.num_classes)  # fmt: skip
        spec = self._check_before_querying(victim, data)
        query = make_query(victim, cfg.output) if isinstance(victim, nn.Module) else victim
        cost = Cost()
        with timed(cost):
            # a seeded random choice: the attacker's set may be sorted by class
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(key_seed(seed, ORDER_STREAM)))
            x = data.read(order[: min(cfg.budget, len(data))])
            answers = self._ask(query, x, seed)
            cost.queries = len(x) * self.queries_per_image
            targets = soft_targets(answers, cfg.output, cfg.temperature)
            surrogate = fresh_surrogate(self._surrogate_spec(spec, data, answers), seed)
            check_fits(targets, surrogate.spec.num_classes)
            # fit() trains with cross-entropy on int labels: label each image with its own index and
            # let the batch hook swap the index for the victim's answer (F.cross_entropy also takes
            # probability targets)
            indexed = ImageSet("queried", x, torch.arange(len(x)), num_classes=len(x))
            trained = surrogate if cfg.output == "labels" else _Tempered(surrogate, cfg.temperature)
            train = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer)
            fit(trained, indexed, train, seed=seed, engine=engine, batch_hook=label_hook(targets))
        cost.epochs = float(cfg.epochs)
        cost.details.update(output=cfg.output, arch=surrogate.spec.arch)
        return surrogate.eval(), cost

    def _ask(self, query: QueryFn, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Send ``x`` in batches of ``query_batch``; every image once, nothing more (``seed``: for
        subclasses that draw per query)."""
        answers = []
        for i in range(0, len(x), self.config.query_batch):
            batch = x[i : i + self.config.query_batch]
            with torch.no_grad():
                answer = torch.as_tensor(query(batch)).detach().cpu()
            if answer.ndim not in (1, 2) or len(answer) != len(batch):
                raise ShapeError(
                    f"the query function answered {len(batch)} images with shape {tuple(answer.shape)}; "
                    "it must return (N,) labels or (N, K) scores"
                )
            answers.append(answer)
        return torch.cat(answers)

    def _check_before_querying(self, victim: nn.Module | QueryFn, data: ImageSet) -> ModelSpec | None:
        """Every check that needs no answers, so a mistake costs no queries; returns the victim's spec."""
        if not callable(victim):
            raise TypeError(f"Distill needs a victim module or query function, got {type(victim).__name__}")
        if len(data) == 0:
            raise ShapeError("Distill got an empty attacker set; it needs images to query the victim with")
        spec = getattr(victim, "spec", None)
        if isinstance(spec, ModelSpec):
            if data.shape != spec.input_shape:
                raise ShapeError(
                    f"Distill got attacker images of shape {data.shape} but the victim takes {spec.input_shape}; "
                    "resize the attacker's data to the victim's input shape"
                )
            return spec
        if self.config.arch is None:
            raise ConfigError(
                "DistillConfig.arch is None (the victim's architecture) but the victim carries no ModelSpec; "
                "name a surrogate architecture, e.g. arch='cnn2'"
            )
        if data.shape[1] != data.shape[2]:
            raise ShapeError(f"Distill builds square-input surrogates, got attacker images of {data.shape}")
        return None

    def _surrogate_spec(self, spec: ModelSpec | None, data: ImageSet, answers: torch.Tensor) -> ModelSpec:
        """The victim's spec with ``arch`` swapped in; without one, the data's shape and the answers' width."""
        arch = self.config.arch
        if spec is not None:
            return spec if arch is None else dataclasses.replace(spec, arch=arch)
        c, size, _ = data.shape
        return ModelSpec(arch, c, answers.shape[1] if answers.ndim == 2 else data.num_classes, size)


SMOOTH_STREAM = 0x534D4F4F


@dataclass(frozen=True)
class SmoothDistillConfig(DistillConfig):
    """Distillation (as :class:`DistillConfig`) on answers averaged over ``copies`` augmented queries
    of each image: a random crop after zero-padding by ``pad`` pixels, and a mirror image when ``flip``."""

    copies: int = 3
    pad: int = 4
    flip: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or self.copies < 1:
            raise ConfigError(f"SmoothDistillConfig.copies must be a positive int, got {self.copies!r}")
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or self.pad < 0:
            raise ConfigError(f"SmoothDistillConfig.pad must be an int >= 0, got {self.pad!r}")
        if self.output == "logits":
            raise ConfigError("smooth-distill averages probabilities or label votes; use output=probs or labels")


def shifted_copy(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """``x`` (N, C, H, W) zero-padded by ``pad`` and cropped back at a random offset per image, mirrored
    at random when ``flip``.

    Example:
        >>> x = torch.rand(5, 1, 8, 8); y = shifted_copy(x, 2, False, torch.Generator().manual_seed(0))
        >>> y.shape == x.shape, bool((shifted_copy(x, 0, False, torch.Generator()) == x).all())
        (True, True)
    """
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        out[mirror] = out[mirror].flip(-1)
    return out


@ATTACKS.register("smooth-distill")
class SmoothDistill(Distill):
    """Smooth retraining: distillation on the victim's answers averaged over augmented copies of each query.

    Each attacker image is sent ``copies`` times, shifted (and mirrored, with ``flip``) at random; the
    surrogate trains on the mean of the answers (probabilities, or the share of votes for each label),
    which smooths away the victim's answers that hold only at exact inputs, as a watermark's often do.
    Costs ``copies`` queries per image. The SoK's code averages ``n = 3`` crop-and-flip copies (its
    ImageNet configurations); flips are off by default here because digits are not mirror-symmetric.

    Reference:
        Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
        Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (smooth retraining, introduced there).
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = SmoothDistillConfig(budget=20, epochs=1)
        >>> SmoothDistill(cfg)(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)[1].queries
        60
    """

    config_class = SmoothDistillConfig

    @property
    def queries_per_image(self) -> int:  # type: ignore[override]
        return self.config.copies

    def _ask(self, query: QueryFn, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        cfg = self.config
        g = torch.Generator().manual_seed(key_seed(seed, SMOOTH_STREAM))  # the copies' shifts: the attack's seed
        total = None
        for _ in range(cfg.copies):
            answers = super()._ask(query, shifted_copy(x, cfg.pad, cfg.flip, g))
            if answers.ndim == 1:  # labels: votes
                answers = torch.nn.functional.one_hot(answers.long(), int(answers.max()) + 1).float()
            else:
                answers = answers.float().clamp_min(0)
                answers = answers / answers.sum(1, keepdim=True).clamp_min(1e-12)
            if total is not None and answers.shape[1] != total.shape[1]:  # votes never reached a top class
                width = max(answers.shape[1], total.shape[1])
                answers = torch.nn.functional.pad(answers, (0, width - answers.shape[1]))
                total = torch.nn.functional.pad(total, (0, width - total.shape[1]))
            total = answers if total is None else total + answers
        return total / cfg.copies


def fresh_surrogate(spec: ModelSpec, seed: int) -> nn.Module:
    """An untrained model of ``spec`` whose initial weights depend on ``seed`` only."""
    with cpu_seeded(key_seed(seed, INIT_STREAM)):
        return spec.build()
