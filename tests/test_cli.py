"""The ``ownmark`` command as a user sees it: artefacts on disk, verdicts, and one-line errors.

Success paths run through ``typer.testing.CliRunner``; error paths through ``ownmark.cli.main``
(the console script's entry point), which turns every OwnmarkError into one red line on stderr
and exit code 1. One tiny clean model and one FCW key are made per module and reused.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner, Result

from ownmark import cli
from ownmark.attacks.prune import prunable_weights
from ownmark.models import load_model

RUNNER = CliRunner()
# one epoch at a constant lr embeds 100/100 verification triggers into the one-epoch cnn2 (~8 s)
TINY_FCW = ("--set", "epochs=1", "--set", "milestones=")


def invoke(*args: object) -> Result:
    """Run the app with CliRunner and a plain, wide console; fail the test on a non-zero exit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "console", Console(width=200, color_system=None))
        result = RUNNER.invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, f"{args} exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
    return result


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """Call the console script's ``main()`` with ``argv``; return its exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["ownmark", *map(str, args)])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # typer installs its own; restore it afterwards
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    return code, capsys.readouterr().err


def fail(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object) -> str:
    """Run ``main()`` expecting a user error: exit code 1 and exactly one line ``error: ...``."""
    code, err = run_main(monkeypatch, capsys, *args)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), f"exit {code}, stderr:\n{err}"
    return lines[0]


def table_rows(output: str) -> list[list[str]]:
    """The body rows of a rich table as lists of cell texts."""
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in output.splitlines() if "│" in line]


def copy_artefact(src: Path, dst: Path) -> Path:
    """Copy NAME.safetensors and NAME.json (given without suffix) to ``dst`` (without suffix)."""
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(src.with_name(src.name + suffix), dst.with_name(dst.name + suffix))
    return dst


@dataclass(frozen=True)
class Artefacts:
    root: Path
    clean: Path  # NAME without suffix
    fcw: Path  # folder with marked.*, key.*, config.json
    embed_output: str

    @property
    def marked(self) -> Path:
        return self.fcw / "marked"

    @property
    def key(self) -> Path:
        return self.fcw / "key"


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Artefacts:
    root = tmp_path_factory.mktemp("cli")
    invoke("train", "--out", root / "clean", "--set", "epochs=1")
    result = invoke("embed", "fcw", "--model", root / "clean.safetensors", "--out", root / "fcw", *TINY_FCW)
    return Artefacts(root, root / "clean", root / "fcw", result.stdout)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cnn2 for 8x8 images (10 classes): another input shape than mnist5k's 28x28."""
    out = tmp_path_factory.mktemp("digits") / "digits_model"
    invoke("train", "--out", out, "--dataset", "digits", "--arch", "cnn2", "--set", "epochs=1")
    return out


@pytest.fixture(scope="module")
def three_class_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A cnn2 for 1x28x28 images like mnist5k's, but with 3 classes (an image folder)."""
    root = tmp_path_factory.mktemp("folder")
    for label in range(3):
        (root / "images" / f"c{label}").mkdir(parents=True)
        for i in range(10):
            Image.new("L", (28, 28), color=40 * label + i).save(root / "images" / f"c{label}" / f"{i}.png")
    dataset = f"folder:{root / 'images'}"
    invoke("train", "--out", root / "model", "--dataset", dataset, "--set", "epochs=1")
    return root / "model", dataset


# --- success paths -------------------------------------------------------------------------------


def test_list_prints_every_group() -> None:
    out = invoke("list").stdout
    for group, name in [("schemes", "fcw"), ("attacks", "ftal"), ("models", "cnn2"), ("datasets", "mnist5k"),
                        ("presets", "fcw:default"), ("encoders", "conv4"), ("image2image", "unet"),
                        ("defenses", "topk:K"), ("schemes", "awencoder"), ("attacks", "stolenencoder")]:  # fmt: skip
        line = next((ln for ln in out.splitlines() if ln.startswith(f"{group}:")), None)
        assert line is not None and name in line, out
    from ownmark.attacks import ATTACKS

    lines = invoke("list", "attacks").stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ATTACKS.names()  # one line per attack, with its description
    assert "FTAL: fine-tune all layers" in next(line for line in lines if line.startswith("ftal "))


def test_train_writes_weights_manifest_and_config(art: Artefacts) -> None:
    for suffix in (".safetensors", ".json", ".config.json"):
        assert art.clean.with_name("clean" + suffix).is_file(), suffix
    manifest = json.loads(art.clean.with_name("clean.json").read_text())
    assert manifest["kind"] == "model" and manifest["spec"]["arch"] == "cnn2"
    assert manifest["info"]["dataset"] == "mnist5k" and 0 <= manifest["info"]["test_accuracy"] <= 1
    config = json.loads(art.clean.with_name("clean.config.json").read_text())
    assert config["command"] == "train" and config["config"]["epochs"] == 1 and config["seed"] == 0


def test_train_same_seed_gives_identical_bytes(art: Artefacts, tmp_path: Path) -> None:
    invoke("train", "--out", tmp_path / "again.safetensors", "--set", "epochs=1")
    assert (tmp_path / "again.safetensors").read_bytes() == art.clean.with_name("clean.safetensors").read_bytes()


@pytest.mark.slow
def test_train_gives_the_same_bytes_whatever_the_thread_count_in_force(art: Artefacts, tmp_path: Path) -> None:
    """The caller's torch thread count (OMP_NUM_THREADS) changes reductions' last bits; train pins its own."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        invoke("train", "--out", tmp_path / "two", "--set", "epochs=1")
        assert torch.get_num_threads() == 2  # restored when the command ends
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "two.safetensors").read_bytes() == art.clean.with_name("clean.safetensors").read_bytes()
    invoke("train", "--out", tmp_path / "explicit", "--set", "epochs=1", "--threads", "2")
    assert (tmp_path / "explicit.safetensors").read_bytes() != (tmp_path / "two.safetensors").read_bytes()


def test_embed_writes_marked_model_key_and_config(art: Artefacts) -> None:
    names = {p.name for p in art.fcw.iterdir()}
    assert {"marked.safetensors", "marked.json", "key.safetensors", "key.json", "config.json"} <= names
    config = json.loads((art.fcw / "config.json").read_text())
    key_manifest = json.loads((art.fcw / "key.json").read_text())
    assert config["command"] == "embed fcw" and config["config"]["epochs"] == 1 and config["config"]["milestones"] == []
    assert len(config["key_sha256"]) == 64 and config["key_sha256"] == key_manifest["sha256"]
    assert key_manifest["kind"] == "key" and key_manifest["scheme"] == "fcw"
    assert config["key_sha256"] in art.embed_output


def test_verify_marked_is_owned_and_clean_is_not(art: Artefacts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(art.root)  # short paths keep each table row on one line
    out = invoke("verify", "--model", "fcw/marked", "--model", "clean.safetensors", "--key", "fcw/key").stdout
    rows = {r[0]: r for r in table_rows(out)}
    assert rows["fcw/marked"][4] == "OWNED", out
    assert rows["clean.safetensors"][4] == "not verified", out
    assert "alpha = 0.01" in out


def test_sequential_verify_is_refused_for_a_key_tested_by_randomization(art: Artefacts, monkeypatch, capsys) -> None:
    """A test martingale over triggers assumes i.i.d. answers at a known null rate; FCW's one-label triggers have
    none (any model may read fused digits as t), so its verdict needs every decoy's answers."""
    msg = fail(monkeypatch, capsys, "verify", "--model", art.marked, "--key", art.key, "--sequential")
    assert "--sequential needs" in msg and "verify without --sequential" in msg


def test_verify_through_an_input_transform(art: Artefacts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(art.root)
    mild = table_rows(invoke("verify", "--model", "fcw/marked", "--key", "fcw/key", "--transform", "blur").stdout)
    assert mild[0][4] == "OWNED"  # a mild blur keeps the mark


def test_transform_is_refused_as_a_model_attack(art: Artefacts, monkeypatch, capsys, tmp_path: Path) -> None:
    assert "--transform noise" in fail(
        monkeypatch, capsys, "attack", "noise", "--model", art.marked, "--out", tmp_path / "x"
    )
    args = ("verify", "--model", art.marked, "--key", art.key, "--transform", "noise", "--set", "bogus=1")
    assert "NoiseConfig has no setting 'bogus'" in fail(monkeypatch, capsys, *args)  # --set configures it
    assert "not an input transform" in fail(
        monkeypatch, capsys, "verify", "--model", art.marked, "--key", art.key, "--transform", "ftal"
    )


def test_attack_ftal_writes_attacked_model(art: Artefacts, tmp_path: Path) -> None:
    out = invoke("attack", "ftal", "--model", art.marked, "--out", tmp_path / "ftal", "--set", "epochs=1").stdout
    assert out.startswith("ftal: victim acc") and "cost 1 epochs" in out
    manifest = json.loads((tmp_path / "ftal.json").read_text())
    assert manifest["kind"] == "model" and manifest["info"]["attack"] == "ftal"
    assert manifest["info"]["cost"]["epochs"] == 1
    assert json.loads((tmp_path / "ftal.config.json").read_text())["config"]["epochs"] == 1


def test_attack_prune_zeroes_half_the_weights(art: Artefacts, tmp_path: Path) -> None:
    invoke("attack", "prune", "--model", art.marked, "--out", tmp_path / "pruned", "--set", "amount=0.5")
    model, manifest = load_model(tmp_path / "pruned")
    assert manifest["info"]["attack"] == "prune"
    weights = prunable_weights(model)
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) >= total // 2


@pytest.mark.slow
def test_calibrate_measures_null_models_and_an_exact_key_takes_no_p0(art: Artefacts, monkeypatch, capsys, tmp_path):
    cal_path = tmp_path / "cal.json"
    invoke("calibrate", "--key", art.key, "--out", cal_path, "--seeds", "1", "--archs", "cnn2")
    cal = json.loads(cal_path.read_text())
    assert cal["kind"] == "calibration" and cal["scheme"] == "fcw"
    assert cal["p0"] is None and cal["test"].startswith("randomization") and cal["false_positive_rate"] == 0
    assert len(cal["models"]) == 2  # cnn2 seed 1000 and one trained on the attacker's data
    assert cal["key_digest"] == json.loads((art.fcw / "key.json").read_text())["sha256"]
    msg = fail(monkeypatch, capsys, "verify", "--model", art.marked, "--key", art.key, "--calibration", cal_path)
    assert "takes no calibrated p0" in msg


# --- errors: exit code 1 and one line that names the problem ------------------------------------


def test_unknown_scheme_suggests_fcw(monkeypatch, capsys, tmp_path: Path) -> None:
    msg = fail(monkeypatch, capsys, "embed", "fcx", "--model", tmp_path / "m", "--out", tmp_path / "o")
    assert "'fcx'" in msg and "did you mean 'fcw'" in msg


def test_unknown_attack(monkeypatch, capsys, tmp_path: Path) -> None:
    msg = fail(monkeypatch, capsys, "attack", "ftl", "--model", tmp_path / "m", "--out", tmp_path / "o")
    assert "no attack named 'ftl'" in msg and "'ftal'" in msg


def test_unknown_arch(monkeypatch, capsys, tmp_path: Path) -> None:
    msg = fail(monkeypatch, capsys, "train", "--out", tmp_path / "m", "--arch", "cnn3", "--set", "epochs=1")
    assert "no model named 'cnn3'" in msg and "'cnn2'" in msg


def test_unknown_dataset(monkeypatch, capsys, tmp_path: Path) -> None:
    msg = fail(monkeypatch, capsys, "train", "--out", tmp_path / "m", "--dataset", "mnist5")
    assert "no dataset named 'mnist5'" in msg and "'mnist5k'" in msg


def test_list_unknown_group(monkeypatch, capsys) -> None:
    assert "cannot list 'bogus'" in fail(monkeypatch, capsys, "list", "bogus")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "--set", "epochs=abc"), "TrainConfig.epochs expects"),
        (("train", "--set", "nope=1"), "TrainConfig has no setting 'nope'"),
        (("train", "--set", "epochs=0"), "TrainConfig.epochs must be a finite positive number, got 0"),
        (("train", "--set", "epochs"), "--set expects key=value, got 'epochs'"),
        (("train", "--split", "thief"), "--split must be owner or attacker, got 'thief'"),
        (("embed", "fcw", "--set", "epochs=abc"), "FCWConfig.epochs expects"),
        (("embed", "fcw", "--set", "nope=1"), "FCWConfig has no setting 'nope'"),
        (("embed", "fcw", "--set", "mask_ratio=2"), "FCWConfig.mask_ratio must lie in [0.0, 1.0), got 2.0"),
        (("embed", "fcw", "--preset", "nope"), "FCW has no preset 'nope'"),
        (("attack", "prune", "--set", "amount=2"), "PruneConfig.amount must lie in [0.0, 1.0), got 2.0"),
        (("attack", "ftal", "--set", "epochs=abc"), "FineTuneConfig.epochs expects"),
    ],
)
def test_bad_setting(monkeypatch, capsys, tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    # settings are checked before any file is read, so the model path need not exist
    paths = ("--out", tmp_path / "o") if args[0] == "train" else ("--model", tmp_path / "m", "--out", tmp_path / "o")
    msg = fail(monkeypatch, capsys, *args, *paths)
    assert expected in msg
    if "abc" in str(args):
        assert "'abc'" in msg


def test_bad_alpha(monkeypatch, capsys, tmp_path: Path) -> None:
    msg = fail(monkeypatch, capsys, "verify", "--model", tmp_path / "m", "--key", tmp_path / "k", "--alpha", "2")
    assert "alpha must lie in (0, 1), got 2.0" in msg


def test_missing_model_file(art: Artefacts, monkeypatch, capsys, tmp_path: Path) -> None:
    msg = fail(monkeypatch, capsys, "verify", "--model", tmp_path / "nope.safetensors", "--key", art.key)
    assert "no such file" in msg and "nope.safetensors" in msg


def test_missing_key_file(art: Artefacts, monkeypatch, capsys, tmp_path: Path) -> None:
    msg = fail(monkeypatch, capsys, "verify", "--model", art.marked, "--key", tmp_path / "nokey")
    assert "no such file" in msg and "nokey.safetensors" in msg


def test_model_given_as_key(art: Artefacts, monkeypatch, capsys) -> None:
    msg = fail(monkeypatch, capsys, "verify", "--model", art.marked, "--key", art.marked)
    assert "holds a model, not a key" in msg


def test_corrupt_model_file(art: Artefacts, monkeypatch, capsys, tmp_path: Path) -> None:
    bad = copy_artefact(art.clean, tmp_path / "bad")
    bad.with_name("bad.safetensors").write_bytes(b"\x00not a safetensors file\xff" * 64)
    msg = fail(monkeypatch, capsys, "verify", "--model", bad, "--key", art.key)
    assert "bad.safetensors is corrupt or truncated" in msg


def test_truncated_key_file(art: Artefacts, monkeypatch, capsys, tmp_path: Path) -> None:
    key = copy_artefact(art.key, tmp_path / "key")
    data = key.with_name("key.safetensors").read_bytes()
    key.with_name("key.safetensors").write_bytes(data[: len(data) // 2])
    msg = fail(monkeypatch, capsys, "verify", "--model", art.marked, "--key", key)
    assert "key.safetensors is corrupt or truncated" in msg


def test_tampered_key_file(art: Artefacts, monkeypatch, capsys, tmp_path: Path) -> None:
    key = copy_artefact(art.key, tmp_path / "key")
    data = bytearray(key.with_name("key.safetensors").read_bytes())
    data[-10] ^= 0x01  # a tensor byte (the header is at the start); the size stays the same
    key.with_name("key.safetensors").write_bytes(bytes(data))
    msg = fail(monkeypatch, capsys, "verify", "--model", art.marked, "--key", key)
    assert "do not match their SHA-256 digest" in msg


def test_key_for_another_input_shape(art: Artefacts, digits_model: Path, monkeypatch, capsys) -> None:
    args = ("verify", "--model", digits_model, "--key", art.key)
    msg = fail(monkeypatch, capsys, *args)
    assert "(1, 28, 28)" in msg and "(1, 8, 8)" in msg


def test_embed_into_model_of_another_input_shape(digits_model: Path, monkeypatch, capsys, tmp_path: Path) -> None:
    msg = fail(monkeypatch, capsys, "embed", "fcw", "--model", digits_model, "--out", tmp_path / "o", "--dataset",
               "mnist5k", *TINY_FCW)  # fmt: skip
    assert "(1, 8, 8)" in msg and "mnist5k has (1, 28, 28)" in msg
    assert not (tmp_path / "o").exists()
    # without --dataset the model's own data (digits, from its manifest) is used: here too few images per class
    msg = fail(monkeypatch, capsys, "embed", "fcw", "--model", digits_model, "--out", tmp_path / "o", *TINY_FCW)
    assert "class 0 of digits has 89" in msg and not (tmp_path / "o").exists()


def test_attack_model_of_another_input_shape(digits_model: Path, monkeypatch, capsys, tmp_path: Path) -> None:
    # a command on a model uses the data its manifest names (digits here) unless --dataset says otherwise
    msg = fail(monkeypatch, capsys, "attack", "prune", "--model", digits_model, "--out", tmp_path / "o",
               "--dataset", "mnist5k")  # fmt: skip
    assert "(1, 8, 8)" in msg and "mnist5k has (1, 28, 28)" in msg


def test_key_for_another_class_count(art: Artefacts, three_class_model, monkeypatch, capsys) -> None:
    model, _ = three_class_model
    msg = fail(monkeypatch, capsys, "verify", "--model", model, "--key", art.key)
    assert "answers with 3 classes but the key was made for 10" in msg


def test_embed_into_model_of_another_class_count(three_class_model, monkeypatch, capsys, tmp_path: Path) -> None:
    model, _ = three_class_model
    msg = fail(monkeypatch, capsys, "embed", "fcw", "--model", model, "--out", tmp_path / "o", "--dataset", "mnist5k",
               *TINY_FCW)  # fmt: skip
    assert "with 3 classes but mnist5k" in msg and "with 10" in msg


# --- bad inputs a new user tries: one line naming the problem and the fix, exit 1 -----------------


def _bad_inputs(tmp: Path, art: Artefacts) -> list[tuple[tuple[object, ...], str]]:
    """(arguments, expected part of the one error line); each arrived as a traceback or was accepted once."""
    a_file = tmp / "a_file"
    a_file.write_text("x")
    (tmp / "folder").mkdir()
    broken = tmp / "imgs"
    for c in ("a", "b"):
        (broken / c).mkdir(parents=True)
        Image.new("L", (8, 8)).save(broken / c / "ok.png")
    (broken / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    no_meta = copy_artefact(art.key, tmp / "nometa")
    manifest = json.loads(no_meta.with_name("nometa.json").read_text())
    del manifest["meta"]
    no_meta.with_name("nometa.json").write_text(json.dumps(manifest))
    bench_cfg = tmp / "bench.yaml"
    bench_cfg.write_text("name: x\nseeds: abc\n")
    serve = ("--token", "tok-12345678", "--db", tmp / "usage.db")
    return [
        (("train", "--out", a_file / "m"), "which is a file, not a folder"),
        (("train", "--out", "/proc/ownmark-m"), "lies in /proc, a kernel file system"),
        (("train", "--out", "/sys/m"), "lies in /sys"),
        (("train", "--out", tmp / "folder"), "is a folder; give a file name"),
        (("train", "--out", tmp / "m", "--checkpoint", tmp / "folder"), "--checkpoint"),
        (("embed", "fcw", "--model", art.clean, "--out", a_file), "is a file but names a folder"),
        (("train", "--out", tmp / "m", "--set", "lr=inf"), "TrainConfig.lr must be a finite number"),
        (("train", "--out", tmp / "m", "--set", "lr=nan"), "TrainConfig.lr must be a finite number"),
        (("train", "--out", tmp / "m", "--accelerator", "tpu"), "accelerator must be one of"),
        (("serve", art.marked, *serve, "--defense", "noise:nan"), "noise std must be"),
        (("serve", art.marked, *serve, "--kind", "images"), "a classifier cannot answer 'images'"),
        (("verify", "--model", art.marked, "--key", no_meta), "do not match their SHA-256 digest"),
        (("train", "--out", tmp / "m", "--dataset", f"folder:{broken}"), "cannot read image"),
        (("bench", "run", "--config", bench_cfg, "--workdir", tmp / "b"), "seeds"),
        (("attack", "trigger-detect", "--model", art.marked, "--out", tmp / "td"), "not one model file"),
        (("attack", "enc-purify", "--model", art.marked, "--out", tmp / "ep"), "verify --transform enc-purify"),
        (("bench", "run", "--preset", "smoke", "--gpus", "1", "--workdir", tmp / "g"), "add --accelerator cuda"),
    ]


def test_bad_inputs_give_one_line_each(art: Artefacts, monkeypatch, capsys, tmp_path: Path) -> None:
    for args, expected in _bad_inputs(tmp_path, art):
        msg = fail(monkeypatch, capsys, *args)
        assert expected in msg, (args, msg)
    assert not list(tmp_path.glob("m.*")), "a refused command wrote a model"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_before_work(monkeypatch, capsys, tmp_path: Path) -> None:
    msg = fail(monkeypatch, capsys, "train", "--out", tmp_path / "m", "--accelerator", "cuda")
    assert "no CUDA GPU is visible" in msg and "--accelerator cpu" in msg


# --- usage errors are typer's: exit 2, a message, no traceback ------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [(("train",), "Missing option '--out'"), (("bogus",), "No such command 'bogus'"),
     (("verify", "--model", "m", "--key", "k", "--alpha", "abc"), "Invalid value for '--alpha'"),
     (("train", "--out", "m", "--seed", str(2**70)), "Invalid value for '--seed'"),
     (("train", "--out", "m", "--seed", "-1"), "Invalid value for '--seed'"),
     (("serve", "m", "--port", "70000"), "Invalid value for '--port'"),
     (("evaluate", "--model", "m", "--shots", "-1"), "Invalid value for '--shots'"),
     (("i2i", "train"), "No such command 'i2i'")],
)  # fmt: skip
def test_usage_error_exits_2_without_traceback(monkeypatch, capsys, args: tuple[str, ...], expected: str) -> None:
    code, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and expected in err and "Traceback" not in err, err


def test_version_and_python_dash_m(monkeypatch, capsys) -> None:
    import subprocess

    from ownmark import __version__

    assert invoke("--version").stdout.strip() == f"ownmark {__version__}"
    done = subprocess.run([sys.executable, "-m", "ownmark", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"ownmark {__version__}", done.stderr
    code, err = run_main(monkeypatch, capsys, "-q", "-v", "list")
    assert code == 2 and "give -q or -v, not both" in err


def test_verbosity_sets_the_log_level() -> None:
    import logging

    root = logging.getLogger()
    before = root.level
    try:
        invoke("-vv", "list", "schemes")
        assert root.level == logging.DEBUG
        invoke("-q", "list", "schemes")
        assert root.level == logging.ERROR
    finally:
        root.setLevel(before)


def test_success_through_main_exits_0(monkeypatch, capsys) -> None:
    code, err = run_main(monkeypatch, capsys, "list", "schemes")
    assert code == 0 and err == ""


@pytest.mark.slow
def test_embed_ptynet_into_a_bare_state_dict_leaves_it_bit_identical(art: Artefacts, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    bare = tmp_path / "theirs.safetensors"  # a model ownmark did not train: weights only, no manifest
    save_file(load_file(art.clean.with_name("clean.safetensors")), bare)
    before = bare.read_bytes()
    out = invoke("embed", "ptynet", "--model", bare, "--arch", "cnn2", "--out", tmp_path / "pty", "--set", "epochs=1")
    assert "false positives on clean test images" in out.stdout
    assert bare.read_bytes() == before
    rows = table_rows(
        invoke("verify", "--model", tmp_path / "pty" / "marked", "--key", tmp_path / "pty" / "key").stdout
    )
    assert rows[0][4] == "OWNED"


def _command_paths(group, prefix=()):  # noqa: ANN001
    import typer.main

    click_group = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, cmd in sorted(click_group.commands.items()):
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _command_paths(cmd, (*prefix, name))


def test_every_command_answers_help() -> None:
    """Every command's --help prints its usage (a help text read as rich markup once crashed two of them)."""
    from typer.testing import CliRunner

    from ownmark.cli import app

    paths = list(_command_paths(app))
    assert {("verify",), ("attack",), ("bench", "run")} <= set(paths)
    runner = CliRunner()
    for path in [(), *paths]:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output[-300:])
        assert "Usage" in result.output, path


def test_verify_json_and_record_give_one_record_per_suspect(art: Artefacts, tmp_path: Path) -> None:
    rec = tmp_path / "verdicts.jsonl"
    out = invoke("verify", "--model", art.marked, "--model", art.clean, "--key", art.key, "--json", "--record", rec)
    printed = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    written = [json.loads(line) for line in rec.read_text().splitlines()]
    assert len(printed) == len(written) == 2
    key_sha = json.loads((art.fcw / "key.json").read_text())["sha256"]
    marked_sha = json.loads((art.fcw / "marked.json").read_text())["sha256"]
    for r in written:
        assert r["key_sha256"] == key_sha and r["scheme"] == "fcw" and r["alpha"] == 0.01
        assert r["unit_of_independence"] == "the model" and r["null_hypothesis"] and r["queries"] > 0
        assert r["decision"] in ("OWNED", "not verified") and 0 <= r["p_value"] <= 1
        assert r["versions"]["ownmark"] and r["time"].endswith("+00:00")
    assert written[0]["suspect_sha256"] == marked_sha and written[0]["decision"] == "OWNED"
    assert written[1]["decision"] == "not verified"
    assert [r["p_value"] for r in printed] == [r["p_value"] for r in written]


def test_a_calibration_made_for_another_key_is_refused(art: Artefacts, monkeypatch, capsys, tmp_path: Path) -> None:
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"kind": "calibration", "scheme": "fcw", "key_digest": "0" * 64, "confidence": 0.99,
                               "alpha": 0.01, "p0": 0.2, "false_positive_rate": 0.0, "models": []}))  # fmt: skip
    msg = fail(monkeypatch, capsys, "verify", "--model", art.marked, "--key", art.key, "--calibration", cal)
    assert "made for key 0000" in msg and "ownmark calibrate" in msg
