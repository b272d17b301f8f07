"""More extraction attacks of the SoK: adversarial (Jacobian-augmented) extraction and ensemble distillation.

- **adv-extract**: the attacker queries a small seed set of its own images, trains a substitute on
  the victim's answers, and in each round adds one synthetic neighbour per queried image (up to the
  query ``budget``), crafted on the substitute by one fast-gradient step of size ``eps``, and asks the
  victim to label it. ``direction="boundary"`` steps away from the victim's label (an untargeted
  FGSM step: inputs near the decision boundary, the SoK's use of adversarial queries);
  ``"jacobian"`` is Papernot et al.'s Jacobian-based dataset augmentation, ``x + eps *
  sign(grad_x F_{O(x)}(x))`` (a targeted FGSM step towards the victim's label). The steps are crafted
  by IBM ART's ``FastGradientMethod`` (torchattacks is not a dependency of ownmark, ART is its
  ``art`` extra); the rounds, the budget and the substitute's training are ownmark's
  (:mod:`ownmark.attacks.distill`'s query function, answer types and surrogate initialisation).
- **ensemble-distill**: the attacker trains ``members`` classifiers of its own on its labelled data
  (seeded, architectures cycled from ``member_archs``), then distils a fresh surrogate from the
  average of the victim's answers and its members' softmax outputs on the queried images: the
  members dilute whatever the victim alone answers, as a watermark's trigger responses are. The
  averaging is a query function put in front of :class:`~ownmark.attacks.distill.Distill`, which
  does the querying, budget and training.

Written here: the augmentation rounds and the ensemble average (no maintained library implements
either around a black-box API; ART's extraction module has Knockoff Nets, Copycat CNN and
functionally equivalent extraction, not Jacobian augmentation).

Reference:
    Papernot, McDaniel, Goodfellow, Jha, Celik, Swami, "Practical Black-Box Attacks against Machine
    Learning", AsiaCCS 2017, arXiv:1602.02697 (substitute training with Jacobian-based dataset
    augmentation; lambda 0.1 on MNIST); Goodfellow, Shlens, Szegedy, "Explaining and Harnessing
    Adversarial Examples", ICLR 2015, arXiv:1412.6572 (FGSM); Hinton, Vinyals, Dean, "Distilling the
    Knowledge in a Neural Network", arXiv:1503.02531 (distilling an ensemble into one model); Lukas,
    Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
    Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (both as extraction attacks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.distill import (
    Distill,
    DistillConfig,
    _Tempered,
    check_fits,
    fresh_surrogate,
    make_query,
    soft_targets,
)
from ownmark.config import Preset
from ownmark.core import Cost
from ownmark.data import ImageSet, load_dataset, to_image_shape
from ownmark.data.splits import ood_part
from ownmark.errors import ConfigError, require_choice, require_positive
from ownmark.models import MODELS, ModelSpec
from ownmark.train import Engine, TrainConfig, fit, key_seed, label_hook, predict_logits
from ownmark.verify.suspect import QueryFn

SEED_STREAM, PICK_STREAM, MEMBER_STREAM = 0x41445653, 0x41445650, 0x454E534D


def _positive_int(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{type(config).__name__}.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class AdvExtractConfig(DistillConfig):
    """Distillation settings (as :class:`DistillConfig`) plus the augmentation rounds.

    Args:
        seed_size: attacker images queried first (Papernot et al. start from 150 on MNIST).
        rounds: augmentation rounds; each adds one crafted neighbour per image queried so far
            (the set doubles) until ``budget`` queries are spent.
        eps: step size of each crafted neighbour in L-infinity, pixels of [0, 1] images (lambda;
            0.1 on MNIST in Papernot et al.).
        direction: ``boundary`` (away from the victim's label) or ``jacobian`` (Papernot's sign of
            the gradient of the victim's label's score).
        round_epochs: epochs the substitute trains between rounds; ``epochs`` is the final
            training on every answer.
    """

    budget: int = 1500
    epochs: int = 5
    seed_size: int = 200
    rounds: int = 3
    eps: float = 0.1
    direction: str = "boundary"
    round_epochs: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self, "seed_size", "rounds", "round_epochs")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps <= 1:
            raise ConfigError(f"AdvExtractConfig.eps must be a step in (0, 1] (pixels of [0, 1]), got {self.eps!r}")
        require_choice(self, "direction", ("boundary", "jacobian"))
        if self.seed_size > self.budget:
            raise ConfigError(
                f"AdvExtractConfig.seed_size ({self.seed_size}) exceeds the budget ({self.budget}); "
                "lower seed_size or raise budget"
            )


def train_on_answers(
    surrogate: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    cfg: DistillConfig,
    epochs: int,
    seed: int,
    engine: Engine,
) -> None:
    """Train ``surrogate`` in place on images ``x`` and the victim's ``targets`` as :class:`Distill` does
    (labels: cross-entropy; probabilities: soft cross-entropy at ``cfg.temperature``)."""
    indexed = ImageSet("queried", x, torch.arange(len(x)), num_classes=len(x))
    trained = surrogate if cfg.output == "labels" else _Tempered(surrogate, cfg.temperature)
    train = TrainConfig(epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer)
    fit(trained, indexed, train, seed=seed, engine=engine, batch_hook=label_hook(targets))


def fgsm_step(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float, towards: bool) -> torch.Tensor:
    """One L-infinity fast-gradient step of size ``eps`` on ``model`` by IBM ART, clipped to [0, 1]:
    towards ``labels`` (targeted: Papernot's Jacobian augmentation) or away from them (untargeted)."""
    try:
        from art.attacks.evasion import FastGradientMethod
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        raise ConfigError(
            "adv-extract crafts its queries with IBM ART; install it: pip install 'ownmark[art]'"
        ) from None
    was_training = model.training
    model.eval()
    try:
        classes = int(model(x[:1]).shape[1])
        estimator = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                      nb_classes=classes, clip_values=(0.0, 1.0), device_type="cpu")  # fmt: skip
        attack = FastGradientMethod(estimator, norm=np.inf, eps=eps, targeted=towards, batch_size=256)
        y = F.one_hot(labels.long(), classes).float().numpy()
        return torch.from_numpy(attack.generate(x=x.numpy(), y=y)).float()
    finally:
        model.train(was_training)


def attacker_images(data: ImageSet, source: str) -> ImageSet:
    """The images the attacker sends: its own, or (``source`` named) the attacker's half of another
    dataset in the victim's input shape, as :class:`Distill` uses them."""
    if not source:
        return data
    other = ood_part(load_dataset(source), "attacker")
    return ImageSet(source, to_image_shape(other.x, data.shape), torch.zeros(len(other), dtype=torch.long),
                    num_classes=data.num_classes)  # fmt: skip


@ATTACKS.register("adv-extract")
class AdvExtract(Distill):
    """Extraction with adversarially augmented queries: substitute training in rounds (Papernot et al. 2017).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = AdvExtractConfig(budget=40, seed_size=16, rounds=2, round_epochs=1, epochs=1)
        >>> surrogate, cost = AdvExtract(cfg)(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> cost.queries, cost.details["crafted"]
        (40, 24)
    """

    group = "extraction"
    config_class = AdvExtractConfig
    presets = {
        "papernot-mnist": Preset(
            AdvExtractConfig(output="labels", budget=9600, seed_size=150, rounds=6, eps=0.1, direction="jacobian",
                             round_epochs=10, epochs=10),
            "Papernot et al. 2017 (arXiv:1602.02697), MNIST substitute: 150 initial images, 6 substitute epochs, "
            "lambda 0.1, labels only; 10 training epochs per round chosen here",
        )
    }  # fmt: skip

    def __init__(self, config: AdvExtractConfig = AdvExtractConfig()) -> None:
        self.config = config

    def __call__(
        self, victim: nn.Module | QueryFn, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cfg = self.config
        data = attacker_images(data, cfg.source)
        spec = self._check_before_querying(victim, data)
        query = make_query(victim, cfg.output) if isinstance(victim, nn.Module) else victim
        cost = Cost()
        with timed(cost):
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(key_seed(seed, SEED_STREAM)))
            x = data.read(order[: min(cfg.seed_size, len(data))])
            answers = self._ask(query, x)
            surrogate = fresh_surrogate(self._surrogate_spec(spec, data, answers), seed)
            budget, rounds_run = cfg.budget, 0
            for r in range(cfg.rounds):
                if len(x) >= budget:
                    break
                targets = soft_targets(answers, cfg.output, cfg.temperature)
                check_fits(targets, surrogate.spec.num_classes)
                train_on_answers(surrogate, x, targets, cfg, cfg.round_epochs, key_seed(seed, r), engine)
                g = torch.Generator().manual_seed(key_seed(seed, PICK_STREAM, r))
                pick = torch.randperm(len(x), generator=g)[: min(len(x), budget - len(x))]
                labels = targets[pick] if targets.ndim == 1 else targets[pick].argmax(1)
                crafted = fgsm_step(surrogate, x[pick], labels, cfg.eps, towards=cfg.direction == "jacobian")
                x, answers = torch.cat([x, crafted]), torch.cat([answers, self._ask(query, crafted)])
                rounds_run += 1
            targets = soft_targets(answers, cfg.output, cfg.temperature)
            check_fits(targets, surrogate.spec.num_classes)
            train_on_answers(surrogate, x, targets, cfg, cfg.epochs, key_seed(seed, cfg.rounds), engine)
        cost.queries = len(x)
        cost.epochs = float(cfg.epochs + rounds_run * cfg.round_epochs)
        seeds = min(cfg.seed_size, len(data))
        cost.details.update(output=cfg.output, arch=surrogate.spec.arch, rounds=rounds_run, crafted=len(x) - seeds,
                            library="adversarial-robustness-toolbox")  # fmt: skip
        return surrogate.eval(), cost


@dataclass(frozen=True)
class EnsembleDistillConfig(DistillConfig):
    """Distillation settings (as :class:`DistillConfig`) plus the attacker's own ensemble.

    Args:
        members: classifiers the attacker trains on its labelled data; the surrogate learns the
            average of their softmax outputs and the victim's answer (each weighs ``1 / (members + 1)``).
        member_archs: comma-separated architectures cycled over the members (``"lenet,cnn2"``);
            empty takes the surrogate's.
        member_epochs, member_lr: the members' training (SGD with momentum, batch ``batch_size``).
    """

    budget: int = 1500
    epochs: int = 5
    members: int = 2
    member_archs: str = ""
    member_epochs: int = 4
    member_lr: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self, "members", "member_epochs")
        require_positive(self, "member_lr")
        if not isinstance(self.member_archs, str) or (self.member_archs and not all(self.archs)):
            raise ConfigError(
                "EnsembleDistillConfig.member_archs must be comma-separated architecture names, e.g. 'lenet,cnn2', "
                f"got {self.member_archs!r}"
            )
        for arch in self.archs:
            if not arch.startswith(("tv:", "timm:")):
                MODELS.get(arch)  # an unknown name fails here, before any training

    @property
    def archs(self) -> tuple[str, ...]:
        """The members' architectures as names (empty: the surrogate's)."""
        return tuple(a.strip() for a in self.member_archs.split(",")) if self.member_archs else ()


class EnsembleAPI:
    """A query function answering the mean of the victim's answer (as probabilities: labels become
    one-hot votes) and the members' softmax outputs; it keeps the victim's ``spec`` for shape checks."""

    def __init__(self, query: QueryFn, output: str, members: list[nn.Module], spec: ModelSpec | None) -> None:
        self.query, self.output, self.members = query, output, members
        if spec is not None:
            self.spec = spec

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        answer = torch.as_tensor(self.query(x)).detach().cpu()
        outs = [predict_logits(m, x).softmax(1) for m in self.members]
        k = outs[0].shape[1]
        if self.output == "labels":  # one-hot votes
            labels = soft_targets(answer, "labels", 1.0)
            check_fits(labels, k)
            probs = F.one_hot(labels, k).float()
        else:  # probabilities (a labels-only API fails here with a ShapeError)
            probs = soft_targets(answer, self.output, 1.0)
            check_fits(probs, k)
        return torch.stack([probs, *outs]).mean(0)


@ATTACKS.register("ensemble-distill")
class EnsembleDistill(Distill):
    """Ensemble extraction: distil a surrogate from the victim averaged with the attacker's own models.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = EnsembleDistillConfig(budget=32, epochs=1, members=2, member_epochs=1)
        >>> surrogate, cost = EnsembleDistill(cfg)(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> cost.queries, cost.epochs, cost.details["members"]
        (32, 3.0, ['cnn2', 'cnn2'])
    """

    group = "extraction"
    config_class = EnsembleDistillConfig
    presets: dict = {}

    def __init__(self, config: EnsembleDistillConfig = EnsembleDistillConfig()) -> None:
        self.config = config

    def __call__(
        self, victim: nn.Module | QueryFn, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cfg = self.config
        spec = self._check_before_querying(victim, data)
        if spec is None:  # a black-box function: the named architecture on the attacker's classes
            c, size, _ = data.shape
            spec = ModelSpec(cfg.arch, c, data.num_classes, size)
        query = make_query(victim, cfg.output) if isinstance(victim, nn.Module) else victim
        cost, members = Cost(), []
        with timed(cost):
            train = TrainConfig(epochs=cfg.member_epochs, batch_size=cfg.batch_size, lr=cfg.member_lr)
            for i in range(cfg.members):
                archs = cfg.archs or (cfg.arch or spec.arch,)
                member_spec = dataclasses.replace(spec, arch=archs[i % len(archs)])
                member = fresh_surrogate(member_spec, key_seed(seed, MEMBER_STREAM, i))
                fit(member, data, train, seed=key_seed(seed, MEMBER_STREAM, i), engine=engine)
                members.append(member.eval())
        api = EnsembleAPI(query, cfg.output, members, getattr(victim, "spec", None))
        inner = DistillConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(DistillConfig)})
        inner = dataclasses.replace(inner, output="probs", arch=cfg.arch or spec.arch)
        surrogate, distilled = Distill(inner)(api, data, seed=seed, engine=engine)
        cost.seconds += distilled.seconds
        cost.queries = distilled.queries
        cost.epochs = float(cfg.epochs + cfg.members * cfg.member_epochs)
        cost.details.update(output=cfg.output, arch=surrogate.spec.arch, members=[m.spec.arch for m in members])
        return surrogate, cost
