"""The encoder family through the CLI, on scikit-learn's 8x8 digits (seconds per command)."""

import json
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ownmark import cli

RUNNER = CliRunner()


def invoke(*args: object) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "console", Console(width=200, color_system=None))
        result = RUNNER.invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, f"{args} exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
    return result.output


def fail(monkeypatch, capsys, *args: object) -> str:
    """main() on a user error: exit code 1 and one line ``error: ...``."""
    monkeypatch.setattr(sys, "argv", ["ownmark", *map(str, args)])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.slow
def test_train_probe_embed_verify_an_encoder(tmp_path) -> None:
    enc = tmp_path / "enc"
    out = invoke(
        "train", "--family", "encoder", "--dataset", "digits", "--dim", "32", "--out", enc, "--set", "epochs=3"
    )
    assert "linear-probe accuracy" in out and enc.with_suffix(".safetensors").is_file()
    out = invoke("evaluate", "--model", enc, "--dataset", "digits", "--shots", "5")
    assert "5 labels per class" in out and "linear-probe" in out and "knn" in out
    out = invoke("evaluate", "--model", enc, "--dataset", "mnist5k", "--metric", "linear-probe")  # 28 px: resized
    assert float(out.rsplit("linear-probe ", 1)[1].split()[0]) > 0.5
    marked = tmp_path / "marked"
    out = invoke("embed", "awencoder", "--model", enc, "--dataset", "digits", "--out", marked,
                 "--set", "trigger=secret", "--set", "n_verify=100", "--set", "epochs=3",
                 "--set", "eps=0.2")  # fmt: skip
    assert "null margin tau" in out and (marked / "key.safetensors").is_file()
    out = invoke("verify", "--key", marked / "key", "--model", marked / "marked", "--model", enc)
    decisions = [("OWNED" if "OWNED" in line else "not") for line in out.splitlines() if "decoy keys" in line]
    assert decisions == ["OWNED", "not"], out  # rows in the order of --model: marked, then the clean encoder
    assert "200 candidate keys" in out and "5.00e-03" in out  # the smallest p 199 decoys can give
    # the adaptive input purifier (enc-purify) is an input transform of verify: every query passes through it,
    # which moves the key's rank (measured here: statistic 0.6 -> 0.32, p 0.005 -> 0.33 at this tiny scale)
    plain = json.loads(invoke("verify", "--key", marked / "key", "--model", marked / "marked", "--json"))
    purified = json.loads(invoke("verify", "--key", marked / "key", "--model", marked / "marked", "--json",
                                 "--transform", "enc-purify"))  # fmt: skip
    assert plain["decision"] == "OWNED" and purified["statistic"] != plain["statistic"]
    assert purified["p_value"] > plain["p_value"]
    out = invoke("attack", "prune", "--model", marked / "marked", "--dataset", "digits", "--out", tmp_path / "pruned",
                 "--set", "amount=0.3")  # fmt: skip
    assert "attacked encoder probe" in out
    out = invoke("verify", "--key", marked / "key", "--model", tmp_path / "pruned")
    assert "OWNED" in out, out


def test_encoder_commands_refuse_bad_input(monkeypatch, capsys, tmp_path) -> None:
    assert "no model family named 'decoder'" in fail(
        monkeypatch, capsys, "train", "--family", "decoder", "--out", tmp_path / "x"
    )
    assert "no encoder bench preset" in fail(monkeypatch, capsys, "bench", "encoders", "--preset", "nope")
    cls = tmp_path / "cls"
    invoke("train", "--dataset", "digits", "--arch", "cnn2", "--out", cls, "--set", "epochs=1")
    assert "metric linear-probe measures encoder models, not a classifier" in fail(
        monkeypatch, capsys, "evaluate", "--model", cls, "--dataset", "digits", "--metric", "linear-probe"
    )
    assert "compares two models; name the other with --reference" in fail(
        monkeypatch, capsys, "evaluate", "--model", cls, "--dataset", "digits", "--metric", "agreement"
    )
