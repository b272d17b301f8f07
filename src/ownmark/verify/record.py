"""The verdict record: one self-contained JSON object per suspect, for a court, a reviewer or a log.

A record names what was tested (the suspect's digest, the key's commitment), how (scheme, test, null
hypothesis, alpha, calibration with its digest), what came out (statistic, p-value, the smallest
p-value the test can give, decision, queries) and with what (library versions, UTC time). Writing is
atomic: a record file on disk is always complete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ownmark.io import atomic_write_text, versions
from ownmark.verify.verdict import Verdict

RECORD_FORMAT = "ownmark-verdict/1"


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (a calibration file's identity in a record)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def verdict_record(
    verdict: Verdict, *, suspect: str, suspect_digest: str | None, key_digest: str, scheme: str,
    calibration: dict[str, Any] | None = None, details: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One JSON-able record of a verdict.

    Args:
        suspect: where the suspect came from (a path or a URL).
        suspect_digest: SHA-256 of the suspect's weights as saved (None for a served model, whose weights
            the verifier never sees).
        calibration: ``{"path": ..., "sha256": ..., "p0": ...}`` when a calibration file was used.

    Example:
        >>> from ownmark.core import Evidence
        >>> from ownmark.verify import decide
        >>> v = decide(Evidence("fcw", k=9, n=10, p0=0.1, queries=10))
        >>> r = verdict_record(v, suspect="m", suspect_digest="ab", key_digest="cd", scheme="fcw")
        >>> r["decision"], r["p_value"] < 1e-7, r["format"]
        ('OWNED', True, 'ownmark-verdict/1')
    """
    return {
        "format": RECORD_FORMAT,
        "suspect": suspect,
        "suspect_sha256": suspect_digest,
        "key_sha256": key_digest,
        "scheme": scheme,
        "test": verdict.test,
        "null_hypothesis": verdict.null_hypothesis,
        "unit_of_independence": "the model",
        "statistic": verdict.statistic,
        "n": verdict.n,
        "p0": verdict.p0,
        "p_value": verdict.p_value,
        "smallest_p_value": verdict.smallest_p,
        "alpha": verdict.alpha,
        "decision": verdict.decision,
        "owned": verdict.owned,
        "queries": verdict.queries,
        "calibration": calibration,
        "details": details or {},
        "versions": versions(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def to_json_line(record: dict[str, Any]) -> str:
    """A record as one line of JSON (non-finite numbers written as strings)."""
    return json.dumps(_finite(record), sort_keys=True, default=str)


def write_records(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Write records as JSON Lines (one object per suspect), atomically."""
    atomic_write_text(path, "".join(to_json_line(r) + "\n" for r in records))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj or obj in (float("inf"), float("-inf")):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
