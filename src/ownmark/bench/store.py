"""The results store: one row per finished cell, in SQLite, safe against kills.

A cell's row is written in one transaction when the cell ends, under a primary key that names
the cell (``scheme|attack|seed`` for matrix cells, ``null|scheme|seed|model`` for null models).
A killed run loses only the cells that were running; a re-run skips every key already stored,
so nothing is lost or duplicated. Several processes may write at once (SQLite's own locking).

Row fields of a matrix cell (``kind == "cell"``):
    scheme, attack (registry name), attack_label (e.g. "prune amount=0.5"), strength_param
    (the swept setting or None), strength (its value or None), seed, alpha,
    acc_clean (the unmarked model), acc_marked, acc_attacked (clean test accuracy),
    wm_k, wm_n, wm_rate (held-out triggers answered with the watermark label), p0, p_value,
    owned (the verdict on the attacked model), marked_k, marked_p_value (before the attack),
    cost_epochs, cost_seconds, cost_queries, cell_seconds.
Row fields of a null model (``kind == "null"``): scheme, seed, model, k, n, p0, p_value, owned, alpha.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ownmark.errors import IntegrityError


class ResultStore:
    """Rows keyed by cell id in a SQLite file.

    Example:
        >>> import tempfile, os
        >>> store = ResultStore(os.path.join(tempfile.mkdtemp(), "r.sqlite"))
        >>> store.put("fcw|prune|0", "cell", {"scheme": "fcw", "p_value": 0.5})
        >>> store.done(), store.rows("cell")[0]["scheme"]
        ({'fcw|prune|0'}, 'fcw')
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS rows (id TEXT PRIMARY KEY, kind TEXT NOT NULL, row TEXT NOT NULL)"
                )
        except sqlite3.DatabaseError as err:
            raise IntegrityError(
                f"{self.path} is not an ownmark results store ({err}); pass another --results path"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60, isolation_level="IMMEDIATE")

    def put(self, cell_id: str, kind: str, row: dict[str, Any]) -> None:
        """Store a finished cell's row (a second put of the same id is ignored)."""
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO rows VALUES (?, ?, ?)", (cell_id, kind, json.dumps(row, sort_keys=True)))

    def done(self) -> set[str]:
        """Ids of the cells already stored."""
        with self._connect() as db:
            return {r[0] for r in db.execute("SELECT id FROM rows")}

    def rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Stored rows (of one kind), in id order."""
        with self._connect() as db:
            query = "SELECT row FROM rows" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
            return [json.loads(r[0]) for r in db.execute(query, (kind,) if kind else ())]

    def extend(self, items: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
        """Store several rows in one transaction: all of them or, if killed, none."""
        with self._connect() as db:
            db.executemany(
                "INSERT OR IGNORE INTO rows VALUES (?, ?, ?)",
                [(cell_id, kind, json.dumps(row, sort_keys=True)) for cell_id, kind, row in items],
            )
