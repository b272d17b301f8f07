"""Reference counts for a state that several calls (nested, or in other threads) change and undo on one object."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class Holders:
    """Per-object counts of the calls holding an object (a module, a weight) in a changed state: eval mode,
    another device, another memory layout. The first call changes it and keeps how to undo that, the last
    undoes it, so a call never sees another call's undo under its own forward pass, whichever thread ends
    first.

    Example:
        >>> holders, log = Holders(), []
        >>> change = lambda: ("changed", lambda: log.append("undone"))
        >>> with holders.hold("obj", change) as outer, holders.hold("obj", change) as inner:
        ...     outer, inner, log
        ('changed', 'changed', [])
        >>> log
        ['undone']
    """

    def __init__(self) -> None:
        self._lock, self._held = threading.Lock(), {}

    @contextlib.contextmanager
    def hold(self, obj: object, change: Callable[[], tuple[Any, Callable[[], None]]]) -> Iterator[Any]:
        """Run ``change`` (it returns (state, undo)) unless a call holds ``obj`` already; yield the held
        state. The object is kept by id: it must stay alive while held (callers hold a reference)."""
        with self.hold_each([obj], lambda _obj: change()) as (state,):
            yield state

    @contextlib.contextmanager
    def hold_each(
        self, objs: Iterable[object], change: Callable[[Any], tuple[Any, Callable[[], None]]]
    ) -> Iterator[list[Any]]:
        """:meth:`hold` for several objects under one lock (``change`` gets each object not yet held); yields
        their held states in order."""
        with self._lock:
            entries = []
            for obj in objs:
                entry = self._held.get(id(obj))
                if entry is None:
                    entry = self._held[id(obj)] = [0, *change(obj), id(obj)]
                entry[0] += 1
                entries.append(entry)
        try:
            yield [entry[1] for entry in entries]
        finally:
            with self._lock:
                for entry in reversed(entries):
                    entry[0] -= 1
                    if entry[0] == 0:
                        del self._held[entry[3]]
                        entry[2]()
