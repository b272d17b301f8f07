"""Verdicts: the one place where evidence becomes a decision about ownership."""

from __future__ import annotations

from ownmark.errors import ConfigError
from ownmark.types import Evidence, Verdict
from ownmark.verify.tests import binomial_pvalue, reaches

DEFAULT_ALPHA = 0.01


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
