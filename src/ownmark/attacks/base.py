"""What every attack shares: the registry and timing of the adversary's cost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from ownmark.core import Cost
from ownmark.registry import Registry

ATTACKS: Registry = Registry("attack")


@contextmanager
def timed(cost: Cost) -> Iterator[Cost]:
    """Add the wall time of the block to ``cost.seconds``."""
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost.seconds += time.perf_counter() - start
