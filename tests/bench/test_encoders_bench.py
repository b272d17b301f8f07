"""The encoder bench (`ownmark bench encoders`): the matrix preset's rows rendered as the encoder report."""

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ownmark import cli
from ownmark.bench.store import ResultStore
from ownmark.bench.studies.encoders import _scratch, benchmarks_section, report_markdown, run_encoder_bench


@pytest.mark.slow
def test_encoder_bench_reads_the_matrix_rows_renders_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    said: list[str] = []
    results = run_encoder_bench("awencoder-smoke", out, say=said.append)
    store = ResultStore(out / "matrix" / "results.sqlite")
    assert len(store.rows("cell")) == 2 and len(store.rows("null")) == 3  # the preset's grid, run by the matrix
    part = results["schemes"]["awencoder"]
    assert part["trigger"] == "secret" and part["decoys"] == 199 and 0 < part["delta_linf"] <= 0.3
    assert list(part["rows"]) == [
        "marked", "attack:prune", "null:enc-conv4-simclr-seed201-attacker-data",
        "null:enc-conv4-simclr-seed201-attacker-data+finetuned-lr0.001",
        "null:enc-conv4-simclr-seed201-attacker-data+finetuned-lr0.01",
    ]  # fmt: skip
    marked = part["rows"]["marked"]
    # the marked encoder: OWNED white-box at the smallest p 199 decoys give, its key's effect above every decoy's
    assert marked["owned_white"] and marked["p_white"] == pytest.approx(1 / 200)
    assert marked["effect"] > marked["decoy_max"]
    assert 0.75 <= marked["probe"] <= 1.0 and abs(marked["probe"] - results["clean"]["probe"]) <= 0.05
    assert 0.3 <= marked["digits"] <= 1.0 and 0.3 <= results["clean"]["digits"] <= 1.0  # chance: 10%
    for name, r in part["rows"].items():  # every field the tables show, from the rows, in range
        assert 0 <= r["naive_p"] <= 1 and 0 <= r["distinct"] <= 1 and 0 <= r["flip_rate"] <= 1, name
        assert r["p_black"] * 200 == pytest.approx(round(r["p_black"] * 200)) and 0.5 <= r["probe"] <= 1.0, name
        if name.startswith("null:"):  # no claim on an independent encoder, fine-tuned or not
            assert not r["owned_white"] and r["p_white"] > 0.01 and not r["owned_black"], (name, r)
    assert results["scratch"] == {}  # the smoke grid has no enc-finetune cell
    _the_matrix_rows_are_the_encoder_familys(out / "matrix", store)
    text = (out / "report.md").read_text()
    assert "## Scheme `awencoder` (trigger `secret`)" in text and "| marked | " in text and "OWNED / " in text
    assert (out / "effects.png").stat().st_size > 0 and (out / "utility.png").stat().st_size > 0
    section = benchmarks_section(results)
    assert "| `awencoder` (trigger `secret`) | " in section and "| 1/1 |" in section

    # a second run (through the CLI) reuses the stored rows, models and extras: no cell is run again
    bench_md = tmp_path / "BENCHMARKS.md"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "console", Console(width=200, color_system=None))
        res = CliRunner().invoke(
            cli.app,
            ["bench", "encoders", "--preset", "awencoder-smoke", "--out", str(out), "--benchmarks", str(bench_md)],
        )
    assert res.exit_code == 0, res.output
    assert "every cell is already stored" in res.output and "randomly initialised" not in res.output
    assert len(store.rows("run")) == 1  # no second matrix run was recorded
    assert "<!-- section:awencoder-smoke -->" in bench_md.read_text()
    again = (out / "results.json").read_text()
    assert '"p_white"' in again and (out / "report.md").read_text() == text  # the same rows and extras: the same report


def test_fine_tuning_curve_marks_retraining_from_the_scratch_baseline(tmp_path: Path) -> None:
    row = {"probe": 0.9, "effect": 0.01, "decoy_max": 0.05, "p_white": 0.4, "owned_white": False, "naive_p": 1e-9,
           "flip_rate": 0.2, "decoy_flip_max": 0.3, "distinct": 0.1, "decoy_distinct_max": 0.4, "p_black": 0.5,
           "owned_black": False}  # fmt: skip
    results = {
        "config": {"name": "x", "dataset": "mnist5k", "arch": "conv4", "dim": 128, "alpha": 0.01, "seed": 0,
                   "ssl": {"method": "simclr", "epochs": 10}, "adapt_lrs": [0.001]},
        "clean": {"probe": 0.92, "digits": 0.8}, "seconds": 60.0, "matrix_seconds": 50.0, "extras_seconds": 10.0,
        "scratch": {"enc-finetune lr=0.01": 0.91, "enc-finetune lr=0.0001": 0.5},
        "schemes": {"awencoder": {"trigger": "secret", "decoys": 199, "delta_linf": 0.15, "rows": {
            "marked": {**row, "p_white": 0.005, "owned_white": True, "effect": 0.3, "digits": 0.8},
            "attack:enc-finetune lr=0.01": row,
            "null:enc-x": {**row, "probe": None, "effect": None, "decoy_max": None},  # a row of an older run
        }}},
    }  # fmt: skip
    text = report_markdown(results, tmp_path)
    assert "| enc-finetune lr=0.01 | 91.0% (retraining) | 90.0%, 0.010 / 0.050, 0.400 not verified |" in text
    assert "| enc-finetune lr=0.0001 | 50.0% | n/a |" in text  # no such cell: n/a, not invented
    assert "| null:enc-x | n/a | n/a (n/a) |" in text
    section = benchmarks_section(results)
    assert "white-box verdict lost after enc-finetune lr=0.01 (probe 90.0%)" in section
    assert "1 of them keep the probe within 3 points" in section and ", 1 of those at a rate" in section


@pytest.mark.slow
def test_scratch_baseline_fine_tunes_a_random_encoder() -> None:
    from ownmark.bench.plan import MatrixConfig, load_config
    from ownmark.families import FAMILIES
    from ownmark.families.classifier import Context

    config = MatrixConfig.from_dict(load_config("awencoder-smoke").to_dict() | {"encoder": {"dim": 16}})
    assert config.settings("encoder").dim == 16
    setting = {"name": "enc-finetune", "set": {"lr": 0.01, "epochs": 1}, "param": None, "value": None}
    acc = _scratch(FAMILIES.get("encoder"), config, Context.load("digits"), setting, seed=0)
    assert 0.1 < acc <= 1.0  # a probe of a barely trained encoder: above chance on digits


def _the_matrix_rows_are_the_encoder_familys(work: Path, store: ResultStore) -> None:
    """The matrix's own rows of the awencoder-smoke preset (the secret variant, two SSL epochs, one null
    encoder, black-box verdicts on): encoder utility, calibrated verdicts, the report. Checked here, on
    the study's run, so the suite trains that preset once."""
    from ownmark.bench.report import write_report

    cells = {r["attack_label"]: r for r in store.rows("cell")}
    marked, pruned = cells["none"], cells["prune"]
    assert marked["family"] == "encoder" and marked["owned"] and marked["p_value"] == pytest.approx(1 / 200)
    # utility is the linear probe of frozen features: far above chance (10%) and the mark costs little
    assert 0.75 <= marked["acc_clean"] <= 1.0 and abs(marked["acc_marked"] - marked["acc_clean"]) <= 0.05
    assert pruned["owned"] and 0.7 <= pruned["acc_attacked"] <= 1.0
    # black-box beside white-box: at two embedding epochs the mark is too faint for labels alone (measured
    # p_black 0.31 marked, 0.20 pruned; the full preset's 20 epochs give p 0.005, BENCHMARKS.md)
    for row in (marked, pruned):  # a rank among 199 decoys: p in {1/200, ..., 1}
        assert row["p_black"] * 200 == pytest.approx(round(row["p_black"] * 200)) and 0 <= row["distinct"] <= 1
        assert row["owned_black"] == (row["p_black"] <= 0.01)
    nulls = {r["model"]: r for r in store.rows("null")}
    for suffix in ("", "+finetuned-lr0.001", "+finetuned-lr0.01"):
        null = nulls[f"enc-conv4-simclr-seed201-attacker-data{suffix}"]
        assert not null["owned"] and null["p_value"] > 0.01, (suffix, null)
        assert not null["owned_black"] and null["p_black"] > 0.01, (suffix, null)  # measured 0.61-0.89
        assert 0.5 <= null["probe_accuracy"] <= 1.0  # fitted once per null model, shared by its keys
    assert (work / "models" / "calib-conv4-simclr-seed101.safetensors").is_file()  # the margin's nulls, kept
    text = write_report(work, work / "report")[0].read_text()
    assert "linear-probe accuracy" in text and "| awencoder | prune |" in text
    assert "## Black-box verdicts" in text and "| awencoder | null models | 0/3 | 0/3 |" in text
