"""The image2image bench (smoke preset) and the image-to-image family through the one CLI, on real tiny runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ownmark import cli
from ownmark.bench.report import publish
from ownmark.bench.studies.image2image import PRESETS, render, run_bench

RUNNER = CliRunner()
TINY = [
    "--set", "epochs=1", "--set", "surrogate_epochs=1", "--set", "finetune_epochs=1", "--set", "embedder=conv3",
    "--set", "extractor=conv3", "--set", "surrogate_arch=conv3", "--set", "n_probe=16", "--set", "w_adv=0",
]  # fmt: skip


@pytest.mark.slow
def test_smoke_bench_writes_results_report_figures_and_section(tmp_path: Path, one_thread) -> None:
    md = tmp_path / "BENCHMARKS.md"
    results = run_bench(PRESETS["smoke"], tmp_path / "out", say=lambda _m: None)
    publish(md, "image2image", render(results, benchmarks_md=True))
    names = {r["name"] for r in results["rows"]}
    assert {"marked outputs", "control: inputs", "control: clean outputs", "control: surrogate on clean pairs"} <= names
    assert {"output noise 0.02", "output JPEG 75"} <= names
    assert set(results["latency"]) == {"target", "barrier", "absorbed"}
    for name in ("results.json", "report.md", "grid.png", "strength.png"):
        assert (tmp_path / "out" / name).stat().st_size > 100
    text = md.read_text()
    assert "<!-- section:image2image -->" in text and "Goals:" in text and "ratio to target" in text


def invoke(*args: object):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "console", Console(width=200, color_system=None))
        result = RUNNER.invoke(cli.app, list(map(str, args)))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


@pytest.mark.slow
def test_cli_train_embed_attack_verify(tmp_path: Path, one_thread) -> None:
    invoke("train", "--family", "image2image", "--out", tmp_path / "clean", "--arch", "conv3", "--set", "epochs=1")
    out = invoke("embed", "deepwm", "--model", tmp_path / "clean", "--out", tmp_path / "wm", *TINY)
    assert "PSNR" in out and "clean SSIM" in out and (tmp_path / "wm" / "key.safetensors").is_file()
    invoke("attack", "surrogate", "--model", tmp_path / "wm" / "marked", "--out", tmp_path / "stolen",
           "--set", "arch=conv3", "--set", "epochs=1")  # fmt: skip
    out = invoke("attack", "output-noise", "--model", tmp_path / "wm" / "marked", "--out", tmp_path / "noisy")
    assert "changes outputs at query time only" in out
    invoke("train", "--family", "image2image", "--out", tmp_path / "denoiser", "--arch", "conv3", "--dataset",
           "denoise", "--set", "epochs=1")  # fmt: skip
    out = json.loads(invoke("evaluate", "--model", tmp_path / "denoiser", "--json"))
    assert set(out) >= {"ssim", "psnr"} and out["family"] == "image2image" and out["dataset"] == "denoise"
    out = invoke(
        "verify", "--model", tmp_path / "stolen", "--model", tmp_path / "clean", "--key", tmp_path / "wm" / "key"
    )
    assert "negative control" in out and "clean outputs" in out and "R's mean extraction" in out
    out = invoke("verify", "--model", tmp_path / "clean", "--key", tmp_path / "wm" / "key", "--json",
                 "--record", tmp_path / "rec.jsonl")  # fmt: skip
    (line,) = out.strip().splitlines()
    rec = json.loads(line)
    assert rec["scheme"] == "deepwm" and rec["suspect_sha256"] and rec["decision"] in ("OWNED", "not verified")
    assert (tmp_path / "rec.jsonl").read_text().strip() == line


def test_user_errors_are_one_red_line(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["ownmark", "bench", "image2image", "--preset", "nope"])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(err) == 1 and "image2image" in err[0] and err[0].startswith("error: ")
