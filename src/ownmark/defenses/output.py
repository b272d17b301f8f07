"""Perturbations a model API applies to every answer it returns (features or scores).

The StolenEncoder paper (Liu et al., CCS 2022, arXiv:2201.05889, Sec. 6) tries three such
defenses against encoder stealing: additive Gaussian noise, rounding and top-k. They are written
once here and applied by the in-process :class:`~ownmark.serve.api.ModelAPI` and by the HTTP
service alike. A defense is parsed from a short spec: ``none``, ``noise:0.5``, ``round:1``,
``topk:5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from ownmark.errors import ConfigError
from ownmark.registry import Registry

DEFENSES: Registry = Registry("defense")


class Defense(Protocol):
    """Turns a batch of answers (N, D) into the perturbed answers the API returns."""

    spec: str

    def __call__(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


@DEFENSES.register("none")
@dataclass(frozen=True)
class NoDefense:
    """Answers are returned as computed."""

    def __call__(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return out

    @property
    def spec(self) -> str:
        return "none"


@DEFENSES.register("noise")
@dataclass(frozen=True)
class Noise:
    """Additive Gaussian noise, scaled to each answer's own spread.

    A fixed standard deviation means nothing across models: 0.5 is twice the signal of a unit-
    norm 128-d feature per component, and nothing for unnormalised logits. Here ``std`` is relative
    to the answer's root mean square, ``std * ||out_i|| / sqrt(D)``, so ``noise:1`` adds noise as
    large as the signal in every component. ``absolute=True`` takes ``std`` as is (the paper's 0.5).

    Example:
        >>> out = torch.ones(2, 4)
        >>> (Noise(0.0)(out, torch.Generator().manual_seed(0)) == out).all().item()
        True
    """

    std: float
    absolute: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.std, bool) or not isinstance(self.std, (int, float)) or not 0 <= self.std < math.inf:
            raise ConfigError(f"noise std must be a finite number >= 0, got {self.std!r}; e.g. noise:0.5")

    def __call__(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = out.float()
        scale = torch.tensor(float(self.std))
        if not self.absolute:
            scale = self.std * out.flatten(1).pow(2).mean(1).sqrt().view(-1, *([1] * (out.ndim - 1)))
        return out + scale * torch.randn(out.shape, generator=generator)

    @property
    def spec(self) -> str:
        return f"noise:{self.std:g}" + (":abs" if self.absolute else "")


@DEFENSES.register("round")
@dataclass(frozen=True)
class Rounding:
    """Round every entry to ``decimals`` decimal places.

    Example:
        >>> Rounding(1)(torch.tensor([[0.14, 0.26]]), torch.Generator()).tolist()
        [[0.10000000149011612, 0.30000001192092896]]
    """

    decimals: int

    def __post_init__(self) -> None:
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or self.decimals < 0:
            raise ConfigError(f"round needs a non-negative int of decimals, got {self.decimals!r}")

    def __call__(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.round(out.float(), decimals=self.decimals)

    @property
    def spec(self) -> str:
        return f"round:{self.decimals}"


@DEFENSES.register("topk")
@dataclass(frozen=True)
class TopK:
    """Keep the ``k`` largest entries of each answer and zero the rest.

    Example:
        >>> TopK(2)(torch.tensor([[0.1, 0.5, 0.3, 0.2]]), torch.Generator()).tolist()
        [[0.0, 0.5, 0.30000001192092896, 0.0]]
    """

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"topk needs a positive int k, got {self.k!r}")

    def __call__(self, out: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flat = out.float().flatten(1)
        if self.k >= flat.shape[1]:
            return out.float()
        idx = flat.topk(self.k, dim=1).indices
        kept = torch.zeros_like(flat).scatter(1, idx, flat.gather(1, idx))
        return kept.view_as(out)

    @property
    def spec(self) -> str:
        return f"topk:{self.k}"


def parse_defense(text: str | None) -> Defense:
    """A defense from its spec: ``none``, ``noise:STD[:abs]``, ``round:DECIMALS`` or ``topk:K``.

    Example:
        >>> parse_defense("topk:5"), parse_defense("noise:0.5").spec
        (TopK(k=5), 'noise:0.5')
    """
    if text is None or text.strip() in ("", "none"):
        return NoDefense()
    name, _, rest = text.strip().partition(":")
    cls = DEFENSES.get(name)
    parts = [p for p in rest.split(":") if p]
    usage = "use none, noise:STD[:abs], round:DECIMALS or topk:K"
    try:
        if cls is Noise and len(parts) in (1, 2) and parts[1:] in ([], ["abs"]):
            return Noise(float(parts[0]), absolute=len(parts) == 2)
        if cls in (Rounding, TopK) and len(parts) == 1:
            return cls(int(parts[0]))
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"bad defense {text!r}: {err}; {usage}") from None
    raise ConfigError(f"bad defense {text!r}; {usage}")
