"""`ownmark bench run --rehearse`: every preset at its smallest, on stand-in data of its datasets' shapes."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from ownmark.bench.plan import REHEARSAL_BUDGET, MatrixConfig, load_config, rehearsal
from ownmark.bench.presets import PRESETS
from ownmark.data import load_dataset
from ownmark.errors import ConfigError


def _lengths(config) -> dict[str, int]:
    """Every training length and query budget of a resolved scheme or attack config."""
    if not is_dataclass(config):
        return {}
    out: dict[str, int] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):  # a nested config, e.g. enc-ssl's SSL training
            out |= {f"{f.name}.{k}": v for k, v in _lengths(value).items()}
        elif (f.name.endswith(("epochs", "steps")) or f.name == "budget") and isinstance(value, int):
            out[f.name] = value
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_rehearses_at_one_epoch_on_its_first_seed(name: str) -> None:
    full, small = load_config(name), rehearsal(load_config(name))
    assert small.name == f"{name}-rehearsal" and small.seeds == full.seeds[:1]
    assert list(small.schemes) == list(full.schemes) and small.families() == full.families()
    assert [a["name"] for a in small.attacks] == [a["name"] for a in full.attacks]
    # one cell per attack entry and scheme: sweeps keep their first value
    assert {(s, lbl.split(" ")[0]) for s, lbl, _, _ in small.cells()} == {
        (s, lbl.split(" ")[0]) for s, lbl, _, _ in full.cells()
    }
    for label in small.schemes:
        for field, value in _lengths(small.scheme_config(label)).items():
            assert value <= 1 or field == "budget", (label, field, value)
    for stages in small.attack_stages.values():
        for _, config in stages:
            for field, value in _lengths(config).items():
                assert (value <= REHEARSAL_BUDGET) if field == "budget" else value <= 1, (field, value)
    # fewer null models, but every architecture and family of the full run's is still met
    assert len(small.null_names()) <= len(full.null_names())
    assert {(n.family, n.arch) for n in small.null_names()} == {(n.family, n.arch) for n in full.null_names()}
    if full.dataset.startswith("tv:"):
        assert small.dataset.startswith("synthetic:")
    else:
        assert small.dataset == full.dataset  # bundled data needs no download: kept


def test_the_paper_preset_rehearses_on_cifar_shaped_images_with_its_architectures() -> None:
    small = rehearsal(load_config("paper"))
    assert small.dataset == "synthetic:3x32x32:10:3000" and small.arch == "tv:resnet18:cifar"
    data = load_dataset(small.dataset)
    assert data.shape == (3, 32, 32) and data.num_classes == 10 and len(data) == 3000
    assert small.clean["epochs"] == 1 and small.clean["lr"] == 0.1  # the rest of the recipe as in the run
    assert not small.scheme_config("fcw").milestones and small.scheme_config("fcw").epochs == 1


def test_synthetic_names_and_what_cannot_be_rehearsed(tmp_path: Path) -> None:
    a, b = load_dataset("synthetic:1x8x8:2:20"), load_dataset("synthetic:1x8x8:2:20")
    assert a.shape == (1, 8, 8) and len(a) == 20 and a.x.equal(b.x) and a.y.tolist() == [0, 1] * 10
    for bad in ("synthetic:8x8:2", "synthetic:1x8x8", "synthetic:1x8x8:2:5", "synthetic:1x8x8:0"):
        with pytest.raises(ConfigError, match="CxHxW:CLASSES"):
            load_dataset(bad)
    folder = MatrixConfig.from_dict({"dataset": f"folder:{tmp_path}", "schemes": {"fcw": {}}})
    with pytest.raises(ConfigError, match="no synthetic stand-in"):
        rehearsal(folder)


@pytest.mark.slow
def test_a_rehearsal_runs_end_to_end_through_the_cli(tmp_path: Path, one_thread) -> None:
    """A narrowed config rehearsed and run: one row per cell and per (null model, key), at one epoch each."""
    import json

    import yaml
    from typer.testing import CliRunner

    from ownmark.bench.store import ResultStore
    from ownmark.cli import app

    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tiny", "dataset": "synthetic:1x28x28:10:2600", "seeds": [3, 4], "clean": {"epochs": 4},
        "schemes": {"fcw": {}}, "nulls": {"archs": ["cnn2", "lenet"], "seeds": 3},
        "attacks": [{"name": "none"}, {"name": "ftal", "set": {"epochs": 3}, "sweep": {"lr": [0.01, 0.05]}}],
    }))  # fmt: skip
    args = ["bench", "run", "--config", str(cfg), "--rehearse", "--executor", "serial"]
    result = CliRunner().invoke(app, [*args, "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    store = ResultStore(tmp_path / "w" / "results.sqlite")
    cells, nulls = store.rows("cell"), store.rows("null")
    assert sorted(r["attack_label"] for r in cells) == ["ftal lr=0.01", "none"] and {r["seed"] for r in cells} == {3}
    assert sorted({r["model"] for r in nulls}) == ["cnn2-seed1000", "lenet-seed1000"]  # one null per architecture
    assert all(r["cost_epochs"] == 1 for r in cells if r["attack"] == "ftal")
    manifest = json.loads((tmp_path / "w" / "models" / "fcw-seed3.json").read_text())
    assert manifest["info"]["seed"] == 3


def test_a_nested_training_config_shrinks_and_keeps_the_users_other_settings() -> None:
    """enc-ssl carries its SSL training as a nested config: its epochs shrink, the rest stays the user's."""
    full = MatrixConfig.from_dict({
        "name": "nested", "dataset": "digits", "seeds": [0], "schemes": {"awencoder": {}},
        "attacks": [{"name": "enc-ssl", "set": {"ssl": {"epochs": 5, "batch_size": 64, "temperature": 0.2}}}],
    })  # fmt: skip
    ((_, full_ssl),) = full.attack_stages["awencoder", "enc-ssl"]
    ((_, small_ssl),) = rehearsal(full).attack_stages["awencoder", "enc-ssl"]
    assert (full_ssl.ssl.epochs, small_ssl.ssl.epochs) == (5, 1)
    assert (small_ssl.ssl.batch_size, small_ssl.ssl.temperature) == (64, 0.2)
    assert rehearsal(full).scheme_config("awencoder").ssl.epochs == 1
