"""Removal and extraction attacks; importing this package registers every attack."""

from ownmark.attacks import finetune, prune  # noqa: F401  (registers)
from ownmark.attacks.base import ATTACKS, timed
from ownmark.attacks.finetune import FineTune, FineTuneConfig
from ownmark.attacks.prune import Prune, PruneConfig, global_l1_prune

__all__ = ["ATTACKS", "FineTune", "FineTuneConfig", "Prune", "PruneConfig", "global_l1_prune", "timed"]
