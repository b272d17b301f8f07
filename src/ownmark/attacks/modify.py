"""Model modification attacks of the SoK: weight shifting, regularization and adversarial training.

Each changes a copy of the victim and then trains it on the attacker's data, labelled by the victim's
own answers (``labels="victim"``, as the SoK's configurations do; ``"true"`` uses the attacker's
labels), so accuracy is recovered without labelled data of one's own:

- **weight shifting** (introduced by the SoK): every convolution's filters are shifted away from
  their mean filter and perturbed, ``W <- W - shift * mean_out(W) - noise * std(W) * N(0, 1)``
  (``mean_out``: the average filter over the output channels), then fine-tuned. Defaults are the SoK's
  CIFAR-10 setting (shift 1.5, noise 1.0, batch 64); epochs 5 here, 10 in the ``paper`` preset.
- **regularization**: ``reg_epochs`` epochs with a strong L2 penalty (weight decay ``l2`` 0.1), which
  pulls every weight towards zero, then ``epochs`` of ordinary fine-tuning. The SoK stops the second
  phase early on the test loss (up to 50 epochs); a fixed count is used here, since an attacker has no
  test set of the owner's.
- **adversarial training**: each epoch, untargeted L-infinity PGD (IBM ART's
  ``ProjectedGradientDescent``, no random start, the model's own answers as labels) turns ``n_adv``
  seeded attacker images into adversarial examples at each radius of ``eps``; they join the epoch's
  data with the clean images' labels. Defaults are the SoK's CIFAR-10 setting (eps 0.01 / 0.1 / 0.25,
  step 0.01, 40 iterations, 1,000 images, 5 epochs). Needs ART (``pip install 'ownmark[art]'``).

Reference:
    Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
    Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (all three as removal attacks; weight shifting
    introduced there); Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant
    to Adversarial Attacks", ICLR 2018, arXiv:1706.06083 (PGD adversarial training).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.finetune import FineTuneConfig
from ownmark.attacks.labels import log_probs
from ownmark.config import Preset
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, require_choice, require_non_negative, require_positive
from ownmark.models.encoder import encode_set
from ownmark.models.injected import fit_loss
from ownmark.train import Engine, fit, key_seed

SHIFT_STREAM, ADV_STREAM = 0x53484654, 0x41445654
SOK = "Lukas et al. 2022 (arXiv:2108.04974), CIFAR-10 configuration"


def victim_labelled(model: nn.Module, data: ImageSet, labels: str) -> ImageSet:
    """``data`` labelled by the victim's answers (``victim``) or as it is (``true``)."""
    if labels == "true":
        return data
    return data.relabel(encode_set(model, data).argmax(1), data.num_classes)


@dataclass(frozen=True)
class WeightShiftConfig(FineTuneConfig):
    """Shift (``shift`` x the mean filter), perturb (``noise`` x each tensor's std), then fine-tune."""

    shift: float = 1.5
    noise: float = 1.0
    labels: str = "victim"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_non_negative(self, "shift", "noise")
        require_choice(self, "labels", ("victim", "true"))


def shift_weights(model: nn.Module, shift: float, noise: float, generator: torch.Generator) -> int:
    """Shift every Conv2d's filters in place; returns how many tensors changed.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> shift_weights(ModelSpec("cnn2", 1, 10, 28).build(), 1.5, 1.0, torch.Generator().manual_seed(0))
        2
    """
    changed = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                w = module.weight
                draw = torch.randn(w.shape, generator=generator).to(w.device, w.dtype)
                w.copy_(w - shift * w.mean(0, keepdim=True) - noise * w.std() * draw)
                changed += 1
    return changed


class _Modify:
    """A copy of the victim, changed by :meth:`change`, trained on victim-labelled attacker data."""

    access = "white-box"
    group = "modification"
    families = ("classifier",)
    presets: dict = {}

    def __init__(self, config: object | None = None) -> None:
        self.config = self.config_class() if config is None else config

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        attacked, cost = copy.deepcopy(model), Cost()
        with timed(cost):
            train = victim_labelled(model, data, self.config.labels)
            epochs = self.change(attacked, train, seed, engine, cost)
            fit(attacked, train, self.config.train_config(), seed=key_seed(seed, 2), engine=engine,
                loss=fit_loss(attacked))  # fmt: skip
        cost.epochs = float(epochs + self.config.epochs)
        cost.queries = len(data) if self.config.labels == "victim" else 0
        return attacked, cost

    def change(self, attacked: nn.Module, train: ImageSet, seed: int, engine: Engine, cost: Cost) -> int:
        """Modify ``attacked`` in place before the fine-tuning; returns epochs spent."""
        raise NotImplementedError


@ATTACKS.register("weight-shift")
class WeightShift(_Modify):
    """Weight shifting: convolution filters shifted from their mean filter and perturbed, then fine-tuned.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> attacked, cost = WeightShift(WeightShiftConfig(epochs=1))(ModelSpec("cnn2", 3, 4, 16).build(),
        ...                                                           toy_images(), seed=0)
        >>> cost.epochs, cost.details["shifted_tensors"]
        (1.0, 2)
    """

    config_class = WeightShiftConfig
    presets = {"paper": Preset(WeightShiftConfig(epochs=10), SOK)}

    def change(self, attacked: nn.Module, train: ImageSet, seed: int, engine: Engine, cost: Cost) -> int:
        g = torch.Generator().manual_seed(key_seed(seed, SHIFT_STREAM))
        cost.details["shifted_tensors"] = shift_weights(attacked, self.config.shift, self.config.noise, g)
        return 0


@dataclass(frozen=True)
class RegularizationConfig(FineTuneConfig):
    """``reg_epochs`` with weight decay ``l2``, then ``epochs`` of ordinary fine-tuning."""

    l2: float = 0.1
    reg_epochs: int = 5
    labels: str = "victim"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "l2", "reg_epochs")
        require_choice(self, "labels", ("victim", "true"))


@ATTACKS.register("regularization")
class Regularization(_Modify):
    """Regularization: training under a strong L2 penalty, then fine-tuning to recover accuracy.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = RegularizationConfig(epochs=1, reg_epochs=1)
        >>> Regularization(cfg)(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)[1].epochs
        2.0
    """

    config_class = RegularizationConfig
    presets = {"paper": Preset(RegularizationConfig(l2=0.1, reg_epochs=5, epochs=10), SOK + " (fixed fine-tuning)")}

    def change(self, attacked: nn.Module, train: ImageSet, seed: int, engine: Engine, cost: Cost) -> int:
        cfg = replace(self.config.train_config(), epochs=self.config.reg_epochs, weight_decay=self.config.l2)
        fit(attacked, train, cfg, seed=key_seed(seed, 1), engine=engine, loss=fit_loss(attacked))
        cost.details["l2"] = self.config.l2
        return self.config.reg_epochs


@dataclass(frozen=True)
class AdversarialTrainingConfig(FineTuneConfig):
    """PGD radii ``eps`` (L-infinity, on [0, 1] images), step, iterations and images per epoch."""

    eps: tuple[float, ...] = (0.01, 0.1, 0.25)
    eps_step: float = 0.01
    max_iter: int = 40
    n_adv: int = 1000
    labels: str = "victim"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eps or any(not 0 < e <= 1 for e in self.eps):
            raise ConfigError(f"AdversarialTrainingConfig.eps must be radii in (0, 1], got {self.eps!r}")
        require_positive(self, "eps_step", "max_iter", "n_adv")
        require_choice(self, "labels", ("victim", "true"))


class _LogProbs(nn.Module):
    """A classifier's log-probabilities as logits (an injected model answers normalised scores)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_probs(self.model, self.model(x))


def pgd_examples(model: nn.Module, x: torch.Tensor, eps: float, cfg: AdversarialTrainingConfig) -> torch.Tensor:
    """Untargeted L-infinity PGD examples of ``x`` by IBM ART (labels: the model's own answers)."""
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        raise ConfigError("adv-train crafts examples with IBM ART; install it: pip install 'ownmark[art]'") from None
    was_training = model.training
    model.eval()
    try:
        probe = _LogProbs(model)
        classes = int(probe(x[:1]).shape[1])
        estimator = PyTorchClassifier(probe, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                      nb_classes=classes, clip_values=(0.0, 1.0), device_type="cpu")  # fmt: skip
        pgd = ProjectedGradientDescent(estimator, eps=eps, eps_step=min(cfg.eps_step, eps), max_iter=cfg.max_iter,
                                       num_random_init=0, batch_size=256, verbose=False)  # fmt: skip
        return torch.from_numpy(pgd.generate(x=x.numpy())).float()
    finally:
        model.train(was_training)


@ATTACKS.register("adv-train")
class AdversarialTraining(_Modify):
    """Adversarial training: each epoch on the attacker's data plus fresh PGD examples (IBM ART).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = AdversarialTrainingConfig(epochs=1, max_iter=2, n_adv=8, eps=(0.1,))
        >>> attacked, cost = AdversarialTraining(cfg)(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> cost.details["adversarial_images"]
        8
    """

    config_class = AdversarialTrainingConfig
    presets = {"paper": Preset(AdversarialTrainingConfig(), SOK)}

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cfg, attacked, cost = self.config, copy.deepcopy(model), Cost()
        with timed(cost):
            train = victim_labelled(model, data, cfg.labels)
            one_epoch = replace(cfg.train_config(), epochs=1)
            made = 0
            for epoch in range(cfg.epochs):
                g = torch.Generator().manual_seed(key_seed(seed, ADV_STREAM, epoch))
                idx = torch.randperm(len(train), generator=g)[: cfg.n_adv]
                adv = [pgd_examples(attacked, train.x[idx], eps, cfg) for eps in cfg.eps]
                made += sum(len(a) for a in adv)
                x = torch.cat([train.x, *adv])
                y = torch.cat([train.y, *([train.y[idx]] * len(adv))])
                fit(attacked, ImageSet(train.name, x, y, train.num_classes), one_epoch, seed=key_seed(seed, epoch),
                    engine=engine, loss=fit_loss(attacked))  # fmt: skip
        cost.epochs, cost.queries = float(cfg.epochs), len(data) if cfg.labels == "victim" else 0
        cost.details["adversarial_images"] = made // max(cfg.epochs, 1) // len(cfg.eps)
        return attacked, cost
