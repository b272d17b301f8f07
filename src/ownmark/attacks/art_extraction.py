"""Knockoff Nets through IBM ART: extraction by the field's maintained implementation.

ownmark's own extraction is :class:`~ownmark.attacks.distill.Distill`; this unit runs ART's
``KnockoffNets`` instead, behind ownmark's Attack interface, so a study can show that a verdict does
not hinge on ownmark's code: the victim is seen only through a query function (ART's
``BlackBoxClassifier``), the thief is a fresh ownmark model trained by ART's ``PyTorchClassifier``.
``strategy="random"`` queries a random subset of the attacker's images; ``"adaptive"`` lets ART's
bandit choose, class by class, which images to query (it needs the attacker's labels). Optional:
``pip install 'ownmark[art]'`` (the ``dev`` extra has it).

Reference:
    Orekondy, Schiele, Fritz, "Knockoff Nets: Stealing Functionality of Black-Box Models", CVPR 2019,
    arXiv:1812.02766; Nicolae et al., "Adversarial Robustness Toolbox v1.0.0", arXiv:1807.01069;
    Lukas et al., IEEE S&P 2022, arXiv:2108.04974 (Knockoff Nets among the extraction attacks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.distill import fresh_surrogate, make_query
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError, ShapeError, require_choice, require_positive
from ownmark.models import ModelSpec
from ownmark.train import Engine, key_seed
from ownmark.verify.suspect import QueryFn

ART_STREAM = 0x41525421


@dataclass(frozen=True)
class KnockoffConfig:
    """ART KnockoffNets settings: images stolen (queries), sampling strategy, what the API answers,
    and how the thief trains (ART's loop, Adam)."""

    budget: int = 1000
    strategy: str = "random"
    output: str = "probs"
    arch: str | None = None
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        require_choice(self, "strategy", ("random", "adaptive"))
        require_choice(self, "output", ("probs", "labels"))
        for name in ("budget", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"KnockoffConfig.{name} must be a positive int, got {value!r}")
        require_positive(self, "lr")


def _art():
    try:
        from art.attacks.extraction import KnockoffNets
        from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier
    except ImportError:
        raise ConfigError("knockoff runs IBM ART's KnockoffNets; install it: pip install 'ownmark[art]'") from None
    return KnockoffNets, BlackBoxClassifier, PyTorchClassifier


@ATTACKS.register("knockoff")
class Knockoff:
    """Knockoff Nets (random or adaptive sampling) by IBM ART against the victim's API.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> victim = ModelSpec("cnn2", 3, 4, 16).build()
        >>> stolen, cost = Knockoff(KnockoffConfig(budget=32, epochs=1))(victim, toy_images(), seed=0)
        >>> cost.queries, stolen(torch.rand(2, 3, 16, 16)).shape
        (32, torch.Size([2, 4]))
    """

    access = "black-box"
    group = "extraction"
    families = ("classifier",)
    config_class = KnockoffConfig
    presets: dict = {}

    def __init__(self, config: KnockoffConfig = KnockoffConfig()) -> None:
        self.config = config

    def __call__(
        self, victim: nn.Module | QueryFn, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        knockoff_nets, black_box, pytorch_classifier = _art()
        cfg = self.config
        spec = getattr(victim, "spec", None)
        if not isinstance(spec, ModelSpec):
            if cfg.arch is None:
                raise ConfigError("the victim carries no ModelSpec; name the thief's architecture, e.g. arch='cnn2'")
            spec = ModelSpec(cfg.arch, data.shape[0], data.num_classes, data.shape[1])
        elif cfg.arch is not None:
            spec = ModelSpec(cfg.arch, *spec.input_shape[:1], spec.num_classes, spec.input_shape[1])
        if tuple(data.shape) != tuple(spec.input_shape):
            raise ShapeError(f"attacker images of shape {data.shape} but the victim takes {spec.input_shape}")
        query = make_query(victim, cfg.output) if isinstance(victim, nn.Module) else victim
        k, asked = spec.num_classes, [0]

        def predict(x: np.ndarray) -> np.ndarray:
            asked[0] += len(x)
            out = torch.as_tensor(query(torch.from_numpy(x).float())).detach().cpu()
            return (nn.functional.one_hot(out.long(), k).float() if out.ndim == 1 else out.float()).numpy()

        cost = Cost()
        with timed(cost), torch.random.fork_rng(devices=[]):
            state = np.random.get_state()
            np.random.seed(key_seed(seed, ART_STREAM) % 2**32)
            torch.manual_seed(key_seed(seed, ART_STREAM))
            try:
                thief = fresh_surrogate(spec, seed)
                wrapped = pytorch_classifier(
                    thief, loss=nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(thief.parameters(), lr=cfg.lr),
                    input_shape=tuple(spec.input_shape), nb_classes=k, clip_values=(0.0, 1.0), device_type="cpu",
                )  # fmt: skip
                api = black_box(predict, tuple(spec.input_shape), k, clip_values=(0.0, 1.0))
                attack = knockoff_nets(
                    api, batch_size_fit=cfg.batch_size, batch_size_query=256, nb_epochs=cfg.epochs,
                    nb_stolen=min(cfg.budget, len(data)), sampling_strategy=cfg.strategy,
                    use_probability=cfg.output == "probs", verbose=False,
                )  # fmt: skip
                labels = nn.functional.one_hot(data.y, data.num_classes).numpy() if cfg.strategy == "adaptive" else None
                attack.extract(data.x.numpy(), labels, thieved_classifier=wrapped)
            finally:
                np.random.set_state(state)
        cost.queries, cost.epochs = asked[0], float(cfg.epochs)
        cost.details.update(library="adversarial-robustness-toolbox", strategy=cfg.strategy, output=cfg.output)
        return thief.eval(), cost
