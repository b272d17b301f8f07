"""Null-model calibration: measure how often independent models answer the watermark label.

Assuming p0 = 1/K is a guess; an owner who must convince a court measures the rate on models
that are independent by construction (other seeds, other architectures, other data) and uses
an upper confidence bound on it as the null probability. The false-positive rate of the
verdict on those same models is stored beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ownmark.core import Evidence
from ownmark.errors import ConfigError, IntegrityError
from ownmark.io import load_json, save_json
from ownmark.verify.tests import upper_bound
from ownmark.verify.verdict import DEFAULT_ALPHA, decide


@dataclass
class Calibration:
    """Matches of null models on a key's verification set, and the p0 they support.

    Attributes:
        models: one row per null model: name, k, n, its verdict's p-value and decision.
        p0: upper ``confidence`` bound on the pooled match rate (Clopper-Pearson).
        false_positive_rate: share of null models verified at ``alpha`` under the nominal p0.
    """

    scheme: str
    key_digest: str
    confidence: float
    alpha: float
    p0: float
    false_positive_rate: float
    models: list[dict[str, Any]] = field(default_factory=list)

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


def calibrate(
    evidences: dict[str, Evidence], *, key_digest: str, confidence: float = 0.99, alpha: float = DEFAULT_ALPHA
) -> Calibration:
    """Pool null models' evidence into a calibrated p0 and their false-positive rate.

    Args:
        evidences: null-model name -> the evidence ``detect`` measured on it with the owner's key.

    Example:
        >>> ev = {f"m{i}": Evidence("fcw", k=i % 2, n=50, p0=0.1, queries=50) for i in range(4)}
        >>> c = calibrate(ev, key_digest="abc")
        >>> round(c.p0, 3), c.false_positive_rate
        (0.041, 0.0)
    """
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}")
    if not evidences:
        raise ConfigError("calibration needs at least one null model")
    schemes = {e.scheme for e in evidences.values()}
    if len(schemes) != 1:
        raise ConfigError(f"all evidence must come from one scheme, got {sorted(schemes)}")
    rows, k_total, n_total, false_pos = [], 0, 0, 0
    for name, ev in evidences.items():
        verdict = decide(ev, alpha)
        rows.append(
            {"name": name, "k": ev.k, "n": ev.n, "rate": ev.rate, "p_value": verdict.p_value, "owned": verdict.owned}
        )
        k_total, n_total, false_pos = k_total + ev.k, n_total + ev.n, false_pos + verdict.owned
    return Calibration(
        scheme=schemes.pop(), key_digest=key_digest, confidence=confidence, alpha=alpha,
        p0=upper_bound(k_total, n_total, confidence), false_positive_rate=false_pos / len(evidences), models=rows,
    )  # fmt: skip
