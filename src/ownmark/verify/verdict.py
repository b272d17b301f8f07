"""Verdicts: the one place where evidence becomes a decision about ownership."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ownmark.core import Evidence
from ownmark.errors import ConfigError
from ownmark.verify.tests import binomial_pvalue, reaches

DEFAULT_ALPHA = 0.01


@dataclass(frozen=True)
class Verdict:
    """A statistical decision about a suspect model.

    Attributes:
        statistic: the test statistic (matches k for trigger sets).
        n: number of verification queries the statistic is over.
        p0: null match probability used.
        p_value: the test's p-value.
        alpha: significance level.
        owned: True when p_value <= alpha (the suspect is judged to carry the owner's mark).
        queries: queries spent on the suspect.
        test: name of the test.
        null_hypothesis: the null hypothesis in words.
        smallest_p: the smallest p-value the test can give (None where it is not bounded away from 0,
            e.g. the exact binomial test, whose smallest p is p0 ** n).
    """

    statistic: float
    n: int
    p0: float
    p_value: float
    alpha: float
    owned: bool
    queries: int
    test: str
    null_hypothesis: str
    smallest_p: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def decision(self) -> str:
        return "OWNED" if self.owned else "not verified"


def check_alpha(alpha: float) -> None:
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")


def decide(evidence: Evidence, alpha: float = DEFAULT_ALPHA) -> Verdict:
    """Exact one-sided binomial test of the evidence's k of n against p0, or the evidence's own test.

    Evidence whose ``test`` is not ``"binomial"`` carries the p-value of that test (computed by a
    function in :mod:`ownmark.verify.tests`); here it is only compared with alpha.

    Example:
        >>> v = decide(Evidence("demo", k=9, n=10, p0=0.1, queries=10))
        >>> v.owned, v.p_value < 1e-7
        (True, True)
    """
    check_alpha(alpha)
    if evidence.test != "binomial":
        if evidence.p_value is None or not 0 <= evidence.p_value <= 1:
            raise ConfigError(f"evidence of test {evidence.test!r} needs a p-value in [0, 1], got {evidence.p_value!r}")
        return Verdict(
            statistic=float(evidence.statistic if evidence.statistic is not None else evidence.k), n=evidence.n,
            p0=evidence.p0, p_value=float(evidence.p_value), alpha=alpha, owned=reaches(evidence.p_value, alpha),
            queries=evidence.queries, test=evidence.test, null_hypothesis=evidence.null_hypothesis,
            smallest_p=evidence.details.get("smallest_p"),
        )  # fmt: skip
    p = binomial_pvalue(evidence.k, evidence.n, evidence.p0)
    return Verdict(
        statistic=evidence.k, n=evidence.n, p0=evidence.p0, p_value=p, alpha=alpha, owned=reaches(p, alpha),
        queries=evidence.queries, test="exact one-sided binomial", smallest_p=evidence.p0**evidence.n,
        null_hypothesis=(
            f"the suspect is independent of the owner's model and answers each of the {evidence.n} "
            f"verification triggers with the watermark label with probability at most {evidence.p0:.4g}"
        ),
    )  # fmt: skip
