"""The small value types that travel between schemes, attacks and verification (defined in
:mod:`ownmark.types`; this module keeps the names importable from here)."""

from __future__ import annotations

from ownmark.types import Cost, Evidence, Key

__all__ = ["Cost", "Evidence", "Key"]
