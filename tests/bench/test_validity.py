"""The validity benchmark: null p-values over key draws x suspects made without the secret."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ownmark.bench.studies.nulls_zoo import BiasedLabel, ConstantLabel, SuspectSpec, classifier_specs
from ownmark.bench.studies.validity import (
    INVALID_TEST,
    OWN_TEST,
    PRESETS,
    ValiditySettings,
    clopper_pearson,
    draw_key,
    ecdf_excess,
    measure,
    rows_csv,
    run_validity,
    summarise,
    validity_section,
)
from ownmark.errors import ConfigError, UnknownNameError


def test_clopper_pearson_matches_known_values():
    assert clopper_pearson(0, 200)[0] == 0.0
    assert clopper_pearson(0, 200)[1] == pytest.approx(1 - 0.025 ** (1 / 200), rel=1e-6)
    lo, hi = clopper_pearson(20, 192)
    assert 0.06 < lo < 0.104 < hi < 0.16
    assert clopper_pearson(5, 5)[1] == 1.0


def test_ecdf_excess_is_zero_for_uniform_grid_and_large_for_small_pvalues():
    n = 100
    assert ecdf_excess([(i + 1) / n for i in range(n)]) == pytest.approx(0.0, abs=1e-9)
    assert ecdf_excess([1e-5] * 30 + [0.9] * 70) == pytest.approx(0.3 - 1e-5)


def test_summarise_flags_an_excess_of_small_null_pvalues():
    # 200 nulls of one suspect, 10 below 0.01: rate 0.05, lower bound 0.024 > 0.01
    rows = [{"scheme": "s", "test": "t", "role": "null", "suspect": "x", "key_seed": i,
             "p_value": 1e-4 if i < 10 else 0.5, "smallest_p": 1e-6} for i in range(200)]  # fmt: skip
    entry = summarise(rows)[0]
    assert entry["claims@0.01"] == 10 and entry["lower@0.01"] > 0.01
    assert entry["valid"] is False
    uniform = [{**r, "p_value": (r["key_seed"] + 1) / 200} for r in rows]
    assert summarise(uniform)[0]["valid"] is True


def test_an_exact_test_over_many_suspects_is_rarely_flagged():
    """24 suspects x 200 keys of an exact rank test (p uniform on 1/720 .. 1): the worst suspect's
    rate lies above alpha by chance; the Bonferroni bound keeps the false alarm near 5% (measured
    with the plain 95% bound: 10 of 20 replicates flagged; with it: 0 of 20)."""
    import random

    flagged = 0
    for rep in range(20):
        rng = random.Random(rep)
        rows = [{"scheme": "s", "test": "t", "role": "null", "suspect": f"m{s}", "key_seed": i,
                 "p_value": rng.randrange(1, 721) / 720, "smallest_p": 1 / 720}
                for s in range(24) for i in range(200)]  # fmt: skip
        flagged += not summarise(rows)[0]["valid"]
    assert flagged <= 3, flagged


def test_section_and_csv_have_a_line_per_entry():
    rows = [{"scheme": "s", "test": "t", "role": "null", "suspect": "x", "key_seed": i, "p_value": 0.5,
             "smallest_p": 0.01} for i in range(3)]  # fmt: skip
    text = validity_section(summarise(rows), seconds={"total": 1.0})
    assert "| s | t | 3 x 1 | 0.01 | 0/3" in text and "total 1" in text
    assert rows_csv(rows).count("\n") == 4


def test_degenerate_suspects_answer_as_described():
    x = torch.zeros(6, 1, 28, 28)
    assert ConstantLabel(4, 10)(x).argmax(1).tolist() == [4] * 6
    base = lambda x: torch.nn.functional.one_hot(torch.arange(len(x)) % 10, 10).float() * 0.2  # noqa: E731
    assert (BiasedLabel(base, 3, 0.3, 10)(x).argmax(1) == 3).all()
    with pytest.raises(ConfigError, match="bias"):
        BiasedLabel(base, 3, 1.5, 10)


def test_zoo_lists_at_least_twenty_distinct_suspects_of_every_kind():
    specs = classifier_specs("lenet")
    assert len(specs) >= 20 and len({s.name for s in specs}) == len(specs)
    assert {s.kind for s in specs} >= {"owner", "trained", "finetuned", "constant", "biased", "distilled", "sklearn"}
    assert {s.split for s in specs if s.kind == "distilled"} >= {"attacker", "photos", "digits"}
    with pytest.raises(ConfigError, match="kind"):
        SuspectSpec("x", "magic")


def test_run_validity_refuses_unknown_preset_scheme_and_family(tmp_path):
    with pytest.raises(UnknownNameError, match="preset"):
        run_validity(tmp_path, preset="huge")
    with pytest.raises(ConfigError, match="not in preset"):
        run_validity(tmp_path, preset="tiny", schemes=["awencoder"])
    with pytest.raises(ConfigError, match="family 'classifier', not 'encoder'"):
        run_validity(tmp_path, preset="tiny", family="encoder")
    with pytest.raises(ConfigError, match="no model family"):
        run_validity(tmp_path, family="audio")
    with pytest.raises(ConfigError, match="family"):
        ValiditySettings(family="audio")
    with pytest.raises(ConfigError, match="unknown tests"):
        ValiditySettings(tests={"fcw": ("t-test",)})


def test_draw_key_equals_the_key_embed_makes_for_baselines(mnist_splits):
    from ownmark.watermarks import WATERMARKS

    scheme = WATERMARKS.get("content")()
    key = draw_key(scheme, None, mnist_splits.owner, seed=3)
    trig, target = scheme.make_triggers(mnist_splits.owner, seed=3)
    assert key.scheme == "content" and key.meta["target"] == target
    assert all(torch.equal(key.tensors[k], v) for k, v in trig.items())


TINY = replace(PRESETS["tiny"], n_keys=16)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread):
    workdir = tmp_path_factory.mktemp("validity")
    return workdir, measure(TINY, workdir)


@pytest.mark.slow
def test_tiny_run_has_a_row_per_key_and_suspect(tiny_run):
    _, report = tiny_run
    assert report.errors == {}
    suspects = len(classifier_specs("lenet", size="tiny"))
    for test in (OWN_TEST, INVALID_TEST):
        nulls = [r for r in report.rows if r["test"] == test and r["role"] == "null"]
        assert len(nulls) == TINY.n_keys * suspects
        assert len({(r["key_seed"], r["suspect"]) for r in nulls}) == len(nulls)
        assert all(0 < r["p_value"] <= 1 and r["queries"] > 0 for r in nulls)
    marked = [r for r in report.rows if r["role"] == "marked"]
    assert len(marked) == 2 and all(r["draw_key_matches_embed"] for r in marked)


@pytest.mark.slow
def test_constant_and_biased_models_are_never_claimed_by_the_rank_test(tiny_run):
    _, report = tiny_run
    degenerate = [r for r in report.rows if r["test"] == OWN_TEST and r["kind"] in ("constant", "biased")]
    assert len(degenerate) == 3 * TINY.n_keys
    assert min(r["p_value"] for r in degenerate) > 0.01
    own = next(s for s in report.summary if s["test"] == OWN_TEST)
    # a valid test is claimed ~1% of the time: 1.3 of 128 nulls expected at 0.01; 5 or more has probability 0.01
    assert own["valid"] and own["claims@0.01"] <= 4 and 0 < own["smallest_p"] <= 0.01


@pytest.mark.slow
def test_bench_reports_the_excess_of_the_invalid_binomial_test(tiny_run):
    _, report = tiny_run
    bad = next(s for s in report.summary if s["test"] == INVALID_TEST)
    # constant models answer the key's label on every trigger whenever it is theirs (about 1 key in 10)
    assert bad["valid"] is False
    assert bad["lower@0.01"] > 0.01 and bad["max_ecdf_excess"] > 0.05
    assert bad["tpr_marked@0.01"] == 1.0


@pytest.mark.slow
def test_outputs_are_written_and_a_rerun_resumes_from_them(tiny_run):
    workdir, report = tiny_run
    assert (workdir / "validity-ecdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((workdir / "validity-rows.json").read_text()) == json.loads(json.dumps(report.rows))
    assert (workdir / "validity-rows.csv").read_text().count("\n") == len(report.rows) + 1
    assert "binomial-1/K" in (workdir / "validity.md").read_text()
    again = measure(TINY, workdir)  # every model and row group is cached
    assert again.seconds["wall"] < max(10.0, report.seconds["wall"] / 2)
    assert [r["p_value"] for r in again.rows] == [r["p_value"] for r in report.rows]
    assert not any(math.isnan(s["rate@0.01"]) for s in again.summary)


@pytest.mark.slow
def test_two_worker_processes_give_the_rows_of_one(tiny_run, tmp_path):
    import shutil

    workdir, report = tiny_run
    shutil.copytree(workdir / "models", tmp_path / "models")  # the zoo and marked models, not the rows
    parallel = measure(TINY, tmp_path, workers=2)
    assert parallel.errors == {}
    key = [(r["scheme"], r["test"], r["suspect"], r["key_seed"], r["p_value"]) for r in report.rows]
    assert sorted(key) == sorted(
        (r["scheme"], r["test"], r["suspect"], r["key_seed"], r["p_value"]) for r in parallel.rows
    )
    assert (tmp_path / "keys").is_dir() and "2 workers" in (tmp_path / "validity.md").read_text()


# --------------------------------------------------------------------------- encoders, image-to-image
@pytest.fixture(scope="module")
def tiny_encoder_run(tmp_path_factory, one_thread):
    workdir = tmp_path_factory.mktemp("validity-encoder")
    return workdir, run_validity(workdir, preset="tiny-encoder")


@pytest.mark.slow
def test_encoder_nulls_are_claimed_no_more_than_alpha_and_the_marked_encoder_is(tiny_encoder_run):
    from ownmark.bench.studies.validity_families import ENCODER_SUSPECTS_TINY

    _, report = tiny_encoder_run
    assert report.errors == {}
    settings = PRESETS["tiny-encoder"]
    nulls = [r for r in report.rows if r["role"] == "null"]
    assert len(nulls) == settings.n_keys * len(ENCODER_SUSPECTS_TINY)
    assert {r["family"] for r in report.rows} == {"encoder"}
    # a constant feature vector gives every candidate the same effect: ties count against the owner
    assert all(r["p_value"] == 1.0 for r in nulls if r["suspect"] == "constant-features")
    s = report.summary[0]
    # 96 nulls: ~1 expected at 0.01 and ~5 at 0.05 (measured 2 and 4); P(>= 5) and P(>= 12) are ~0.003
    assert s["valid"] and s["claims@0.01"] <= 4 and s["claims@0.05"] <= 11
    assert s["smallest_p"] == pytest.approx(0.01)
    marked = [r for r in report.rows if r["role"] == "marked"]
    assert len(marked) == 1 and marked[0]["draw_key_matches_embed"] and marked[0]["p_value"] <= 0.01
    assert "## Validity (encoders)" in Path(report.files["validity.md"]).read_text()


@pytest.fixture(scope="module")
def tiny_i2i_run(tmp_path_factory, one_thread):
    workdir = tmp_path_factory.mktemp("validity-i2i")
    return workdir, run_validity(workdir, preset="tiny-image2image")


@pytest.mark.slow
def test_image2image_nulls_keep_the_exact_bit_test_valid(tiny_i2i_run):
    from ownmark.bench.studies.validity_families import I2I_SUSPECTS_TINY

    _, report = tiny_i2i_run
    assert report.errors == {}
    nulls = [r for r in report.rows if r["role"] == "null"]
    assert len(nulls) == PRESETS["tiny-image2image"].n_keys * len(I2I_SUSPECTS_TINY)
    s = report.summary[0]
    assert s["smallest_p"] < 1e-18  # 1 / C(64, 32)
    assert s["valid"] and s["claims@0.01"] <= 3 and s["max_ecdf_excess"] < 0.2
    # the identity, a grey image and a classical filter never saw the owner's network
    outside = [r["p_value"] for r in nulls if r["kind"] in ("identity", "constant", "filter")]
    assert len(outside) == 3 * PRESETS["tiny-image2image"].n_keys and min(outside) > 1e-3


def test_deepwm_keys_share_an_extractor_and_redraw_the_secret():
    from types import SimpleNamespace

    from ownmark.bench.studies.validity_families import deepwm_keys
    from ownmark.core import Key

    def draw_key(model, data, *, seed):
        bits = torch.tensor([1, 0] * 8)
        return Key("deepwm", {}, {"R.w": torch.full((2,), float(seed)), "bits": bits}, {"seed": seed})

    def with_bits(key, seed):
        g = torch.Generator().manual_seed(seed)
        return Key("deepwm", {}, {**key.tensors, "bits": torch.randperm(16, generator=g) % 2}, dict(key.meta))

    scheme = SimpleNamespace(draw_key=draw_key, with_bits=with_bits)
    keys = deepwm_keys(scheme, None, None, [10, 11, 12, 13, 14], extractors=2)
    assert [float(k.tensors["R.w"][0]) for k in keys] == [10, 11, 10, 11, 10]
    assert len({tuple(k.tensors["bits"].tolist()) for k in keys}) >= 4
    with pytest.raises(ConfigError, match="extractor"):
        deepwm_keys(scheme, None, None, [1], extractors=0)


def test_encoder_and_i2i_answerers_from_outside_the_project():
    from ownmark.bench.studies.validity_families import ConstantImage, Identity, PixelFeatures, UnsharpMask

    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(Identity()(x), x) and (ConstantImage()(x) == 0.5).all()
    sharp = UnsharpMask()(x)
    assert not sharp.isnan().any()
    assert sharp.shape == x.shape and 0 <= sharp.min() and sharp.max() <= 1 and not torch.equal(sharp, x)
    for kind in ("pca", "random"):
        assert PixelFeatures(kind, torch.rand(40, 3, 8, 8), 4, 0)(x).shape == (5, 4)
    with pytest.raises(ConfigError, match="pca"):
        PixelFeatures("umap", x, 4, 0)
