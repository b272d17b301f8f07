"""What every attack shares: the registry and timing of the adversary's cost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from ownmark.core import Cost
from ownmark.registry import Registry

ATTACKS: Registry = Registry("attack")

# Every attack names its group (class attribute ``group``), after the SoK of Lukas et al. (IEEE S&P 2022,
# arXiv:2108.04974): what the thief does to the queries or answers (preprocessing), to the model's
# weights (modification), or a new model trained from the victim's answers (extraction); chains of
# them (combined); and attacks that use knowledge of one scheme (adaptive). The report's heat-map rows.
GROUPS = ("preprocessing", "modification", "extraction", "combined", "adaptive")


@contextmanager
def timed(cost: Cost) -> Iterator[Cost]:
    """Add the wall time of the block to ``cost.seconds``."""
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds += time.perf_counter() - start
