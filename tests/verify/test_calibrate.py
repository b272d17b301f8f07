import json
from pathlib import Path

import pytest

from ownmark.core import Evidence
from ownmark.errors import ConfigError, IntegrityError, MissingFileError
from ownmark.verify import Calibration, binomial_pvalue, calibrate, upper_bound


def nulls() -> dict[str, Evidence]:
    ks = {"seed1": 4, "seed2": 12, "resnet": 0, "lenet": 30, "other-data": 6}
    return {name: Evidence("fcw", k=k, n=50, p0=0.1, queries=120) for name, k in ks.items()}


def test_calibrate_pools_matches_into_p0() -> None:
    c = calibrate(nulls(), key_digest="d" * 64, confidence=0.95, alpha=0.01)
    assert c.p0 == upper_bound(4 + 12 + 0 + 30 + 6, 5 * 50, 0.95)
    assert c.scheme == "fcw" and c.key_digest == "d" * 64 and c.confidence == 0.95 and c.alpha == 0.01
    assert [row["name"] for row in c.models] == list(nulls())
    rows = {row["name"]: row for row in c.models}
    assert rows["seed2"]["k"] == 12 and rows["seed2"]["n"] == 50 and rows["seed2"]["rate"] == 0.24
    assert rows["seed2"]["p_value"] == binomial_pvalue(12, 50, 0.1)


def test_false_positive_rate_counts_owned_nulls() -> None:
    c = calibrate(nulls(), key_digest="x", alpha=0.01)
    # at nominal p0 = 0.1: 30/50 and 12/50 are significant at 0.01 (p = 0.003), 6/50 and below are not
    owned = {row["name"] for row in c.models if row["owned"]}
    assert owned == {name for name, ev in nulls().items() if binomial_pvalue(ev.k, ev.n, 0.1) <= 0.01}
    assert owned == {"lenet", "seed2"}
    assert c.false_positive_rate == 2 / 5


def test_clean_nulls_have_no_false_positives() -> None:
    ev = {f"m{i}": Evidence("fcw", k=i % 3, n=40, p0=0.25, queries=40) for i in range(6)}
    c = calibrate(ev, key_digest="x", confidence=0.99)
    assert c.false_positive_rate == 0.0
    assert c.p0 == upper_bound(0 + 1 + 2 + 0 + 1 + 2, 240, 0.99)
    assert 6 / 240 < c.p0 < 0.25


def test_calibration_round_trip(tmp_path: Path) -> None:
    c = calibrate(nulls(), key_digest="abc", confidence=0.99)
    c.save(tmp_path / "cal.json")
    assert json.loads((tmp_path / "cal.json").read_text())["kind"] == "calibration"
    loaded = Calibration.load(tmp_path / "cal.json")
    assert loaded == c and type(loaded.p0) is float
    assert [p.name for p in tmp_path.iterdir()] == ["cal.json"]


def test_load_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "key.json").write_text(json.dumps({"kind": "key", "sha256": "00"}))
    with pytest.raises(IntegrityError, match="not an ownmark calibration file"):
        Calibration.load(tmp_path / "key.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(IntegrityError):
        Calibration.load(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text('{"kind": "calibration", ')
    with pytest.raises(IntegrityError):
        Calibration.load(tmp_path / "bad.json")
    with pytest.raises(MissingFileError):
        Calibration.load(tmp_path / "none.json")


def test_load_refuses_a_calibration_with_missing_fields(tmp_path: Path) -> None:
    (tmp_path / "cal.json").write_text(json.dumps({"kind": "calibration", "scheme": "fcw"}))
    with pytest.raises(IntegrityError):
        Calibration.load(tmp_path / "cal.json")


def test_calibrate_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="at least one null model"):
        calibrate({}, key_digest="x")
    mixed = {"a": Evidence("fcw", 1, 10, 0.1, 10), "b": Evidence("adi", 1, 10, 0.1, 10)}
    with pytest.raises(ConfigError, match=r"one scheme, got \['adi', 'fcw'\]"):
        calibrate(mixed, key_digest="x")
    with pytest.raises(ConfigError, match="alpha"):
        calibrate(nulls(), key_digest="x", alpha=1.5)
