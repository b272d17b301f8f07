import itertools
import math

import numpy as np
import pytest
from scipy import stats

from ownmark.errors import ConfigError
from ownmark.verify import MixtureMartingale, binomial_pvalue, min_queries, sequential_verify

ALPHA, P0, N_NULL, N_MAX = 0.01, 0.1, 2000, 200


@pytest.fixture(scope="module")
def null_sequences() -> np.ndarray:
    """2000 seeded sequences of 200 answers, each a match with probability p0 (the null)."""
    return np.random.default_rng(20240607).random((N_NULL, N_MAX)) < P0


def test_martingale_starts_at_one() -> None:
    m = MixtureMartingale(p0=0.1)
    assert m.value == 1.0 and m.max_value == 1.0
    m.update(False)
    assert m.value < 1.0 and m.max_value == 1.0
    m.update(True)
    m.update(True)
    assert m.value > 1.0 and m.max_value == m.value


@pytest.mark.parametrize("p0", [0.1, 0.25, 0.5])
def test_martingale_has_expectation_one_under_the_null(p0: float) -> None:
    # exact expectation over all 2^6 answer sequences at time 6
    total = 0.0
    for seq in itertools.product([False, True], repeat=6):
        m = MixtureMartingale(p0)
        for hit in seq:
            m.update(hit)
        k = sum(seq)
        total += p0**k * (1 - p0) ** (6 - k) * m.value
    assert total == pytest.approx(1.0, rel=1e-12)


def test_martingale_single_alternative_by_hand() -> None:
    m = MixtureMartingale(p0=0.2, alternatives=(0.8,))
    for hit in (True, True, False):
        m.update(hit)
    assert m.value == pytest.approx(4 * 4 * 0.25)


@pytest.mark.parametrize("p0", [0.7, 0.95, 0.995])
def test_alternatives_lie_above_p0(p0: float) -> None:
    m = MixtureMartingale(p0)
    assert m.alternatives and all(p0 < p1 < 1 for p1 in m.alternatives)


@pytest.mark.parametrize("p0", [0.0, 1.0, -0.1, 2.0])
def test_martingale_rejects_bad_p0(p0: float) -> None:
    with pytest.raises(ConfigError, match="p0 must lie in"):
        MixtureMartingale(p0)


def test_all_matches_stop_early() -> None:
    v = sequential_verify([True] * 50, n_max=50, p0=P0, alpha=ALPHA)
    assert v.owned and v.statistic == v.n == v.queries
    assert v.queries <= 1.5 * min_queries(ALPHA, P0)
    assert v.p_value <= ALPHA and "anytime-valid" in v.test


@pytest.mark.parametrize(("p0", "alpha"), [(0.5, 0.01), (0.25, 0.001), (0.1, 1e-6)])
def test_all_matches_cost_little_more_than_the_fixed_test(p0: float, alpha: float) -> None:
    v = sequential_verify([True] * 100, n_max=100, p0=p0, alpha=alpha)
    assert v.owned and min_queries(alpha, p0) <= v.queries <= 1.5 * min_queries(alpha, p0)


def test_callable_is_called_once_per_query_in_order() -> None:
    asked: list[int] = []
    answers = [True, False, True, True, True, True, True, True] + [True] * 50

    def ask(i: int) -> bool:
        asked.append(i)
        return answers[i]

    v = sequential_verify(ask, n_max=50, p0=P0, alpha=ALPHA)
    assert v.owned and asked == list(range(v.queries)) and v.queries < 50
    assert v.statistic == sum(answers[: v.queries])


def test_callable_without_matches_spends_the_whole_budget() -> None:
    calls = []
    v = sequential_verify(lambda i: calls.append(i) or False, n_max=40, p0=P0, alpha=ALPHA)
    assert len(calls) == v.queries == v.n == 40
    assert not v.owned and v.statistic == 0 and v.p_value == 1.0


def test_list_shorter_than_n_max() -> None:
    v = sequential_verify([False, True, False], n_max=100, p0=P0, alpha=ALPHA)
    assert v.queries == 3 and v.statistic == 1 and not v.owned


@pytest.mark.parametrize("alpha", [0, 1, -1, 2.0])
def test_bad_alpha(alpha: float) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        sequential_verify([True], n_max=1, p0=P0, alpha=alpha)


def test_valid_under_optional_stopping(null_sequences: np.ndarray) -> None:
    rejected = 0
    for row in null_sequences:
        v = sequential_verify(row.tolist(), n_max=N_MAX, p0=P0, alpha=ALPHA)
        assert v.owned == (v.p_value <= ALPHA)
        rejected += v.owned
    rate = rejected / N_NULL
    # Ville: P[reject] <= alpha. With 2000 sequences the count is at most Binomial(2000, 0.01):
    # mean 20, sd 4.45; 0.02 (40 rejections) is 4.5 sd above the mean, P ~ 1e-5.
    assert rate <= 0.02, rate


def test_repeated_fixed_n_test_is_not_valid_under_optional_stopping(null_sequences: np.ndarray) -> None:
    """Why sequential_verify exists: re-running the exact binomial test after every query and
    stopping at the first p <= alpha rejects a true null far more often than alpha."""
    t = np.arange(1, N_MAX + 1)
    # least k whose P[X >= k] <= alpha for X ~ Binomial(t, p0), for every t (t + 1: out of reach)
    ks = np.arange(N_MAX + 2)[:, None]
    critical = np.argmax(stats.binom.sf(ks - 1, t[None, :], P0) <= ALPHA, axis=0)
    for n in (1, 2, 10, 57, 200):  # the table agrees with the library's own test
        k = int(critical[n - 1])
        assert k > n or binomial_pvalue(k, n, P0) <= ALPHA
        assert binomial_pvalue(min(k - 1, n), n, P0) > ALPHA
    hits = np.cumsum(null_sequences, axis=1)
    naive_rate = (hits >= critical[None, :]).any(axis=1).mean()
    # the fixed-n test at a single n is valid: n = 200 alone rejects at most about alpha
    single_rate = (hits[:, -1] >= critical[-1]).mean()
    assert single_rate <= 0.02
    assert naive_rate > 2 * ALPHA, naive_rate
    assert naive_rate > 3 * single_rate


def test_sequential_power_on_a_leaky_watermark() -> None:
    """A model that answers 60% of the triggers (p0 = 0.1) is caught well before 200 queries."""
    rng = np.random.default_rng(1)
    queries = []
    for _ in range(50):
        v = sequential_verify((rng.random(N_MAX) < 0.6).tolist(), n_max=N_MAX, p0=P0, alpha=ALPHA)
        assert v.owned
        queries.append(v.queries)
    assert np.median(queries) <= 15 and math.isfinite(np.mean(queries))
