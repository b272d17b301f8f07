"""StolenEncoder: steal a pre-trained encoder through the API that sells its feature vectors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.distill import fresh_surrogate
from ownmark.core import Cost
from ownmark.data import ImageSet, load_dataset, to_image_shape
from ownmark.errors import (
    BudgetExhaustedError,
    ConfigError,
    ShapeError,
    require_choice,
    require_non_negative,
    require_positive,
)
from ownmark.models import ENCODERS, MODELS, ModelSpec
from ownmark.train import Engine, TrainConfig, fit, key_seed
from ownmark.train.ssl import keyed_views
from ownmark.verify.suspect import QueryFn
from ownmark.watermarks.base import Preset

DISTANCES = ("cosine", "l2")
ORDER_STREAM, VIEW_STREAM = 0x53544F4C, 0x5356494557  # key the query order and the augmented views apart


@dataclass(frozen=True)
class StolenEncoderConfig:
    """How many images the attacker buys, the paper's loss, and how the stolen encoder trains.

    The CPU default trains with Adam (lr 1e-3): the paper's SGD at lr 1e-3 needs far more than its
    100 epochs to converge on a few hundred images at this scale (the ``paper`` preset keeps it).

    Args:
        budget: most images sent to the API; each surrogate image is sent once (its augmented
            views reuse its answer), so this is also the number of surrogate images used.
        lambda_value: weight of the augmentation term (paper: 20); 0 is the no-augmentation baseline.
        k: augmented views per image and step (paper: 1).
        distance: ``cosine`` (1 - cosine similarity) or ``l2`` (Euclidean distance) between the
            L2-normalised features.
        arch: the stolen encoder's architecture (an encoder name ``ModelSpec`` accepts); None takes
            the victim's when it is a module. Its output dimension always equals the victim's.
        query_batch: images per API call.
        source: empty to query with the attacker's split; else a dataset name (``digits``,
            ``photos``, ...) whose images, converted to the victim's input shape, are sent instead.
    """

    budget: int = 250
    lambda_value: float = 20.0
    k: int = 1
    distance: str = "cosine"
    arch: str | None = None
    epochs: int = 50  # 250 queries, conv4 on mnist5k: ~10 s here
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    query_batch: int = 256
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("budget", "k", "epochs", "batch_size", "query_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"StolenEncoderConfig.{name} must be a positive int, got {value!r}")
        require_non_negative(self, "lambda_value", "momentum", "weight_decay")
        require_positive(self, "lr")
        require_choice(self, "distance", DISTANCES)
        require_choice(self, "optimizer", ("sgd", "adam"))
        if self.arch is not None and (not isinstance(self.arch, str) or not self.arch):
            raise ConfigError(f"StolenEncoderConfig.arch must be an architecture name or None, got {self.arch!r}")
        if self.arch is not None and not self.arch.startswith(("tv:", "timm:")) and self.arch not in MODELS.names():
            ENCODERS.get(self.arch)  # an unknown name fails here, before any query is spent

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            self.epochs, self.batch_size, self.lr, self.optimizer, momentum=self.momentum,
            weight_decay=self.weight_decay,
        )  # fmt: skip


STOLEN_ENCODER_PRESETS = {
    "paper": Preset(
        StolenEncoderConfig(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=100),
        source="Liu et al. 2022, public code (train_surrogate_encoder.py: SGD lr 1e-3, momentum 0.9, weight decay "
        "5e-4; lambda 20, k 1, cosine distance and 100 epochs from the paper's setup)",
    ),
}


def view_augmenter(channels: int) -> nn.Module:
    """The paper's views: flip, colour jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, no crop;
    for grey digits (not mirror-symmetric) a small affine warp and brightness/contrast jitter."""
    import kornia.augmentation as K

    if channels == 3:
        return nn.Sequential(
            K.RandomHorizontalFlip(), K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), K.RandomGrayscale(p=0.2)
        )
    return nn.Sequential(K.RandomAffine(degrees=10.0, translate=(0.1, 0.1)), K.ColorJitter(0.4, 0.4, p=0.8))


def surrogate_images(data: ImageSet, n: int, seed: int) -> ImageSet:
    """The ``n`` images the attack of ``seed`` sends: a seeded random choice (the set may be sorted)."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(key_seed(seed, ORDER_STREAM)))
    return data.subset(order[:n])


def steal_loss(
    clean: torch.Tensor, views: list[torch.Tensor], target: torch.Tensor, lambda_value: float, distance: str = "cosine"
) -> torch.Tensor:
    """The StolenEncoder objective d(hs(x), ht(x)) + lambda / k * sum_j d(hs(A_j(x)), ht(x)).

    Both sides are L2-normalised; ``target`` (N, D) is the API's answer for the clean images,
    reused for every view. The paper's code sums the L2 distance over the batch; here both
    distances are batch means (under SGD a sum equals a batch-size times larger step).

    Example:
        >>> t = F.normalize(torch.tensor([[1.0, 0.0]]), dim=1)
        >>> round(steal_loss(torch.tensor([[2.0, 0.0]]), [torch.tensor([[0.0, 1.0]])], t, 20.0).item(), 4)
        20.0
    """
    if distance not in DISTANCES:
        raise ConfigError(f"steal_loss distance must be one of {list(DISTANCES)}, got {distance!r}")

    def d(a: torch.Tensor) -> torch.Tensor:
        a = F.normalize(a, dim=1)
        return (1 - (a * target).sum(1)).mean() if distance == "cosine" else (a - target).norm(dim=1).mean()

    loss = d(clean)
    if views and lambda_value > 0:
        loss = loss + lambda_value * torch.stack([d(v) for v in views]).mean()
    return loss


@ATTACKS.register("stolenencoder")
class StolenEncoder:
    """Steal an encoder through its feature API: train an own encoder to answer like it.

    The attacker sends up to ``budget`` surrogate images (a seeded random choice of its split, or
    of another dataset) once each, L2-normalises the returned features, and trains a freshly
    initialised encoder of its chosen architecture so that its normalised features of each clean
    image and of ``k`` augmented views of it are close to the target's answer for the clean image.
    The augmented views cost no queries. The victim is a module, which is served through
    :class:`~ownmark.serve.api.ModelAPI` (features, with the budget) and never read otherwise, or
    any query function ``x -> features`` (a ``ModelAPI`` with a defense, a ``RemoteModel``, a
    function); then ``arch`` must be named. A budget the API cannot honour is refused before the
    first query, and an API that stops answering mid-way raises BudgetExhaustedError saying so.

    Reference:
        Liu, Jia, Liu, Gong, "StolenEncoder: Stealing Pre-trained Encoders in Self-supervised
        Learning", ACM CCS 2022, arXiv:2201.05889.
    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> victim = ModelSpec("conv4", 3, 16, 16, family="encoder").build()
        >>> stolen, cost = StolenEncoder(StolenEncoderConfig(budget=40, epochs=1))(victim, toy_images(), seed=0)
        >>> cost.queries, stolen(torch.rand(2, 3, 16, 16)).shape
        (40, torch.Size([2, 16]))
    """

    access = "black-box"
    group = "extraction"
    families = ("encoder",)
    config_class = StolenEncoderConfig
    presets = STOLEN_ENCODER_PRESETS

    def __init__(self, config: StolenEncoderConfig = StolenEncoderConfig()) -> None:
        self.config = config

    def __call__(
        self, victim: nn.Module | QueryFn, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        cfg = self.config
        if not isinstance(data, ImageSet):
            raise TypeError(f"StolenEncoder needs the attacker's images as an ImageSet, got {type(data).__name__}")
        if cfg.source:  # another distribution: its labels are never used
            other = load_dataset(cfg.source)
            data = ImageSet(cfg.source, to_image_shape(other.x, data.shape), torch.zeros(len(other), dtype=torch.long),
                            num_classes=data.num_classes)  # fmt: skip
        spec = self._check_before_querying(victim, data)
        n = min(cfg.budget, len(data))
        if isinstance(victim, nn.Module):
            from ownmark.serve.api import ModelAPI  # serving sits above attacks: imported on use

            query: QueryFn = ModelAPI(victim, kind="features", budget=n, seed=seed)
        else:
            query = victim
        remaining = getattr(query, "remaining", None)
        if isinstance(remaining, int) and remaining < n:
            raise BudgetExhaustedError(
                f"the victim's API has {remaining} images left but StolenEncoderConfig.budget asks for {n}; "
                f"set budget={remaining} or less (nothing was queried)"
            )
        cost = Cost()
        with timed(cost):
            x = surrogate_images(data, n, seed).x
            targets = F.normalize(self._ask(query, x).float(), dim=1)
            cost.queries = len(x)
            stolen = fresh_surrogate(self._stolen_spec(spec, data, targets), seed)
            augment = view_augmenter(data.shape[0])

            def loss(forward: nn.Module, xb: torch.Tensor, idx: torch.Tensor, step: int) -> torch.Tensor:
                k = cfg.k if cfg.lambda_value > 0 else 0
                views = keyed_views(augment, xb, key_seed(seed, step, VIEW_STREAM), k)
                feats = forward(torch.cat([xb, *views])).chunk(1 + len(views))
                return steal_loss(feats[0], list(feats[1:]), targets[idx.cpu()].to(xb.device), cfg.lambda_value,
                                  cfg.distance)  # fmt: skip

            indexed = ImageSet("queried", x, torch.arange(len(x)), num_classes=len(x))
            fit(stolen, indexed, cfg.train_config(), seed=seed, engine=engine, loss=loss)
        views_per_image = 1 + (cfg.k if cfg.lambda_value > 0 else 0)
        cost.epochs = float(cfg.epochs)
        cost.details.update(
            arch=stolen.spec.arch, lambda_value=cfg.lambda_value, k=cfg.k, distance=cfg.distance,
            images_trained=len(x) * views_per_image * cfg.epochs, source=cfg.source or data.name,
        )  # fmt: skip
        return stolen.eval(), cost

    def _ask(self, query: QueryFn, x: torch.Tensor) -> torch.Tensor:
        """Send ``x`` in batches of ``query_batch``, every image once; (N, D) features back."""
        answers = []
        for i in range(0, len(x), self.config.query_batch):
            batch = x[i : i + self.config.query_batch]
            try:
                with torch.no_grad():
                    answer = torch.as_tensor(query(batch)).detach().cpu()
            except BudgetExhaustedError as err:
                raise BudgetExhaustedError(
                    f"the victim's API stopped answering after {i} of {len(x)} images ({err}); "
                    f"set StolenEncoderConfig.budget={i} or less, or buy more queries"
                ) from err
            if answer.ndim != 2 or len(answer) != len(batch) or not answer.is_floating_point():
                raise ShapeError(
                    f"the query function answered {len(batch)} images with a {answer.dtype} tensor of shape "
                    f"{tuple(answer.shape)}; StolenEncoder needs (N, D) float features (serve kind='features')"
                )
            answers.append(answer)
        return torch.cat(answers)

    def _check_before_querying(self, victim: nn.Module | QueryFn, data: ImageSet) -> ModelSpec | None:
        """Every check that needs no answers, so a mistake costs no queries; returns the victim's spec."""
        if not callable(victim):
            raise TypeError(f"StolenEncoder needs a victim module or query function, got {type(victim).__name__}")
        if len(data) == 0:
            raise ShapeError("StolenEncoder got no surrogate images; it needs images to query the victim with")
        shape = getattr(victim, "input_shape", None)
        spec = getattr(victim, "spec", None) if isinstance(victim, nn.Module) else None
        if isinstance(spec, ModelSpec):
            shape = spec.input_shape
        if shape is not None and tuple(shape) != data.shape:
            raise ShapeError(
                f"StolenEncoder got surrogate images of shape {data.shape} but the victim takes {tuple(shape)}; "
                "resize them to the victim's input shape (or set source= to a dataset, which is converted)"
            )
        if isinstance(spec, ModelSpec):
            return spec
        if self.config.arch is None:
            raise ConfigError(
                "StolenEncoderConfig.arch is None (the victim's architecture) but the victim is a query function; "
                "name the stolen encoder's architecture, e.g. arch='conv4'"
            )
        if data.shape[1] != data.shape[2]:
            raise ShapeError(f"StolenEncoder builds square-input encoders, got surrogate images of {data.shape}")
        return None

    def _stolen_spec(self, spec: ModelSpec | None, data: ImageSet, targets: torch.Tensor) -> ModelSpec:
        """The victim's spec with ``arch`` swapped in; without one, an encoder as wide as the answers."""
        arch = self.config.arch
        if spec is not None:
            if spec.num_classes != targets.shape[1]:
                raise ShapeError(
                    f"the victim's spec says {spec.num_classes} features but it answered {targets.shape[1]}"
                )
            return spec if arch is None else dataclasses.replace(spec, arch=arch)
        c, size, _ = data.shape
        return ModelSpec(arch, c, int(targets.shape[1]), size, family="encoder")
