import json
from pathlib import Path

import numpy as np
import pytest

from ownmark.core import Evidence
from ownmark.errors import ConfigError, IntegrityError, KeyMismatchError, MissingFileError
from ownmark.verify import Calibration, binomial_pvalue, calibrate, decide, upper_bound
from ownmark.verify.calibrate import quantile_bound


def nulls() -> dict[str, Evidence]:
    ks = {"seed1": 4, "seed2": 12, "resnet": 0, "lenet": 30, "other-data": 6}
    return {name: Evidence("fcw", k=k, n=50, p0=0.1, queries=120) for name, k in ks.items()}


def test_calibrated_p0_bounds_a_high_quantile_of_per_model_rates_never_below_1_over_k() -> None:
    c = calibrate(nulls(), key_digest="d" * 64, confidence=0.95, alpha=0.01)
    assert c.scheme == "fcw" and c.key_digest == "d" * 64 and c.confidence == 0.95 and c.alpha == 0.01
    assert c.nominal_p0 == 0.1 and c.test == "binomial"
    # at least the worst null model's own upper bound (30/50), not the pooled mean (52/250)
    assert c.p0 >= upper_bound(30, 50, 0.95) > upper_bound(52, 250, 0.95)
    assert c.p0 == quantile_bound([(4, 50), (12, 50), (0, 50), (30, 50), (6, 50)], coverage=0.999, confidence=0.95)
    assert [row["name"] for row in c.models] == list(nulls())
    rows = {row["name"]: row for row in c.models}
    assert rows["seed2"]["k"] == 12 and rows["seed2"]["n"] == 50 and rows["seed2"]["rate"] == 0.24
    clean = calibrate({f"m{i}": Evidence("fcw", 0, 100, 0.1, 100) for i in range(20)}, key_digest="x")
    assert clean.p0 == 0.1  # calibration never lowers the bar below 1/K


def test_false_positive_rate_is_leave_one_out_at_the_p0_used() -> None:
    """The issue's case: 20 nulls at 0/100 and one at 8/100 pooled gave p0 0.0083 and claimed that null."""
    ev = {f"m{i}": Evidence("fcw", 0, 100, 0.1, 100) for i in range(20)} | {"x": Evidence("fcw", 8, 100, 0.1, 100)}
    c = calibrate(ev, key_digest="x", alpha=0.01)
    rows = {row["name"]: row for row in c.models}
    assert rows["x"]["p0_leave_one_out"] == 0.1 and not rows["x"]["owned"]
    assert rows["x"]["p_value"] == binomial_pvalue(8, 100, 0.1)
    assert c.false_positive_rate == 0.0


def test_spread_null_rates_do_not_make_a_fresh_model_owned() -> None:
    """Null rates spread like real models (beta(0.5, 8)): a fresh independent model at the calibrated p0."""
    rng = np.random.default_rng(0)
    claims = 0
    for _ in range(200):
        q = rng.beta(0.5, 8, size=22)
        ks = rng.binomial(100, q)
        cal = calibrate({f"m{i}": Evidence("fcw", int(ks[i]), 100, 0.1, 100) for i in range(21)}, key_digest="x")
        claims += decide(Evidence("fcw", int(ks[21]), 100, cal.p0, 100), 0.01).owned
    assert claims / 200 <= 0.01 + 0.001  # alpha + (1 - coverage); the pooled-mean p0 gave 2.9%


def test_a_calibration_is_refused_for_another_key() -> None:
    c = calibrate(nulls(), key_digest="a" * 64)
    c.check_key("a" * 64)
    with pytest.raises(KeyMismatchError, match="made for key aaaa"):
        c.check_key("b" * 64)


def test_an_exact_test_takes_no_calibrated_p0_but_its_false_claims_are_measured() -> None:
    ev = {f"m{i}": Evidence("fcw", 3, 50, 0.1, 50, test="randomization", p_value=0.2 + i / 100) for i in range(4)}
    c = calibrate(ev, key_digest="x")
    assert c.p0 is None and c.test == "randomization" and c.false_positive_rate == 0.0
    with pytest.raises(ConfigError, match="takes no calibrated p0"):
        c.p0_for("randomization")


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
