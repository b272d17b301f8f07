"""The model API in process: what a black-box attacker or verifier can ask of a model.

One interface for every family: images (N, C, H, W) in [0, 1] go in; labels, probabilities,
logits, feature vectors or output images come out. The API counts every image it answers,
refuses a batch that would exceed its budget (so an attacker never gets one query more than
allowed), and applies the configured output defense. The HTTP service puts exactly this object on
the wire, and its client has the same call signature, so attacks and verification run unchanged
against either.
"""

from __future__ import annotations

import torch
from torch import nn

from ownmark.defenses import Defense, NoDefense
from ownmark.errors import BudgetExhaustedError, ConfigError, ShapeError, check_images
from ownmark.train import key_seed

KINDS = ("labels", "probs", "logits", "features", "images")
NOISE_STREAM = 0x4E4F4953


def default_kind(model: nn.Module) -> str:
    """What a model's API returns unless told otherwise: its family's first kind (probabilities,
    features or images; probabilities for a foreign module)."""
    from ownmark.families import family_of

    return family_of(model).default_kind


class ModelAPI:
    """A model behind an API: answers batches of images, counts queries, enforces a budget.

    Args:
        model: the served model (run in eval mode without gradients; its mode is restored).
        kind: what is returned; one of ``KINDS`` (default from the model's family). Defenses
            apply to probabilities, logits and features; labels and images are returned as is.
        budget: most images this API answers in total; None for no limit.
        defense: output perturbation applied to every answer.
        seed: seeds the defense's noise, one generator per API, so answers are reproducible.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> api = ModelAPI(ModelSpec("cnn2", 1, 3, 8).build(), budget=5)
        >>> api(torch.rand(4, 1, 8, 8)).shape, api.queries, api.remaining
        (torch.Size([4, 3]), 4, 1)
    """

    def __init__(
        self,
        model: nn.Module,
        kind: str | None = None,
        *,
        budget: int | None = None,
        defense: Defense | None = None,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"ModelAPI serves an nn.Module, got {type(model).__name__}")
        kind = kind or default_kind(model)
        if kind not in KINDS:
            raise ConfigError(f"ModelAPI kind must be one of {list(KINDS)}, got {kind!r}")
        if getattr(getattr(model, "spec", None), "family", None) is not None:
            from ownmark.families import family_of

            family = family_of(model)
            if kind not in family.serve_kinds:
                raise ConfigError(
                    f"a {family.name} cannot answer {kind!r}; its API answers {' or '.join(family.serve_kinds)} "
                    f"(--kind {family.default_kind}, or leave --kind out)"
                )
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
            raise ConfigError(f"ModelAPI budget must be a non-negative int or None, got {budget!r}")
        self.model, self.kind, self.budget = model, kind, budget
        self.defense = defense or NoDefense()
        self.batch_size, self.queries = batch_size, 0
        self.generator = torch.Generator().manual_seed(key_seed(seed, NOISE_STREAM))
        spec = getattr(model, "spec", None)
        self.input_shape: tuple[int, ...] | None = tuple(spec.input_shape) if spec is not None else None

    @property
    def remaining(self) -> int | None:
        """Images still answerable, or None without a budget."""
        return None if self.budget is None else self.budget - self.queries

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ShapeError unless ``x`` is a finite float batch in [0, 1] of the model's input shape."""
        check_images("the query", x)
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(f"the query's images are {tuple(x.shape[1:])} but the model takes {self.input_shape}")
        if not torch.isfinite(x).all():
            raise ShapeError("the query holds NaN or infinite pixels; send images in [0, 1]")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ShapeError(f"the query's pixels span [{x.min():.3g}, {x.max():.3g}]; send images in [0, 1]")

    def charge(self, n: int) -> None:
        """Count ``n`` images, or raise BudgetExhaustedError (counting nothing) if they exceed the budget."""
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExhaustedError(
                f"query budget exhausted: {self.queries} of {self.budget} images answered, a batch of {n} "
                f"exceeds the {self.budget - self.queries} left"
            )
        self.queries += n

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        self.charge(len(x))
        return self.answer(x)

    def answer(self, x: torch.Tensor) -> torch.Tensor:
        """The (defended) answers for a checked, charged batch."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = torch.cat([self.model(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)])
        finally:
            self.model.train(was_training)
        if self.kind == "labels":
            return out.argmax(1)
        if self.kind == "images":
            return out.clamp(0, 1)
        if self.kind == "probs":
            out = out.softmax(1)
        return self.defense(out, self.generator)
