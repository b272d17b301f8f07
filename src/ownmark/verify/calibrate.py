"""Null-model calibration: measure how independent models answer a key, and bound a high quantile.

A key whose test is exact by construction (a randomization over decoy keys, a permutation of
secret labels) needs no calibration: its p-value holds for any model made without the secret, and
calibration only *measures* its false-claim rate on null models. A key verified by the binomial test
(k of n triggers answered with the watermark label against p0) assumes that no model made without
the secret answers a trigger with the label more often than p0. Calibration makes that assumption
checkable and never weaker than the nominal one:

- p0 is never below the key's nominal 1/K (calibration cannot lower the bar);
- p0 bounds a high quantile (``coverage``, default 0.999) of the *per-model* rate, from a
  beta-binomial fitted to the null models' counts (method of moments, over-dispersion kept), and is
  at least every null model's own upper confidence bound; triggers are i.i.d. draws given one model,
  models are not: the unit is the model;
- the false-positive rate is measured leave-one-out: each null model is verified at the p0 the
  *other* null models give, the p0 a fresh independent model would meet;
- a calibration is bound to its key's digest, and is refused for any other key.

What the p-value of a calibrated binomial verdict promises: a model made without the secret is
OWNED with probability at most ``alpha + (1 - coverage)``, if innocent models' rates follow the fitted
beta-binomial (the assumption the null models test, and the one the validity bench measures).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats

from ownmark.core import Evidence
from ownmark.errors import ConfigError, IntegrityError, KeyMismatchError
from ownmark.io import load_json, save_json
from ownmark.verify.tests import upper_bound
from ownmark.verify.verdict import DEFAULT_ALPHA, decide


@dataclass
class Calibration:
    """Null models' evidence on one key, and the p0 they support.

    Attributes:
        models: one row per null model: name, k, n, rate, its verdict's p-value and decision
            (at the leave-one-out p0 for binomial keys; the key's own test otherwise).
        p0: the calibrated null rate for the binomial test, or None when the key's test is exact
            and takes no p0.
        nominal_p0: the key's nominal rate (1/K); ``p0`` is never below it.
        coverage: the per-model quantile ``p0`` bounds.
        false_positive_rate: share of null models OWNED at ``alpha`` (leave-one-out for binomial keys).
        test: the key's test.
    """

    scheme: str
    key_digest: str
    confidence: float
    alpha: float
    p0: float | None
    false_positive_rate: float
    models: list[dict[str, Any]] = field(default_factory=list)
    nominal_p0: float | None = None
    coverage: float = 0.999
    test: str = "binomial"

    def save(self, path: str | Path) -> None:
        save_json(path, {"kind": "calibration", **asdict(self)})

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        raw = load_json(path)
        if not isinstance(raw, dict) or raw.pop("kind", None) != "calibration":
            raise IntegrityError(f"{path} is not an ownmark calibration file")
        try:
            return cls(**raw)
        except TypeError as err:
            raise IntegrityError(f"{path} is not a complete ownmark calibration file ({err})") from None

    def check_key(self, key_digest: str) -> None:
        """Refuse this calibration for a key other than the one it was made for."""
        if key_digest != self.key_digest:
            raise KeyMismatchError(
                f"this calibration was made for key {self.key_digest[:16]}..., not for key {key_digest[:16]}...; "
                "run `ownmark calibrate` on this key"
            )

    def p0_for(self, evidence_test: str) -> float | None:
        """The p0 to verify with, or None (with the reason raised) when the key's test takes none."""
        if self.p0 is None or evidence_test != "binomial":
            raise ConfigError(
                f"this key's test ({evidence_test}) is exact without null models and takes no calibrated p0; "
                "verify without --calibration (the calibration file still reports the null models' false-claim rate)"
            )
        return self.p0


def quantile_bound(counts: list[tuple[int, int]], *, coverage: float = 0.999, confidence: float = 0.99) -> float:
    """An upper bound on the ``coverage`` quantile of the per-model rate behind ``(k, n)`` counts.

    The larger of: the quantile of a beta distribution fitted to the counts by the method of
    moments of the beta-binomial (rates spread between models: over-dispersion is kept, never
    averaged away), with its mean raised to the Clopper-Pearson ``confidence`` bound of the pooled
    rate; and every model's own Clopper-Pearson bound. With one model, its own bound.

    Example:
        >>> quantile_bound([(0, 100)] * 20 + [(8, 100)]) > 0.08
        True
    """
    if not counts:
        raise ConfigError("quantile_bound needs at least one (k, n) count")
    own = max(upper_bound(int(k), int(n), confidence) for k, n in counts)
    if len(counts) < 2:
        return own
    rates = [k / n for k, n in counts]
    k_all, n_all = sum(k for k, _ in counts), sum(n for _, n in counts)
    mean = k_all / n_all
    mean_hi = upper_bound(k_all, n_all, confidence)
    n_bar = n_all / len(counts)
    var = sum((r - mean) ** 2 for r in rates) / (len(rates) - 1)
    binom_var = mean * (1 - mean) / n_bar
    # over-dispersion rho of the beta-binomial: var = m(1-m)/n (1 + (n - 1) rho); rho = 1/(a + b + 1)
    rho = (var / binom_var - 1) / (n_bar - 1) if binom_var > 0 and n_bar > 1 else 0.0
    rho = min(max(rho, 1e-6), 1 - 1e-6)
    total = 1 / rho - 1
    m = min(max(mean_hi, 1e-9), 1 - 1e-9)
    fitted = float(stats.beta.ppf(coverage, m * total, (1 - m) * total))
    return min(max(own, fitted if math.isfinite(fitted) else 1.0), 1.0)


def calibrate(
    evidences: dict[str, Evidence], *, key_digest: str, confidence: float = 0.99, alpha: float = DEFAULT_ALPHA,
    coverage: float = 0.999,
) -> Calibration:  # fmt: skip
    """Null models' evidence on one key: a calibrated p0 (binomial keys) and the false-claim rate.

    Args:
        evidences: null-model name -> the evidence ``detect`` measured on it with the owner's key.
        coverage: the per-model quantile of the null rate that p0 bounds, in (0, 1).

    Example:
        >>> ev = {f"m{i}": Evidence("fcw", k=i % 2, n=50, p0=0.1, queries=50) for i in range(4)}
        >>> c = calibrate(ev, key_digest="abc")
        >>> c.p0 >= 0.1, c.false_positive_rate        # never below the nominal 1/K
        (True, 0.0)
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}")
    if not 0 < coverage < 1:
        raise ConfigError(f"coverage must lie in (0, 1), got {coverage!r}")
    if not evidences:
        raise ConfigError("calibration needs at least one null model")
    schemes = {e.scheme for e in evidences.values()}
    if len(schemes) != 1:
        raise ConfigError(f"all evidence must come from one scheme, got {sorted(schemes)}")
    tests = {e.test for e in evidences.values()}
    if len(tests) != 1:
        raise ConfigError(f"all evidence must come from one test, got {sorted(tests)}")
    test = tests.pop()
    if test != "binomial":  # exact test: measure only
        rows = []
        for name, ev in evidences.items():
            v = decide(ev, alpha)
            rows.append({"name": name, "k": ev.k, "n": ev.n, "rate": ev.rate, "p_value": v.p_value, "owned": v.owned})
        fpr = sum(r["owned"] for r in rows) / len(rows)
        return Calibration(schemes.pop(), key_digest, confidence, alpha, None, fpr, rows, None, coverage, test)
    nominal = max(e.p0 for e in evidences.values())
    counts = {name: (ev.k, ev.n) for name, ev in evidences.items()}
    p0 = max(nominal, quantile_bound(list(counts.values()), coverage=coverage, confidence=confidence))
    rows, false_pos = [], 0
    for name, ev in evidences.items():
        others = [c for other, c in counts.items() if other != name]
        p0_loo = max(nominal, quantile_bound(others, coverage=coverage, confidence=confidence)) if others else nominal
        p0_loo = min(p0_loo, 1 - 1e-12)
        verdict = decide(Evidence(ev.scheme, ev.k, ev.n, p0_loo, ev.queries), alpha)
        rows.append({"name": name, "k": ev.k, "n": ev.n, "rate": ev.rate, "p0_leave_one_out": p0_loo,
                     "p_value": verdict.p_value, "owned": verdict.owned})  # fmt: skip
        false_pos += verdict.owned
    return Calibration(
        scheme=schemes.pop(), key_digest=key_digest, confidence=confidence, alpha=alpha, p0=min(p0, 1 - 1e-12),
        false_positive_rate=false_pos / len(evidences), models=rows, nominal_p0=nominal, coverage=coverage,
        test="binomial",
    )  # fmt: skip
