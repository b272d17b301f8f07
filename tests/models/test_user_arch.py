"""Bring your own model (issue 15 item 4): a third-party classifier with its own input normalisation, named
by import path, is protected with PTYNet, saved, verified and refused untrusted through the CLI."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from ownmark import cli
from ownmark.errors import IntegrityError
from ownmark.io import load_tensors
from ownmark.models import ModelSpec, load_model
from ownmark.models.user import build_user, is_user_arch, trust

MODULE = textwrap.dedent('''
    import torch
    from torch import nn

    class Normalised(nn.Module):
        """A third party's MNIST model: normalisation inside, as such models ship."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(0.1307))
            self.register_buffer("std", torch.tensor(0.3081))

        def forward(self, x):
            return self.net((x - self.mean) / self.std)

    def build(in_channels, num_classes, image_size):
        return Normalised(nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(8 * (image_size // 2) ** 2, num_classes)))
''')
ARCH = "thirdparty_mnist:build"


@pytest.fixture()
def thirdparty(tmp_path, monkeypatch):
    (tmp_path / "thirdparty_mnist.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("OWNMARK_TRUSTED_ARCH", raising=False)
    monkeypatch.setattr("ownmark.models.user._TRUSTED", set())
    yield tmp_path
    sys.modules.pop("thirdparty_mnist", None)


def test_import_paths_are_recognised_and_built_only_when_trusted(thirdparty, monkeypatch) -> None:
    assert is_user_arch(ARCH) and not is_user_arch("tv:resnet18") and not is_user_arch("cnn2")
    assert not is_user_arch("os:system;rm") and not is_user_arch("barrier:unet+conv3")
    with pytest.raises(IntegrityError, match=f"user code '{ARCH}'.*--trust-arch {ARCH}"):
        ModelSpec(ARCH, 1, 10, 28).build()
    assert "thirdparty_mnist" not in sys.modules  # refused before anything was imported
    monkeypatch.setenv("OWNMARK_TRUSTED_ARCH", f"other:thing, {ARCH}")
    model = ModelSpec(ARCH, 1, 10, 28).build()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10) and model.spec.arch == ARCH
    monkeypatch.delenv("OWNMARK_TRUSTED_ARCH")
    trust(ARCH)
    assert type(build_user(ARCH, 1, 10, 28)).__name__ == "Normalised"


def _invoke(*args: object) -> str:
    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


@pytest.mark.slow
def test_ptynet_protects_a_thirdparty_model_through_the_cli(thirdparty, monkeypatch, capsys) -> None:
    from ownmark.families.classifier import Context, train_model
    from ownmark.train import TrainConfig

    trust(ARCH)
    ctx = Context.load("mnist5k")
    target = train_model(ctx.spec(ARCH), ctx.splits.owner, seed=0, config=TrainConfig(epochs=2, lr=0.05))
    weights = thirdparty / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in target.state_dict().items()}, str(weights))  # a bare state dict
    monkeypatch.setattr("ownmark.models.user._TRUSTED", set())
    out = _invoke("embed", "ptynet", "--model", weights, "--arch", ARCH, "--out", thirdparty / "wm")
    assert "key sha256" in out
    manifest = load_tensors(thirdparty / "wm" / "marked", "model")[1]
    assert manifest["spec"]["arch"] == ARCH  # the target's import path travels in the manifest
    monkeypatch.setattr("ownmark.models.user._TRUSTED", set())  # a new process: nothing trusted
    monkeypatch.setattr(sys, "argv", ["ownmark", "verify", "--key", str(thirdparty / "wm" / "key"), "--model",
                                      str(thirdparty / "wm" / "marked")])  # fmt: skip
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(err) == 1 and f"--trust-arch {ARCH}" in err[0], err
    out = _invoke("--trust-arch", ARCH, "verify", "--key", thirdparty / "wm" / "key", "--model",
                  thirdparty / "wm" / "marked", "--json")  # fmt: skip
    (record,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert record["decision"] == "OWNED" and record["p_value"] <= 0.01, record
    marked, _ = load_model(thirdparty / "wm" / "marked")
    x = ctx.splits.test.x[:64]
    assert torch.equal(marked.target(x), target(x))  # the protected model itself is bit-identical
