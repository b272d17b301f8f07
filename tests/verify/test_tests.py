import math

import pytest
from scipy import stats

from ownmark.core import Evidence
from ownmark.errors import ConfigError
from ownmark.verify import binomial_pvalue, decide, min_queries, upper_bound


@pytest.mark.parametrize(
    ("k", "n", "p0", "expected"),
    [
        (10, 10, 0.1, 1e-10),  # 0.1 ** 10
        (0, 10, 0.1, 1.0),
        (0, 0, 0.3, 1.0),  # no queries, no evidence
        (1, 1, 0.25, 0.25),
        (1, 2, 0.5, 0.75),  # 1 - P[X=0] = 1 - 1/4
        (2, 3, 0.5, 0.5),  # (3 + 1) / 8
        (9, 10, 0.1, 10 * 0.1**9 * 0.9 + 0.1**10),
        (2, 4, 0.1, 1 - 0.9**4 - 4 * 0.1 * 0.9**3),
    ],
)
def test_binomial_pvalue_by_hand(k: int, n: int, p0: float, expected: float) -> None:
    assert binomial_pvalue(k, n, p0) == pytest.approx(expected, rel=1e-9)


def test_binomial_pvalue_is_monotone_in_k() -> None:
    values = [binomial_pvalue(k, 20, 0.2) for k in range(21)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize(
    ("k", "n", "p0"),
    [(-1, 5, 0.1), (6, 5, 0.1), (1.0, 5, 0.1), (1, -1, 0.1), (1, 5, 0.0), (1, 5, 1.0), (1, 5, float("nan"))],
)
def test_binomial_pvalue_rejects_bad_input(k, n, p0) -> None:
    with pytest.raises(ConfigError):
        binomial_pvalue(k, n, p0)


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 100), (3, 10), (17, 50), (49, 50), (999, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.99])
def test_upper_bound_is_clopper_pearson(k: int, n: int, confidence: float) -> None:
    bound = upper_bound(k, n, confidence)
    assert bound == pytest.approx(stats.beta.ppf(confidence, k + 1, n - k), rel=1e-12)
    assert k / n < bound < 1
    # the defining property: a rate at the bound makes k or fewer matches exactly 1 - confidence likely
    assert stats.binom.cdf(k, n, bound) == pytest.approx(1 - confidence, rel=1e-6)


def test_upper_bound_edge_cases() -> None:
    assert upper_bound(5, 5) == 1.0
    assert upper_bound(0, 100, 0.99) == pytest.approx(1 - 0.01 ** (1 / 100), rel=1e-12)  # 1 - (1-c)^(1/n)
    assert upper_bound(3, 10, 0.99) > upper_bound(3, 10, 0.9)
    for k, n in [(0, 0), (-1, 3), (4, 3), (1.5, 3)]:
        with pytest.raises(ConfigError):
            upper_bound(k, n)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1])
def test_upper_bound_rejects_bad_confidence(confidence: float) -> None:
    with pytest.raises(ConfigError, match="confidence"):
        upper_bound(3, 10, confidence)


@pytest.mark.parametrize(
    ("alpha", "p0"),
    [(0.05, 0.5), (0.01, 0.5), (1e-3, 0.5), (1e-6, 0.5), (0.05, 0.25), (0.01, 0.25), (1e-6, 0.25),
     (0.05, 0.1), (0.05, 0.01), (0.01, 0.3), (1e-3, 0.2)],
)  # fmt: skip
def test_min_queries_is_the_least_n_that_reaches_alpha(alpha: float, p0: float) -> None:
    m = min_queries(alpha, p0)
    assert binomial_pvalue(m, m, p0) <= alpha
    assert decide(Evidence("x", k=m, n=m, p0=p0, queries=m), alpha).owned
    assert m == 1 or binomial_pvalue(m - 1, m - 1, p0) > alpha


@pytest.mark.parametrize(("alpha", "p0"), [(0.01, 0.1), (1e-3, 0.1), (1e-6, 0.1), (1e-6, 0.01)])
def test_min_queries_agrees_with_decide_at_exact_powers(alpha: float, p0: float) -> None:
    m = min_queries(alpha, p0)
    assert decide(Evidence("x", k=m, n=m, p0=p0, queries=m), alpha).owned


def test_min_queries_exact_powers() -> None:
    assert min_queries(0.01, 0.1) == 2  # 0.1 ** 2 == alpha in exact arithmetic: 2, not 3
    assert min_queries(1e-10, 0.1) == 10
    assert min_queries(0.05, 0.5) == 5
    assert min_queries(0.5, 0.5) == 1
    with pytest.raises(ConfigError):
        min_queries(0.01, 1.0)


@pytest.mark.parametrize("alpha", [0.0, 1.5, -0.1])
def test_min_queries_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        min_queries(alpha, 0.1)


def test_min_queries_matches_log_formula() -> None:
    for alpha, p0 in [(0.01, 0.2), (0.001, 0.3)]:
        assert min_queries(alpha, p0) == math.ceil(math.log(alpha) / math.log(p0))
