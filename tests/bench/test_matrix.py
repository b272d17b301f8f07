"""The bench matrix: configs, a real run on mnist5k, resuming a killed run, Ray, pruning trend."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ownmark.bench.executors import make_executor
from ownmark.bench.plan import MatrixConfig, expand, load_config
from ownmark.bench.run import run_matrix
from ownmark.bench.store import ResultStore
from ownmark.errors import ConfigError, MissingFileError, UnknownNameError

TIMING = {"cost_seconds", "cell_seconds"}
AMOUNTS = [0.5, 0.95, 0.99]
TINY = {  # one scheme: the trigger-set baselines need more than 2 epochs to be verifiable (tests/watermarks)
    "name": "tiny",
    "seeds": [0],
    "clean": {"epochs": 3},
    "schemes": {"fcw": {"set": {"epochs": 2, "milestones": []}}},
    "attacks": [{"name": "none"}, {"name": "prune", "sweep": {"amount": AMOUNTS}}, {"name": "flip"}],
    "nulls": {"archs": ["cnn2"], "seeds": 1},
    "null_training": {"epochs": 2},
}


def _write_yaml(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


def _rows(workdir: Path) -> dict[str, dict]:
    store = ResultStore(workdir / "results.sqlite")
    with sqlite3.connect(store.path) as db:
        raw = dict(db.execute("SELECT id, row FROM rows"))
    return {
        k: {f: v for f, v in json.loads(r).items() if f not in TIMING}
        for k, r in raw.items()
        if not k.startswith("run|")
    }


def test_presets_load_and_expand_sweeps() -> None:
    quick = load_config("quick")
    classifiers = {"fcw", "content", "noise", "unrelated", "ptynet"}
    assert set(quick.schemes) == classifiers | {"awencoder", "deepwm"} and quick.seeds == (0, 1)
    assert quick.families() == ["classifier", "encoder", "image2image"]
    assert [c[1] for c in quick.cells() if c[1] in ("strip", "ft-target")] == ["ft-target"] * 2 + ["strip"] * 2
    # each family meets only the attacks that fit its models: no label-head fine-tuning of an encoder,
    # no encoder fine-tuning of a classifier; pruning and "none" reach both
    by_scheme = {s: {c[1].split()[0] for c in quick.cells() if c[0] == s} for s in quick.schemes}
    assert by_scheme["awencoder"] == {"none", "prune", "enc-finetune", "enc-ssl"}
    assert load_config("quick").scheme_config("awencoder") == load_config("awencoder").scheme_config("awencoder-secret")
    assert by_scheme["deepwm"] == {"none", "surrogate", "output-noise", "output-jpeg"}
    assert {"prune", "ftal", "distill-probs"} <= by_scheme["fcw"] and not by_scheme["fcw"] & {"enc-finetune", "enc-ssl"}
    nulls = quick.null_names()
    assert sum(n.family == "classifier" for n in nulls) >= 21  # >= 20 independent models per scheme
    assert sum(n.family == "encoder" for n in nulls) >= 5 and {n.method for n in nulls} >= {"simclr", "moco", "byol"}
    assert {n.arch for n in nulls if n.family == "image2image"} == {"encdec", "unet", "resnet-i2i"}
    labels = [label for label, _ in expand({"name": "prune", "sweep": {"amount": [0.1, 0.5]}})]
    assert labels == ["prune amount=0.1", "prune amount=0.5"]
    assert load_config("paper").dataset == "tv:CIFAR10"


def test_config_files_yaml_and_toml(tmp_path: Path) -> None:
    yaml_cfg = load_config(path=_write_yaml(tmp_path / "b.yaml", {"preset": "smoke", "seeds": [3]}))
    assert yaml_cfg.seeds == (3,) and "fcw" in yaml_cfg.schemes
    toml = tmp_path / "b.toml"
    toml.write_text('seeds = [1, 2]\n[schemes.content]\n[[attacks]]\nname = "prune"\nsweep = { amount = [0.5] }\n')
    cfg = load_config(path=toml)
    assert cfg.seeds == (1, 2) and [c[1] for c in cfg.cells()] == ["prune amount=0.5"] * 2


@pytest.mark.parametrize(
    ("raw", "error", "match"),
    [
        ({"schemes": {"fcx": {}}}, UnknownNameError, "fcw"),
        ({"schemes": {"fcw": {}}, "attacks": [{"name": "prun"}]}, UnknownNameError, "prune"),
        ({"schemes": {"fcw": {}}, "attacks": [{"name": "prune", "sweap": {}}]}, ConfigError, "sweap"),
        ({"schemes": {"fcw": {}}, "bogus": 1}, ConfigError, "bogus"),
        ({"schemes": {}}, ConfigError, "at least one scheme"),
        ({"schemes": {"fcw": {}}, "attacks": [{"name": "strip"}]}, ConfigError, "injected models only"),
        ({"schemes": {"fcw": {}}, "attacks": [{"name": "enc-ssl"}]}, ConfigError, "no scheme here marks one"),
        ({"schemes": {"fcw": {}}, "attacks": [{"name": "prune", "families": ["encoders"]}]}, ConfigError, "encoders"),
        ({"schemes": {"deepwm": {}}, "image2image": {"task": "paint"}}, UnknownNameError, "deblur"),
        ({"schemes": {"deepwm": {}}, "image2image": {"nulls": [["unet", 1]]}}, ConfigError, "owner"),
        ({"schemes": {"awencoder": {}}, "encoder": {"calibration": [["conv4", "simclr", 1]]}}, ConfigError, ">= 5"),
        ({"schemes": {"awencoder": {}}, "encoder": {"nulls": [["conv4", "simclr", 1, "x"]]}}, ConfigError, "owner"),
        ({"schemes": {"awencoder": {}}, "encoder": {"dims": 3}}, ConfigError, "dims"),
        ({"schemes": {"awencoder": {}}, "encoder": {"adapt_lrs": [0.0]}}, ConfigError, "adapt_lrs"),
        # the families' typed settings are parsed once, when the config is built: a bad value fails here,
        # not in a task minutes later
        ({"schemes": {"awencoder": {}}, "encoder": {"ssl": {"epoch": 2}}}, ConfigError, "SSLConfig"),
        ({"schemes": {"awencoder": {}}, "encoder": {"dim": "128"}}, ConfigError, "encoder.dim"),
        ({"schemes": {"deepwm": {}}, "image2image": {"epochs": 0}}, ConfigError, "image2image.epochs"),
        ({"schemes": {"fcw": {}}, "nulls": {"seeds": "abc"}}, ConfigError, "nulls.seeds"),
        ({"schemes": {"fcw": {}}, "nulls": {"arches": ["cnn2"]}}, ConfigError, "arches"),
        ({"schemes": {"fcw": {}}, "clean": {"epochz": 3}}, ConfigError, "epochz"),
        # schemes' and attacks' settings are resolved on load too (they used to fail in the embed or cell task)
        ({"schemes": {"fcw": {"set": {"epochz": 2}}}}, ConfigError, "FCWConfig has no setting 'epochz'"),
        ({"schemes": {"fcw": {"preset": "nope"}}}, UnknownNameError, "no preset 'nope'"),
        ({"schemes": {"fcw": {"sett": {}}}}, ConfigError, "scheme 'fcw' is"),
        ({"schemes": {"fcw": {}}, "attacks": [{"name": "prune", "set": {"amountt": 0.5}}]}, ConfigError, "amountt"),
        (
            {"schemes": {"fcw": {}}, "attacks": [{"name": "prune", "sweep": {"amount": [0.5, "x"]}}]},
            ConfigError,
            "amount",
        ),
        (
            {
                "schemes": {"fcw": {}},
                "attacks": [{"name": "prune", "set": {"amount": 0.5}}, {"name": "prune", "set": {"amount": 0.9}}],
            },
            ConfigError,
            "labelled",
        ),
    ],
)
def test_bad_configs_are_refused(raw: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        MatrixConfig.from_dict(raw)


def test_families_settings_are_typed_and_parsed_once() -> None:
    config = load_config("quick")
    encoder, i2i, classifier = (config.settings(f) for f in ("encoder", "image2image", "classifier"))
    assert encoder.dim == 128 and encoder.adapt_lrs == (0.001, 0.01) and encoder.blackbox is False
    assert len(encoder.calibration) == 5 and all(len(c) == 3 for c in encoder.calibration)
    assert i2i.task == "deblur" and i2i.epochs == 10 and i2i.nulls[0] == ("encdec", 301, "owner")
    assert classifier.null_archs == ("cnn2", "lenet") and classifier.null_seeds == 10 and classifier.attacker_model
    assert classifier.nulls.epochs == 6 and classifier.clean.epochs == 10  # null_training over clean
    assert config.settings("encoder") is encoder  # the object parsed when the config was built
    # every scheme's config and every cell's attack stages are resolved once, on load
    from ownmark.watermarks import WATERMARKS

    assert config.scheme_config("awencoder") == WATERMARKS.get("awencoder").presets["secret"].config  # its default
    ((name, ftal),) = config.attack_stages[("fcw", "ftal lr=0.05")]
    assert name == "ftal" and ftal.lr == 0.05 and ftal.epochs == 3 and config.attack_stages[("fcw", "none")] == ()
    assert "family_settings" not in config.to_dict() and config.to_dict()["seeds"] == [0, 1]
    # tasks carry the config itself to worker processes: it survives pickling with its parsed settings
    import pickle

    again = pickle.loads(pickle.dumps(config))
    assert again == config and again.settings("encoder") == encoder


def test_missing_or_bad_config_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError):
        load_config(path=tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("schemes: [unclosed")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(path=bad)
    with pytest.raises(UnknownNameError, match="quick"):
        load_config("quik")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted serial run of the tiny matrix on mnist5k."""
    workdir = tmp_path_factory.mktemp("tiny")
    run_matrix(MatrixConfig.from_dict(TINY), workdir, executor=make_executor("serial"))
    return workdir


@pytest.mark.slow
def test_run_stores_one_row_per_cell_with_real_outcomes(tiny_run: Path) -> None:
    rows = _rows(tiny_run)
    cells = {k: r for k, r in rows.items() if k.startswith("cell|")}
    assert len(cells) == 2 + len(AMOUNTS) and len(rows) == len(cells) + 1  # + one null row
    marked = cells["cell|fcw|none|0"]
    # measured: 89 of 100 fusions of the key's pair read as t, p 1/360 (the smallest), accuracy 0.92
    assert marked["owned"] and marked["wm_rate"] >= 0.8 and marked["acc_marked"] > 0.85
    assert marked["p_value"] == pytest.approx(1 / 360)
    null = rows["null|cnn2-seed1000|fcw|0"]
    assert not null["owned"] and null["p_value"] > 0.01
    # a re-run has nothing left to do
    assert run_matrix(MatrixConfig.from_dict(TINY), tiny_run, executor=make_executor("serial")) == 0


@pytest.mark.slow
def test_pruning_sweep_costs_accuracy_and_then_the_verdict(tiny_run: Path) -> None:
    stored = _rows(tiny_run)
    rows = [stored[f"cell|fcw|prune amount={a}|0"] for a in AMOUNTS]
    acc = [r["acc_attacked"] for r in rows]
    margin = 0.03  # pruning a little can nudge accuracy up; a rise above 3 points breaks the trend
    assert all(b <= a + margin for a, b in zip(acc, acc[1:], strict=False)), acc
    assert acc[-1] < acc[0] - 0.2  # heavy pruning really costs accuracy
    # measured (accuracy 0.92, 0.90, 0.58; fusions read as t 0.88, 0.71, 0.57): the verdict survives
    # pruning that keeps accuracy and is lost with it
    assert rows[0]["owned"] and rows[0]["wm_rate"] >= 0.8 and rows[1]["owned"]
    assert not rows[-1]["owned"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tiny_run: Path, tmp_path: Path) -> None:
    cfg = _write_yaml(tmp_path / "tiny.yaml", TINY)
    workdir = tmp_path / "killed"
    cmd = [str(Path(sys.executable).parent / "ownmark"), "bench", "run", "--config", str(cfg)]
    cmd += ["--workdir", str(workdir), "--executor", "serial"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if (workdir / "results.sqlite").is_file() and len(ResultStore(workdir / "results.sqlite").done()) >= 2:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    partial = len(ResultStore(workdir / "results.sqlite").done())
    total = 2 + len(AMOUNTS) + 1
    assert 2 <= partial < total
    written = run_matrix(MatrixConfig.from_dict(TINY), workdir, executor=make_executor("serial"))
    assert written == total - partial  # only the missing rows
    assert _rows(workdir) == _rows(tiny_run)


@pytest.mark.slow
def test_ray_executor_on_a_local_instance_matches_serial(tiny_run: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    shutil.copytree(tiny_run / "models", tmp_path / "ray" / "models")  # the trained models: the cells run on ray
    try:
        run_matrix(MatrixConfig.from_dict(TINY), tmp_path / "ray", executor=make_executor("ray", workers=2))
    finally:
        ray.shutdown()
    assert _rows(tmp_path / "ray") == _rows(tiny_run)


@pytest.mark.slow
def test_local_worker_processes_match_serial(tiny_run: Path, tmp_path: Path) -> None:
    """The clean and marked models come from the serial run (the killed-run test trains them in a fresh run);
    the worker processes run every cell and the null model."""
    shutil.copytree(tiny_run / "models", tmp_path / "local" / "models")
    run_matrix(MatrixConfig.from_dict(TINY), tmp_path / "local", executor=make_executor("local", workers=2))
    assert _rows(tmp_path / "local") == _rows(tiny_run)


@pytest.mark.slow
def test_report_from_a_run(tiny_run: Path, tmp_path: Path) -> None:
    from ownmark.bench.report import write_report

    md, html = write_report(tiny_run, tmp_path / "report")
    text = md.read_text()
    assert "| fcw | prune |" in text  # the removal table's row
    assert "data:image/png;base64," in html.read_text()


def test_timings_section_of_a_run_gives_phases_groups_and_attacks(tiny_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ownmark.cli import app

    runs = ResultStore(tiny_run / "results.sqlite").rows("run")
    phases = runs[0]["phase_seconds"]
    assert set(phases) == {"models", "embedding", "cells and nulls"}
    # the clean model and the embedding trained here: real seconds, within the call's wall time
    assert phases["models"] > 0.5 and phases["embedding"] > 0.5 and sum(phases.values()) <= runs[0]["seconds"]
    out = tmp_path / "BENCHMARKS.md"
    result = CliRunner().invoke(app, ["bench", "timings", "--workdir", str(tiny_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "Wall time per phase: models " in text and ", cells and nulls " in text
    # prune is a model modification, flip an input transform: each in its group's row and its attack's row
    assert "| modification | 1 | 3 |" in text and "| preprocessing | 1 | 1 |" in text
    assert "| prune | modification | 3 |" in text and "| flip | preprocessing | 1 |" in text


# The encoder and image-to-image rows of the matrix (awencoder-smoke, image2image-smoke) are checked on the
# runs of the studies that read them (tests/bench/test_encoders_bench.py, tests/image2image/test_bench_cli.py):
# one training of each preset in the suite.


def test_report_needs_results(tmp_path: Path) -> None:
    from ownmark.bench.report import write_report

    with pytest.raises(MissingFileError, match="bench run"):
        write_report(tmp_path, tmp_path / "r")


def test_a_chained_attack_entry_runs_its_stages_in_order() -> None:
    """`then` chains attacks in one cell (the combined attacks of the full preset)."""
    from types import SimpleNamespace

    from ownmark.bench.plan import MatrixConfig, expand
    from ownmark.bench.tasks import _attack
    from ownmark.data.toy import toy_images
    from ownmark.models import ModelSpec

    spec = {"name": "prune", "set": {"amount": 0.5}, "then": [{"name": "squeeze", "set": {"bits": 1}}]}
    ((label, setting),) = expand(spec)
    assert label == "prune+squeeze" and setting["then"] == [{"name": "squeeze", "set": {"bits": 1}}]
    config = MatrixConfig.from_dict({"name": "x", "schemes": {"fcw": {}}, "attacks": [spec]})
    stages = config.attack_stages[("fcw", "prune+squeeze")]
    assert [name for name, _ in stages] == ["prune", "squeeze"] and stages[1][1].bits == 1
    model = ModelSpec("cnn2", 3, 4, 16).build().eval()
    ctx = SimpleNamespace(splits=SimpleNamespace(attacker=toy_images()))
    attacked, cost = _attack(stages, model, ctx, 0, None)
    assert cost.details["amount"] == 0.5 and attacked.transform.bits == 1  # pruned, then served behind 1-bit inputs
    from ownmark.attacks.prune import prunable_weights

    weights = torch.cat([w.detach().flatten() for w in prunable_weights(attacked.model)])
    assert float((weights == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ConfigError, match="each stage under `then`"):
        MatrixConfig.from_dict({"name": "x", "schemes": {"fcw": {}}, "attacks": [{"name": "prune", "then": ["ftal"]}]})
    with pytest.raises(UnknownNameError, match="nope"):
        MatrixConfig.from_dict(
            {"name": "x", "schemes": {"fcw": {}}, "attacks": [{"name": "prune", "then": [{"name": "nope"}]}]}
        )


def test_ablation_preset_meets_each_variant_with_its_defaults_attacks() -> None:
    """Issue 17 item 4: FCW without masking and with direct fusion (the default fuses invisibly), PTYNet's
    three background strategies, deepwm without its second stage, each under exactly its default's attack
    settings, and each a design that differs from its default (an `invisible` variant equal to the default
    ran for a whole bench before this was checked)."""
    cfg = load_config("ablations")
    labels: dict[str, set[str]] = {}
    for scheme, label, _setting, _seed in cfg.cells():
        labels.setdefault(scheme, set()).add(label)
    pairs = {"fcw": ("fcw-no-mask", "fcw-direct"), "ptynet": ("ptynet-multi", "ptynet-generated"),
             "deepwm": ("deepwm-one-stage",)}  # fmt: skip
    for default, variants in pairs.items():
        for variant in variants:
            assert labels[variant] == labels[default], variant
            assert cfg.scheme_config(variant) != cfg.scheme_config(default), variant
    assert {"strip", "ft-target", "trigger-detect", "squeeze bits=1"} <= labels["ptynet-generated"]
    assert cfg.schemes["deepwm-one-stage"]["set"] == {"surrogate_epochs": 0} and cfg.seeds == (0, 1)


def test_a_file_narrowing_a_presets_schemes_keeps_the_attacks_that_fit_them(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text("preset: full\nseeds: [0]\nschemes:\n  fcw: {}\n")
    cfg = load_config(path=path)
    names = {setting["name"] for _scheme, _label, setting, _seed in cfg.cells()}
    assert {"ftal", "trigger-detect", "neural-laundering", "squeeze"} <= names
    assert not names & {"enc-finetune", "surrogate", "strip", "enc-purify", "output-squeeze"}
    detectors = [a for a in cfg.attacks if a["name"] == "trigger-detect"]
    assert detectors == [{"name": "trigger-detect", "schemes": ["fcw"], "set": {"scheme": "fcw"}}]
    path.write_text("preset: full\nschemes:\n  fcw: {}\nattacks:\n  - {name: enc-ssl}\n")  # own attacks: checked
    with pytest.raises(ConfigError, match="enc-ssl"):
        load_config(path=path)


def test_a_scheme_added_to_a_run_gets_its_null_rows_on_resume() -> None:
    """A null model counts as done only when its rows exist for every (scheme, seed) key of its family: the
    ablations run resumed with a new FCW variant would otherwise have left that variant without null rows."""
    from ownmark.bench.run import _keys_of, _null_done

    cfg = load_config("ablations")
    keys = _keys_of(cfg, "classifier")
    assert ("fcw-direct", 1) in keys and ("ptynet", 0) in keys and not any(s.startswith("deepwm") for s, _ in keys)
    stored = {f"null|cnn2-seed1000|{scheme}|{seed}" for scheme, seed in keys}
    assert _null_done("null|cnn2-seed1000", stored, keys)
    assert not _null_done("null|cnn2-seed1000", stored - {"null|cnn2-seed1000|fcw-direct|1"}, keys)
    assert not _null_done("null|lenet-seed1000", stored, keys)
