"""Per-key query accounting in SQLite: exact under concurrent requests, kept across restarts.

Every charge is one conditional ``UPDATE ... WHERE used + n <= budget`` in its own transaction,
so SQLite's write lock makes it atomic between the server's threads and even between processes
sharing the file: N allowed images are N answered, never one more. The store knows keys only by
an id derived from the token (:func:`key_id`); a token is never written anywhere.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

from ownmark.errors import BudgetExhaustedError, ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, model)
)
"""


def key_id(token: str) -> str:
    """The public name of an API token: a prefix of its SHA-256 (logs and the store never see tokens).

    Example:
        >>> key_id("secret")
        'key-2bb80d537b1d'
    """
    return "key-" + hashlib.sha256(token.encode()).hexdigest()[:12]


class UsageStore:
    """Images answered per (key, model), in a SQLite file (or in memory with ``path=None``).

    Example:
        >>> store = UsageStore(None)
        >>> store.charge("key-a", "m", 3, budget=5), store.used("key-a", "m")
        (2, 3)
        >>> store.charge("key-a", "m", 3, budget=5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ownmark.errors.BudgetExhaustedError: query budget exhausted: 3 of 5 images answered, a batch of 3 exceeds ...
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = str(path) if path is not None else ":memory:"
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # autocommit: each statement is its own transaction; one connection shared under a lock
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            if path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crashed server loses nothing
            self._db.execute(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"cannot open the usage store {self.path}: {err}; pass another --db file") from None
        self._lock = threading.Lock()

    def charge(self, key: str, model: str, n: int, *, budget: int | None) -> int | None:
        """Count ``n`` images for ``key`` on ``model``; return what is left (None without a budget).

        Raises BudgetExhaustedError, counting nothing, if ``n`` more would exceed ``budget``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"UsageStore.charge needs a non-negative int of images, got {n!r}")
        limit = -1 if budget is None else budget
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO usage (key, model) VALUES (?, ?)", (key, model))
            row = self._db.execute(
                "UPDATE usage SET used = used + ?, requests = requests + 1 "
                "WHERE key = ? AND model = ? AND (? < 0 OR used + ? <= ?) RETURNING used",
                (n, key, model, limit, n, limit),
            ).fetchone()
            if row is None:
                used = self._used(key, model)
        if row is not None:
            return None if budget is None else budget - row[0]
        raise BudgetExhaustedError(
            f"query budget exhausted: {used} of {budget} images answered, a batch of {n} exceeds the "
            f"{budget - used} left"  # type: ignore[operator]
        )

    def refund(self, key: str, model: str, n: int) -> None:
        """Take back a charge whose answer could not be given (keeps accounting exact on a server error)."""
        with self._lock:
            self._db.execute(
                "UPDATE usage SET used = MAX(used - ?, 0), requests = requests - 1 WHERE key = ? AND model = ?",
                (n, key, model),
            )

    def used(self, key: str, model: str) -> int:
        """Images answered so far for ``key`` on ``model``."""
        with self._lock:
            return self._used(key, model)

    def _used(self, key: str, model: str) -> int:
        row = self._db.execute("SELECT used FROM usage WHERE key = ? AND model = ?", (key, model)).fetchone()
        return 0 if row is None else int(row[0])

    def usage(self) -> list[dict[str, int | str]]:
        """Every (key, model) row: images and requests answered."""
        with self._lock:
            rows = self._db.execute("SELECT key, model, used, requests FROM usage ORDER BY key, model").fetchall()
        return [{"key": k, "model": m, "used": u, "requests": r} for k, m, u, r in rows]

    def close(self) -> None:
        """Close the database (the store is unusable afterwards)."""
        with self._lock:
            self._db.close()


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second on average, bursts of up to ``burst``.

    Example:
        >>> limiter = RateLimiter(rate=1.0, burst=2)
        >>> [limiter.wait("k") == 0 for _ in range(3)]
        [True, True, False]
    """

    def __init__(self, rate: float, burst: int) -> None:
        if not rate > 0 or isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigError(f"RateLimiter needs rate > 0 and an int burst >= 1, got rate={rate!r}, burst={burst!r}")
        self.rate, self.burst = float(rate), burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time of last update)
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Take one request's token and return 0, or return the seconds until one is due (taking nothing)."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
