"""The types every unit speaks: values (Key, Evidence, Cost, Verdict, Splits) and the protocols of the
units (Scheme, Attack, Metric, and Family in :mod:`ownmark.families.base`).

A new unit implements one protocol and registers itself; the CLI, the bench and the API use nothing
beyond these members.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ownmark.core import Cost, Evidence, Key
from ownmark.data.splits import Splits
from ownmark.verify.verdict import Verdict

if TYPE_CHECKING:
    from torch import nn

    from ownmark.config import Preset


class Scheme(Protocol):
    """A watermarking method: ``embed`` makes a marked model and a key, ``detect`` measures a suspect."""

    name: ClassVar[str]
    family: ClassVar[str]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Preset]]

    def embed(self, model: nn.Module, data: Any, *, seed: int, engine: Any = ...) -> tuple[nn.Module, Key]: ...

    def detect(self, suspect: Any, key: Key, *, p0: float | None = None) -> Evidence: ...


class Attack(Protocol):
    """A removal or extraction attack: a copy of the victim (or one stolen through its API) and its cost."""

    access: ClassVar[str]  # "white-box" or "black-box"
    families: ClassVar[tuple[str, ...]]
    config_class: ClassVar[type]
    presets: ClassVar[dict[str, Preset]]

    def __call__(self, model: Any, data: Any, *, seed: int, engine: Any = ...) -> tuple[nn.Module, Cost]: ...


class Metric(Protocol):
    """A measurement of a model on a split (:mod:`ownmark.metrics`)."""

    name: ClassVar[str]
    families: ClassVar[tuple[str, ...]]
    needs_reference: ClassVar[bool]

    def __call__(self, model: Any, splits: Any, *, reference: Any = None, seed: int = 0,
                 shots: int | None = None) -> float: ...  # fmt: skip


__all__ = ["Attack", "Cost", "Evidence", "Key", "Metric", "Scheme", "Splits", "Verdict"]
