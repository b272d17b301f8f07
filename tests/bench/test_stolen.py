import json

import pytest
import torch

from ownmark.attacks import StolenEncoderConfig
from ownmark.attacks.encoder_eval import probe
from ownmark.bench.report import publish
from ownmark.bench.report.stolen import checks, queries_to_reach, section
from ownmark.bench.studies.stolen import StolenBenchConfig, Target, defense_sweep, run_stolen_bench
from ownmark.errors import ConfigError, UnknownNameError


def test_config_is_checked_before_any_training() -> None:
    with pytest.raises(ConfigError, match="defense_seeds"):
        StolenBenchConfig(seeds=(0,), defense_seeds=(1,))
    with pytest.raises(ConfigError, match="budgets"):
        StolenBenchConfig(budgets=(0,))
    with pytest.raises(ConfigError, match="topk"):
        StolenBenchConfig(defenses=("topk:0",))
    with pytest.raises(UnknownNameError, match="blur"):
        StolenBenchConfig(defenses=("blur:3",))


def _row(ta: float, sa: float, budget: int = 250) -> dict:
    probes = {"full": ta, "few": ta}
    return {"ta": probes, "sa": {"full": sa, "few": sa}, "ra": {"full": 0.5, "few": 0.5}, "queries": budget,
            "query_fraction": budget / 2500, "recovered_full": 0.9, "recovered_few": 0.9,
            "sa_lambda0": {"full": 0.8, "few": 0.8}, "pa": {"full": 0.85, "few": 0.85}}  # fmt: skip


def test_checks_and_queries_to_reach_on_hand_made_results() -> None:
    results = {
        "seeds": [_row(0.9, 0.88), _row(0.92, 0.9)],
        "pixels": {"0": {"full": 0.85, "few": 0.7}},
        "config": {"attack": {"budget": 250}},
        "budget_curve": [{"budget": 50, "query_fraction": 0.02, "sa": {"full": 0.7, "few": 0.7}},
                         {"budget": 125, "query_fraction": 0.05, "sa": {"full": 0.85, "few": 0.82}}],
        "defenses": [{"defense": d, "queries": 250} for d in ("none", "noise:1", "round:0", "topk:4")],
    }  # fmt: skip
    assert queries_to_reach(results)["budget"] == 125  # 0.82 >= 0.9 * 0.9
    got = {c["name"]: c["holds"] for c in checks(results)}
    assert got["SA >= 0.9 TA (full)"] and got["lambda 20 beats lambda 0 (few)"] and got["PA < SA (full)"]
    assert got["budget exact (queries answered == budget, every run)"]
    assert not got[">= 3 strengths per defense"]  # one strength each
    results["defenses"][1]["queries"] = 251
    assert not {c["name"]: c["holds"] for c in checks(results)}["budget exact (queries answered == budget, every run)"]


@pytest.mark.slow
def test_tiny_bench_writes_results_report_figures_and_section(tmp_path, one_thread) -> None:
    config = StolenBenchConfig(
        seeds=(0,), pretrain_epochs=1, attack=StolenEncoderConfig(budget=64, epochs=2), budgets=(32,),
        defenses=("noise:1", "round:0", "topk:4"), watermark=False,
    )  # fmt: skip
    bench = tmp_path / "BENCHMARKS.md"
    results = run_stolen_bench(tmp_path / "out", config)
    publish(bench, "stolenencoder", section(results, tmp_path / "out"))
    for name in ("stolen.json", "stolen.md", "stolen_defenses.png", "stolen_budget.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "out" / "stolen.json").read_text())
    assert saved["seeds"][0]["queries"] == 64 and saved["budget_curve"][0]["budget"] == 32
    assert [r["defense"] for r in saved["defenses"]] == ["none", "noise:1", "round:0", "topk:4"]
    assert all(r["queries"] == 64 for r in saved["defenses"])
    assert "watermark" not in saved and len(results["checks"]) == 12
    text = bench.read_text()
    assert "<!-- section:stolenencoder -->" in text and "Queries to reach SA >= 0.9 TA" in text
    report = (tmp_path / "out" / "stolen.md").read_text()
    assert "## Theft of a watermarked encoder" in report and "Not run in this bench" in report


@pytest.mark.slow
def test_strong_noise_costs_legitimate_users_and_the_thief(mnist_splits, mnist_encoder, one_thread) -> None:
    """Measured on seed 0: noise as large as the features' RMS per component (noise:1)."""
    config = StolenBenchConfig(seeds=(0,), attack=StolenEncoderConfig(budget=250, epochs=20), defenses=("noise:1",))
    target = Target(mnist_encoder, 0.0, probe(mnist_encoder, mnist_splits.attacker, mnist_splits.test, seed=0))
    before = {k: v.clone() for k, v in mnist_encoder.state_dict().items()}
    clean, noisy = defense_sweep(config, mnist_splits, target, 0)
    assert all(torch.equal(before[k], v) for k, v in mnist_encoder.state_dict().items())
    assert clean["defense"] == "none" and noisy["defense"] == "noise:1" and noisy["queries"] == 250
    assert clean["legit"] == pytest.approx({"full": target.probes[0].full, "few": target.probes[0].few})
    assert clean["legit"]["few"] - noisy["legit"]["few"] > 0.1, (clean, noisy)
    assert clean["sa"]["few"] - noisy["sa"]["few"] > 0.05, (clean, noisy)
