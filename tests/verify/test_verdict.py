import pytest

from ownmark.core import Evidence
from ownmark.errors import ConfigError
from ownmark.verify import DEFAULT_ALPHA, binomial_pvalue, check_alpha, decide


def test_decide_reports_the_binomial_test() -> None:
    ev = Evidence("fcw", k=9, n=10, p0=0.1, queries=25)
    v = decide(ev)
    assert v.alpha == DEFAULT_ALPHA == 0.01
    assert v.p_value == binomial_pvalue(9, 10, 0.1) and v.owned and v.decision == "OWNED"
    assert (v.statistic, v.n, v.p0, v.queries) == (9, 10, 0.1, 25)
    assert "binomial" in v.test and "0.1" in v.null_hypothesis and "10 verification triggers" in v.null_hypothesis
    assert v.to_dict()["p_value"] == v.p_value and v.to_dict()["owned"] is True


def test_decide_not_owned_on_chance_evidence() -> None:
    v = decide(Evidence("fcw", k=1, n=10, p0=0.1, queries=10))
    assert not v.owned and v.decision == "not verified" and v.p_value > 0.5


@pytest.mark.parametrize(("k", "n", "p0"), [(3, 10, 0.1), (5, 20, 0.1), (7, 12, 0.25), (4, 4, 0.5), (30, 100, 0.2)])
def test_owned_iff_p_at_most_alpha(k: int, n: int, p0: float) -> None:
    ev = Evidence("x", k=k, n=n, p0=p0, queries=n)
    p = binomial_pvalue(k, n, p0)
    assert 0 < p < 1
    assert decide(ev, alpha=p).owned  # p == alpha: owned
    assert not decide(ev, alpha=p * (1 - 1e-6)).owned  # below p beyond rounding tolerance: not owned
    assert decide(ev, alpha=min(0.999, 2 * p)).owned == (p <= min(0.999, 2 * p))


def test_zero_queries_never_owned() -> None:
    v = decide(Evidence("x", k=0, n=0, p0=0.1, queries=0), alpha=0.5)
    assert v.p_value == 1.0 and not v.owned


@pytest.mark.parametrize("alpha", [0, 1, -0.01, 1.5, float("nan"), "0.01", None])
def test_bad_alpha(alpha: object) -> None:
    with pytest.raises(ConfigError, match="alpha must lie in \\(0, 1\\)"):
        decide(Evidence("x", k=1, n=2, p0=0.1, queries=2), alpha)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        check_alpha(alpha)  # type: ignore[arg-type]


def test_bad_evidence_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        decide(Evidence("x", k=5, n=3, p0=0.1, queries=3))
    with pytest.raises(ConfigError, match="p0"):
        decide(Evidence("x", k=1, n=3, p0=1.5, queries=3))


def test_verdict_is_frozen() -> None:
    import dataclasses

    v = decide(Evidence("x", k=1, n=2, p0=0.1, queries=2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.owned = True  # type: ignore[misc]


def test_evidence_rate() -> None:
    assert Evidence("x", k=3, n=12, p0=0.1, queries=12).rate == 0.25
    assert Evidence("x", k=0, n=0, p0=0.1, queries=0).rate == 0.0


def test_decide_takes_a_precomputed_test_and_compares_with_alpha() -> None:
    ev = Evidence("awencoder", k=0, n=40, p0=0.0, queries=40, test="one-sided t", p_value=0.003, statistic=2.9,
                  null_hypothesis="effect <= tau")  # fmt: skip
    v = decide(ev, alpha=0.01)
    assert (v.owned, v.test, v.statistic, v.p_value) == (True, "one-sided t", 2.9, 0.003)
    assert not decide(ev, alpha=0.001).owned


def test_decide_refuses_a_precomputed_test_without_p_value() -> None:
    import pytest

    from ownmark.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a p-value"):
        decide(Evidence("x", k=0, n=1, p0=0.0, queries=1, test="t"))
