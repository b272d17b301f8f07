"""p-values and confidence bounds: pure functions that check their inputs first."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

from ownmark.errors import ConfigError


def _check(k: int, n: int, p0: float) -> None:
    k, n = _as_int(k), _as_int(n)
    if not (isinstance(n, int) and n >= 0 and isinstance(k, int) and 0 <= k <= n):
        raise ConfigError(f"need integers 0 <= k <= n, got k={k!r}, n={n!r}")
    if not 0 < p0 < 1:
        raise ConfigError(f"p0 must lie in (0, 1), got {p0!r}")


def _as_int(v: object) -> object:
    """numpy integers count as integers."""
    return int(v) if hasattr(v, "__index__") and not isinstance(v, bool) else v


def binomial_pvalue(k: int, n: int, p0: float) -> float:
    """Exact one-sided binomial test: P[X >= k] for X ~ Binomial(n, p0).

    Example:
        >>> round(binomial_pvalue(10, 10, 0.1), 12)
        1e-10
    """
    _check(k, n, p0)
    if n == 0:
        return 1.0
    return float(stats.binomtest(int(k), int(n), p0, alternative="greater").pvalue)


def upper_bound(k: int, n: int, confidence: float = 0.99) -> float:
    """One-sided Clopper-Pearson upper confidence bound on a rate observed as k of n.

    Example:
        >>> round(upper_bound(0, 100, 0.99), 4)
        0.045
    """
    if not (isinstance(n, int) and n > 0 and isinstance(k, int) and 0 <= k <= n):
        raise ConfigError(f"need integers 0 <= k <= n with n > 0, got k={k!r}, n={n!r}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}")
    if k == n:
        return 1.0
    return float(stats.beta.ppf(confidence, k + 1, n - k))


def min_queries(alpha: float, p0: float) -> int:
    """Least number of all-matching queries whose binomial p-value reaches ``alpha``.

    Example:
        >>> min_queries(0.01, 0.1)
        2
    """
    _check(0, 0, p0)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}")
    return math.ceil(math.log(alpha) / math.log(p0) - 1e-9)


def reaches(p_value: float, alpha: float) -> bool:
    """``p_value <= alpha`` up to floating-point rounding (0.1 ** 2 is 0.010000000000000002)."""
    return p_value <= alpha * (1 + 1e-9)


def margin_ttest(effects: Sequence[float], tau: float) -> tuple[float, float]:
    """One-sided one-sample t-test of mean(effects) > tau; returns (t, p-value).

    The calibrated test of encoder watermarks: ``effects`` are per-image effects measured on the
    suspect, ``tau`` the margin learned from independent (null) encoders.

    Example:
        >>> t, p = margin_ttest([0.30, 0.28, 0.33, 0.31, 0.29, 0.32], 0.05)
        >>> t > 10, p < 1e-5
        (True, True)
    """
    values = [float(e) for e in effects]
    if len(values) < 2:
        raise ConfigError(f"margin_ttest needs at least 2 effects, got {len(values)}")
    if not math.isfinite(tau):
        raise ConfigError(f"margin_ttest needs a finite margin tau, got {tau!r}")
    result = stats.ttest_1samp(values, tau, alternative="greater")
    t, p = float(result.statistic), float(result.pvalue)
    if math.isnan(p):  # all effects equal: the data decide without spread
        mean = sum(values) / len(values)
        t, p = (math.inf, 0.0) if mean > tau else (-math.inf, 1.0)
    return t, p


def paired_wilcoxon(with_mark: Sequence[float], without: Sequence[float]) -> float:
    """One-sided Wilcoxon signed-rank p-value that ``with_mark`` exceeds ``without`` (paired).

    The naive white-box test of AWEncoder's paper; ownmark reports it beside the calibrated
    verdict because an adversarial perturbation partly transfers to independent encoders.

    Example:
        >>> paired_wilcoxon([0.9, 0.8, 0.85, 0.95, 0.9, 0.88], [0.5, 0.4, 0.45, 0.5, 0.6, 0.5]) < 0.05
        True
    """
    a, b = [float(v) for v in with_mark], [float(v) for v in without]
    if len(a) != len(b) or len(a) < 2:
        raise ConfigError(f"paired_wilcoxon needs two equal-length samples of >= 2, got {len(a)} and {len(b)}")
    if all(x == y for x, y in zip(a, b, strict=True)):
        return 1.0
    return float(stats.wilcoxon(a, b, alternative="greater").pvalue)
