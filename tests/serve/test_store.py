from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ownmark.errors import BudgetExhaustedError, ConfigError
from ownmark.serve import RateLimiter, UsageStore, key_id


def test_a_charge_is_whole_or_refused_and_counts_nothing_when_refused() -> None:
    store = UsageStore(None)
    assert store.charge("k", "m", 6, budget=10) == 4
    with pytest.raises(BudgetExhaustedError, match="6 of 10 images answered, a batch of 5 exceeds the 4 left"):
        store.charge("k", "m", 5, budget=10)
    assert store.used("k", "m") == 6
    assert store.charge("k", "m", 4, budget=10) == 0
    assert store.charge("k", "other", 3, budget=10) == 7  # budgets are per (key, model)
    assert store.charge("k2", "m", 100, budget=None) is None
    assert store.usage() == [
        {"key": "k", "model": "m", "used": 10, "requests": 2},
        {"key": "k", "model": "other", "used": 3, "requests": 1},
        {"key": "k2", "model": "m", "used": 100, "requests": 1},
    ]
    store.refund("k", "m", 4)
    assert store.used("k", "m") == 6
    with pytest.raises(ConfigError, match="non-negative int"):
        store.charge("k", "m", -1, budget=10)


def test_budgets_are_exact_under_concurrent_threads() -> None:
    store, answered = UsageStore(None), []

    def spend() -> None:
        n = 0
        while True:
            try:
                store.charge("k", "m", 1, budget=500)
            except BudgetExhaustedError:
                break
            n += 1
        answered.append(n)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(answered) == 500 and store.used("k", "m") == 500


def test_usage_survives_reopening_the_file(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "sub" / "usage.sqlite")
    store.charge("k", "m", 7, budget=10)
    store.close()  # a restart
    again = UsageStore(tmp_path / "sub" / "usage.sqlite")
    assert again.used("k", "m") == 7
    with pytest.raises(BudgetExhaustedError, match="7 of 10"):
        again.charge("k", "m", 4, budget=10)


def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match="cannot open the usage store"):
        UsageStore(tmp_path / "bad.sqlite")


def test_key_ids_do_not_reveal_the_token() -> None:
    assert key_id("my-secret-token") != key_id("my-secret-tokem")
    assert "secret" not in key_id("my-secret-token") and key_id("x").startswith("key-")


def test_rate_limiter_allows_bursts_then_refills() -> None:
    limiter = RateLimiter(rate=50.0, burst=3)
    assert [limiter.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.wait("a")
    assert 0 < wait <= 1 / 50 + 1e-6
    assert limiter.wait("b") == 0.0  # every key has its own bucket
    with pytest.raises(ConfigError, match="rate > 0"):
        RateLimiter(rate=0, burst=1)
