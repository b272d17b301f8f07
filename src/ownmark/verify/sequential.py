"""Sequential verification that stays valid under optional stopping.

The owner queries verification triggers one at a time and stops as soon as the evidence is
decisive. Repeating a fixed-n binomial test after every query inflates the false-positive rate;
instead ownmark tracks a test martingale (a likelihood-ratio e-process). Under the null each
answer matches with probability at most p0, and for any alternative rate p1 > p0 the product
M_t = prod_i (p1/p0)^{x_i} ((1-p1)/(1-p0))^{1-x_i} has expectation at most 1 at every stopping
time. By Ville's inequality P[sup_t M_t >= 1/alpha] <= alpha, so stopping when M_t >= 1/alpha
is an alpha-level test however the stopping is chosen, and 1/max_t M_t is an anytime-valid
p-value. ownmark averages M over a grid of alternatives (a mixture is still a test martingale),
so one missed trigger does not ruin the test when the true rate is below 1.

Reference:
    Wald, "Sequential Tests of Statistical Hypotheses", Ann. Math. Stat. 1945;
    Ramdas, Grünwald, Vovk, Shafer, "Game-Theoretic Statistics and Safe Anytime-Valid
    Inference", Statistical Science 2023, arXiv:2210.01948.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ownmark.errors import ConfigError
from ownmark.verify.tests import reaches
from ownmark.verify.verdict import Verdict, check_alpha

ALTERNATIVES: tuple[float, ...] = (0.6, 0.8, 0.9, 0.95, 0.99)


@dataclass
class MixtureMartingale:
    """Running log of the mixture likelihood-ratio martingale for Bernoulli matches.

    Example:
        >>> m = MixtureMartingale(p0=0.1)
        >>> for _ in range(3): m.update(True)
        >>> m.value > 100
        True
    """

    p0: float
    alternatives: tuple[float, ...] = ALTERNATIVES

    def __post_init__(self) -> None:
        if not 0 < self.p0 < 1:
            raise ConfigError(f"p0 must lie in (0, 1), got {self.p0!r}")
        self.alternatives = tuple(p for p in self.alternatives if p > self.p0) or (min(0.999, (1 + self.p0) / 2),)
        self.log_components = [0.0] * len(self.alternatives)
        self.max_value = 1.0

    def update(self, match: bool) -> None:
        """Fold one answer into the martingale."""
        for i, p1 in enumerate(self.alternatives):
            ratio = p1 / self.p0 if match else (1 - p1) / (1 - self.p0)
            self.log_components[i] += math.log(ratio)
        self.max_value = max(self.max_value, self.value)

    @property
    def value(self) -> float:
        top = max(self.log_components)
        return math.exp(top) * sum(math.exp(c - top) for c in self.log_components) / len(self.log_components)


def sequential_verify(
    matches: Iterable[bool] | Callable[[int], bool], n_max: int, p0: float, alpha: float = 0.01
) -> Verdict:
    """Query up to ``n_max`` triggers, stopping once the martingale reaches 1/alpha.

    Args:
        matches: the answers in order, or a function ``i -> bool`` that spends one query on
            trigger ``i`` (so stopping early really saves queries).
        n_max: the most triggers to query.

    Example:
        >>> v = sequential_verify([True] * 20, n_max=20, p0=0.1, alpha=0.01)
        >>> v.owned, v.queries
        (True, 3)
    """
    check_alpha(alpha)
    if callable(matches):
        ask = matches
    else:
        items = [bool(m) for m in matches]
        n_max = min(n_max, len(items))
        ask = items.__getitem__
    mart = MixtureMartingale(p0)
    k = used = 0
    for i in range(n_max):
        hit = bool(ask(i))
        used, k = used + 1, k + hit
        mart.update(hit)
        if reaches(1 / mart.value, alpha):
            break
    p_value = min(1.0, 1 / mart.max_value)
    return Verdict(
        statistic=k,
        n=used,
        p0=p0,
        p_value=p_value,
        alpha=alpha,
        owned=reaches(p_value, alpha),
        queries=used,
        test="sequential mixture likelihood-ratio martingale (anytime-valid)",
        null_hypothesis=(
            f"each verification trigger is answered with the watermark label with probability at most {p0:.4g}"
        ),
    )
