"""One small Registry class for schemes, attacks, models and datasets."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from ownmark.errors import RegistryError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; lookups of unknown names suggest close matches.

    Example:
        >>> R = Registry("toy")
        >>> @R.register("one")
        ... def one(): return 1
        >>> R.get("one")()
        1
        >>> R.names()
        ['one']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that files ``obj`` under ``name``; a second registration of a name fails."""
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")

        def add(obj: T) -> T:
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered as ``name``; UnknownNameError with suggestions otherwise."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise UnknownNameError(f"no {self.kind} named {name!r}; {hint}known: {', '.join(self.names())}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)
