"""Neural Cleanse: reverse-engineer a trigger for each class, then unlearn the smallest one.

For every class t, a mask ``m`` (one value per pixel) and a pattern ``p`` (per pixel and channel) are
optimised, with the victim frozen, so that attacker images of other classes stamped as
``x' = sigmoid(m) * sigmoid(p) + (1 - sigmoid(m)) * x`` are answered t, at the least mask area:
loss = cross-entropy(f(x'), t) + ``lam`` * sum(sigmoid(m)), Adam (lr 0.1, betas 0.5 / 0.9). A class
that a small trigger reaches from everywhere is the backdoor's (or the watermark's) label: the
anomaly index of the smallest mask, (median - norm) / (1.4826 * MAD) over the classes' L1 norms, above
2 flags it. Unlearning stamps the smallest class's trigger on a share (``stamp_share``) of the
attacker's images, keeps their true labels, and fine-tunes all layers, so the model learns to ignore
the trigger. Settings as in the SoK's CIFAR-10 configuration where it has them (lam 0.01, 5
unlearning epochs); the optimisation steps per class are ownmark's CPU budget.

Reference:
    Wang, Yao, Shan, Li, Viswanath, Zheng, Zhao, "Neural Cleanse: Identifying and Mitigating Backdoor
    Attacks in Neural Networks", IEEE S&P 2019, DOI 10.1109/SP.2019.00031; Lukas et al., IEEE S&P 2022,
    arXiv:2108.04974 (Neural Cleanse as a watermark removal attack).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.finetune import FineTuneConfig
from ownmark.attacks.labels import log_probs
from ownmark.config import Preset
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, require_in_range, require_positive
from ownmark.models.injected import fit_loss
from ownmark.models.layout import cpu_channels_last
from ownmark.train import Engine, fit, key_seed

CLEANSE_STREAM = 0x434C4E53


@dataclass(frozen=True)
class NeuralCleanseConfig(FineTuneConfig):
    """Trigger search (``steps`` Adam steps of ``search_batch`` images per class, mask weight ``lam``)
    and unlearning (``stamp_share`` of the attacker's images stamped, ``epochs`` of fine-tuning)."""

    steps: int = 150
    search_batch: int = 64
    lam: float = 0.01
    search_lr: float = 0.1
    stamp_share: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "steps", "search_batch", "lam", "search_lr")
        require_in_range(self, "stamp_share", 0.0, 1.0, low_open=True)


@dataclass
class Trigger:
    """A reverse-engineered trigger: mask (1, H, W) and pattern (C, H, W), both in [0, 1]."""

    target: int
    mask: torch.Tensor
    pattern: torch.Tensor
    success: float  # share of other classes' images the trigger sends to ``target``

    @property
    def norm(self) -> float:
        return float(self.mask.sum())

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask * self.pattern + (1 - self.mask) * x


def reverse_engineer_all(model: nn.Module, data: ImageSet, cfg: NeuralCleanseConfig, seed: int) -> list[Trigger]:
    """One reverse-engineered trigger per class, searched on a frozen copy of ``model`` (left as it is)."""
    frozen = copy.deepcopy(model).eval()
    for param in frozen.parameters():
        param.requires_grad_(False)
    with cpu_channels_last(frozen):  # the searches backpropagate through its convolutions (a copy)
        return [reverse_engineer(frozen, data, t, cfg, seed) for t in range(data.num_classes)]


def reverse_engineer(model: nn.Module, data: ImageSet, target: int, cfg: NeuralCleanseConfig, seed: int) -> Trigger:
    """The smallest trigger found that sends ``data``'s images of other classes to ``target``."""
    others = data.x[data.y != target]
    if len(others) == 0:
        raise ConfigError(f"no attacker image outside class {target} to reverse-engineer a trigger from")
    c, h, w = data.shape
    g = torch.Generator().manual_seed(key_seed(seed, CLEANSE_STREAM, target))
    m = torch.zeros(1, h, w).uniform_(-2.0, 0.0, generator=g).requires_grad_()
    p = torch.zeros(c, h, w).uniform_(-1.0, 1.0, generator=g).requires_grad_()
    opt = torch.optim.Adam([m, p], lr=cfg.search_lr, betas=(0.5, 0.9))
    labels = torch.full((cfg.search_batch,), target)
    model.eval()
    for _ in range(cfg.steps):
        idx = torch.randint(len(others), (min(cfg.search_batch, len(others)),), generator=g)
        mask, pattern = torch.sigmoid(m), torch.sigmoid(p)
        stamped = mask * pattern + (1 - mask) * others[idx]
        loss = F.nll_loss(log_probs(model, model(stamped)), labels[: len(idx)]) + cfg.lam * mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        trigger = Trigger(target, torch.sigmoid(m).detach(), torch.sigmoid(p).detach(), 0.0)
        probe = others[:500]
        trigger.success = float((model(trigger.stamp(probe)).argmax(1) == target).float().mean())
    return trigger


def anomaly_index(norms: list[float]) -> float:
    """How far below the median the smallest norm lies, in robust standard deviations (MAD x 1.4826).

    Example:
        >>> round(anomaly_index([10.0, 11.0, 9.0, 10.5, 2.0]), 2)
        5.4
    """
    t = torch.tensor(norms)
    median = t.median()
    mad = (t - median).abs().median() * 1.4826
    return float((median - t.min()) / mad) if mad > 0 else 0.0


@ATTACKS.register("neural-cleanse")
class NeuralCleanse:
    """Neural Cleanse: reverse-engineer a trigger per class, unlearn the smallest (white-box, labelled data).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> cfg = NeuralCleanseConfig(steps=2, search_batch=8, epochs=1)
        >>> attacked, cost = NeuralCleanse(cfg)(ModelSpec("cnn2", 3, 4, 16).build(), toy_images(), seed=0)
        >>> len(cost.details["norms"]), cost.details["target"] in range(4)
        (4, True)
    """

    access = "white-box"
    group = "modification"
    families = ("classifier",)
    config_class = NeuralCleanseConfig
    presets = {"paper": Preset(NeuralCleanseConfig(lam=0.01, epochs=5, steps=500), "Wang et al. 2019 / Lukas et al. "
                               "2022 CIFAR-10 unlearning configuration (lambda 0.01, 5 epochs)")}  # fmt: skip

    def __init__(self, config: NeuralCleanseConfig = NeuralCleanseConfig()) -> None:
        self.config = config

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cfg, attacked, cost = self.config, copy.deepcopy(model), Cost()
        with timed(cost):
            triggers = reverse_engineer_all(model, data, cfg, seed)
            best = min(triggers, key=lambda tr: tr.norm)
            g = torch.Generator().manual_seed(key_seed(seed, CLEANSE_STREAM))
            idx = torch.randperm(len(data), generator=g)[: max(1, round(cfg.stamp_share * len(data)))]
            x = data.x.clone()
            x[idx] = best.stamp(x[idx])
            fit(attacked, ImageSet(data.name, x, data.y, data.num_classes), cfg.train_config(), seed=seed,
                engine=engine, loss=fit_loss(attacked))  # fmt: skip
        norms = [round(t.norm, 2) for t in triggers]
        cost.epochs = float(cfg.epochs)
        cost.details = {"target": best.target, "norms": norms, "anomaly_index": round(anomaly_index(norms), 3),
                        "trigger_success": round(best.success, 3), "stamped": len(idx)}  # fmt: skip
        return attacked, cost
