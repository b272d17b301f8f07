"""The Python API (issue 15 item 2): ``import ownmark as om`` and the README's example, run as written."""

import re
from pathlib import Path

import pytest

import ownmark as om
from ownmark.errors import ConfigError, UnknownNameError

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(capsys) -> None:
    """The owner's FCW mark survives 5 epochs of fine-tuning; the clean model is not claimed."""
    source = _readme_example()
    assert source.startswith("import ownmark as om")
    exec(compile(source, str(README), "exec"), {})
    lines = dict(line.split(" ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert set(lines) == {"marked", "fine-tuned", "clean"}
    assert lines["marked"].endswith("OWNED") and not lines["clean"].endswith("OWNED"), lines
    assert float(lines["marked"].split()[0]) >= 0.9  # utility: test accuracy


def test_units_by_name_with_presets_and_settings() -> None:
    assert om.list_units("families") == ["classifier", "encoder", "image2image"]
    assert {"fcw", "awencoder", "deepwm"} <= set(om.list_units("schemes"))
    assert om.create_scheme("content", "paper").config.epochs == 40
    assert om.create_scheme("fcw", "direct", epochs=2).config.fusion == "direct"
    assert om.create_scheme("content", epochs=3, lr="0.1").config.lr == 0.1  # strings parsed as on the CLI
    assert om.create_attack("prune", amount=0.3).config.amount == 0.3
    with pytest.raises(UnknownNameError, match="no watermark scheme named 'fwc'; did you mean 'fcw'"):
        om.create_scheme("fwc")
    with pytest.raises(ConfigError, match="FCWConfig has no setting 'epoch'"):
        om.create_scheme("fcw", epoch=3)
    with pytest.raises(ConfigError, match="no kind of unit 'scheme'"):
        om.list_units("scheme")


def test_train_save_load_and_verify_every_family(tmp_path) -> None:
    digits = om.load_data("digits")
    pairs = om.load_data("denoise", family="image2image")
    models = {
        "classifier": om.train("cnn2", digits, epochs=1),
        "encoder": om.train("conv4", digits, epochs=1, out_dim=16),
        "image2image": om.train("conv3", pairs, epochs=1),
    }
    for family, model in models.items():
        assert model.spec.family == family
        om.save_model(tmp_path / family, model, note="api test")
        again = om.load_model(tmp_path / family)
        assert again.spec == model.spec
        assert 0.0 <= om.utility(again, pairs if family == "image2image" else digits) <= 1.0
    with pytest.raises(ConfigError, match="split must be owner or attacker"):
        om.train("cnn2", digits, split="test")
    key = om.create_scheme("unrelated", n_embed=8, n_verify=8, epochs=1).draw_key(models["classifier"], digits.owner,
                                                                                  seed=0)  # fmt: skip
    verdict = om.verify(models["classifier"], key)
    assert 0 < verdict.p_value <= 1 and not verdict.owned
    with pytest.raises(ConfigError, match="has no black-box test"):
        om.verify(models["classifier"], key, blackbox=True)
