import copy

import pytest
import torch
from torch.nn import functional as F

from ownmark.attacks import ATTACKS, StolenEncoder, StolenEncoderConfig
from ownmark.attacks.encoder_eval import (
    DefendedEncoder,
    agreement,
    evaluate_theft,
    gain_recovered,
    linear_cka,
    probe,
    surrogate_pretrained,
)
from ownmark.attacks.stolen_encoder import STOLEN_ENCODER_PRESETS, steal_loss, surrogate_images
from ownmark.data.toy import toy_images
from ownmark.defenses import parse_defense
from ownmark.errors import BudgetExhaustedError, ConfigError, ShapeError, UnknownNameError
from ownmark.models import ModelSpec, encode
from ownmark.serve.api import ModelAPI
from ownmark.train.ssl import SSLConfig


def toy_encoder(arch: str = "conv4", dim: int = 16):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ModelSpec(arch, 3, dim, 16, family="encoder").build().eval()


class Counter:
    """A black-box feature API (no weights, no spec) that counts and may stop answering."""

    def __init__(self, encoder, limit: int | None = None) -> None:
        self.encoder, self.limit, self.queries = encoder, limit, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and self.queries + len(x) > self.limit:
            raise BudgetExhaustedError(f"{self.queries} of {self.limit} used")
        self.queries += len(x)
        return encode(self.encoder, x)


def test_registered_as_black_box_encoder_attack_with_paper_preset() -> None:
    assert ATTACKS.get("stolenencoder") is StolenEncoder
    assert StolenEncoder.access == "black-box" and StolenEncoder.families == ("encoder",)
    paper = STOLEN_ENCODER_PRESETS["paper"].config
    assert (paper.optimizer, paper.lr, paper.momentum, paper.weight_decay) == ("sgd", 1e-3, 0.9, 5e-4)
    assert (paper.batch_size, paper.epochs, paper.lambda_value, paper.k, paper.distance) == (64, 100, 20.0, 1, "cosine")


@pytest.mark.parametrize(
    ("change", "field"),
    [({"budget": 0}, "budget"), ({"k": 0}, "k"), ({"lambda_value": -1.0}, "lambda_value"), ({"distance": "l1"},
     "distance"), ({"epochs": 1.5}, "epochs"), ({"lr": 0}, "lr"), ({"arch": ""}, "arch"),
     ({"optimizer": "rmsprop"}, "optimizer"), ({"budget": True}, "budget")],
)  # fmt: skip
def test_config_rejects_bad_values(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        StolenEncoderConfig(**change)
    with pytest.raises(UnknownNameError, match="nope"):  # an unknown architecture fails before any query
        StolenEncoderConfig(arch="nope")


def test_steal_loss_matches_hand_computed_values() -> None:
    target = F.normalize(torch.tensor([[3.0, 4.0], [1.0, 0.0]]), dim=1)
    clean = torch.tensor([[6.0, 8.0], [0.0, 2.0]])  # cosine 1 and 0 with the targets
    view = torch.tensor([[-3.0, -4.0], [1.0, 0.0]])  # cosine -1 and 1
    # cosine distance: clean (0 + 1) / 2, view (2 + 0) / 2
    assert steal_loss(clean, [view], target, 20.0).item() == pytest.approx(0.5 + 20 * 1.0)
    assert steal_loss(clean, [view], target, 0.0).item() == pytest.approx(0.5)  # lambda 0: no view term
    # k views are averaged: lambda / k * sum
    assert steal_loss(clean, [view, clean], target, 2.0).item() == pytest.approx(0.5 + 2 * (1.0 + 0.5) / 2)
    # l2 between unit vectors: clean (0 + sqrt 2) / 2, view (2 + 0) / 2
    assert steal_loss(clean, [view], target, 1.0, "l2").item() == pytest.approx(2**0.5 / 2 + 1.0)
    x = clean.clone().requires_grad_(True)
    steal_loss(x, [], target, 20.0).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_module_victim_is_served_through_the_api_and_left_untouched() -> None:
    victim = toy_encoder()
    before = copy.deepcopy(victim.state_dict())
    stolen, cost = StolenEncoder(StolenEncoderConfig(budget=40, k=3, epochs=1))(victim, toy_images(), seed=0)
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items())
    assert cost.queries == 40 and cost.details["images_trained"] == 40 * 4  # 3 views per image cost no queries
    assert stolen is not victim and stolen.spec == victim.spec and not stolen.training
    x = toy_images(1).x[:4]
    assert stolen(x).shape == victim(x).shape == (4, 16)


def test_query_function_needs_an_architecture_of_any_kind_with_the_same_width() -> None:
    api = Counter(toy_encoder())
    with pytest.raises(ConfigError, match="arch"):
        StolenEncoder(StolenEncoderConfig(budget=8, epochs=1))(api, toy_images(), seed=0)
    assert api.queries == 0  # refused before the first query
    stolen, cost = StolenEncoder(StolenEncoderConfig(budget=24, epochs=1, arch="resnet-s"))(api, toy_images(), seed=0)
    assert api.queries == cost.queries == 24
    assert stolen.spec == ModelSpec("resnet-s", 3, 16, 16, family="encoder")


def test_wrong_image_shape_costs_no_queries() -> None:
    api = ModelAPI(toy_encoder(), budget=100)
    with pytest.raises(ShapeError, match="input shape"):
        StolenEncoder(StolenEncoderConfig(budget=8, epochs=1, arch="conv4"))(
            api, toy_images(size=12), seed=0
        )  # fmt: skip
    assert api.queries == 0


def test_budget_is_exact_and_its_end_is_said_clearly() -> None:
    victim = toy_encoder()
    api = ModelAPI(victim, budget=30)
    attack = StolenEncoder(StolenEncoderConfig(budget=40, epochs=1, arch="conv4"))
    with pytest.raises(BudgetExhaustedError, match="30 images left.*budget=30 or less.*nothing was queried"):
        attack(api, toy_images(), seed=0)
    assert api.queries == 0
    # an API that only says so when it refuses: stopped mid-way, with how far it got
    api2 = Counter(victim, limit=20)
    small = StolenEncoder(StolenEncoderConfig(budget=40, epochs=1, arch="conv4", query_batch=16))
    with pytest.raises(BudgetExhaustedError, match="after 16 of 40 images.*budget=16"):
        small(api2, toy_images(), seed=0)
    assert api2.queries == 16
    # exactly the budget: every allowed query is used, not one more
    api3 = ModelAPI(victim, budget=30)
    _, cost = StolenEncoder(StolenEncoderConfig(budget=30, epochs=1, arch="conv4", query_batch=7))(
        api3, toy_images(), seed=0
    )  # fmt: skip
    assert api3.queries == cost.queries == 30 and api3.remaining == 0
    with pytest.raises(BudgetExhaustedError):
        api3(toy_images().x[:1])


def test_same_seed_same_stolen_encoder_and_another_distribution_as_surrogate_data() -> None:
    victim = toy_encoder()
    attack = StolenEncoder(StolenEncoderConfig(budget=32, epochs=1))
    a, _ = attack(victim, toy_images(), seed=3)
    b, _ = attack(victim, toy_images(), seed=3)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    other = StolenEncoder(StolenEncoderConfig(budget=32, epochs=1, source="photos"))
    _, cost = other(victim, toy_images(), seed=0)  # photos resized to 3x16x16
    assert cost.queries == 32 and cost.details["source"] == "photos"


def test_label_answers_are_refused_with_the_fix() -> None:
    def labels(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), dtype=torch.long)

    with pytest.raises(ShapeError, match="kind='features'"):
        StolenEncoder(StolenEncoderConfig(budget=8, epochs=1, arch="conv4"))(labels, toy_images(), seed=0)


def test_similarity_and_agreement_metrics() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert linear_cka(x, x @ rotation * 5) == pytest.approx(1.0)
    assert linear_cka(x, torch.randn(200, 16, generator=g)) < 0.2
    with pytest.raises(ShapeError, match="linear_cka"):
        linear_cka(x, x[:10])
    assert gain_recovered(0.8, 0.9, 0.7) == pytest.approx(0.5)
    enc = toy_encoder()
    res, (full, few) = probe(enc, toy_images(0), toy_images(1), seed=0, shots=2)
    assert agreement(full, full, toy_images(1).x) == 1.0 and 0 <= res.few <= 1
    defended = DefendedEncoder(enc, parse_defense("topk:3"))
    assert (encode(defended, toy_images().x[:5]) != 0).sum(1).le(3).all()


@pytest.mark.slow
def test_stealing_the_mnist_encoder_with_250_queries(mnist_splits, mnist_encoder, one_thread) -> None:
    """Reduced must-holds on mnist5k (seed 0): 250 queries = 10% of the 2,500-image pre-training set."""
    splits, target = mnist_splits, mnist_encoder
    before = copy.deepcopy(target.state_dict())
    config = StolenEncoderConfig(budget=250, epochs=30)
    stolen, cost = StolenEncoder(config)(target, splits.attacker, seed=0)
    ev = evaluate_theft(
        target, stolen, splits.attacker, splits.test, seed=0, cost=cost, pretrain_size=len(splits.owner)
    )
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    assert ev.query_fraction == 0.1
    # the target is worth stealing, and the theft carries most of its gain over a random encoder
    assert ev.ta.few > ev.pixels.few + 0.03, (ev.ta, ev.pixels)
    assert ev.sa.full >= 0.9 * ev.ta.full and ev.sa.few >= 0.9 * ev.ta.few, (ev.sa, ev.ta)
    assert ev.recovered_full >= 0.85 and ev.recovered_few >= 0.8, (ev.recovered_full, ev.recovered_few)
    assert ev.agreement_full > 0.9 and ev.cka > 0.6, (ev.agreement_full, ev.cka)
    # the augmentation term helps (seed 0; the bench checks the mean over 3 seeds)
    plain, _ = StolenEncoder(StolenEncoderConfig(budget=250, epochs=30, lambda_value=0))(
        target, splits.attacker, seed=0
    )  # fmt: skip
    pl, _ = probe(plain, splits.attacker, splits.test, seed=0)
    assert ev.sa.full > pl.full + 0.01 and ev.sa.few > pl.few + 0.02, (ev.sa, pl)
    # pre-training on the same 250 images with the same compute (image passes) does worse
    queried = surrogate_images(splits.attacker, 250, seed=0)
    pa_encoder, _ = surrogate_pretrained(stolen.spec, queried, seed=0, config=SSLConfig(epochs=30))
    pa, _ = probe(pa_encoder, splits.attacker, splits.test, seed=0)
    assert pa.few < ev.sa.few and pa.full < ev.sa.full, (pa, ev.sa)


@pytest.mark.slow
def test_cli_steals_an_encoder_artefact_and_refuses_a_classifier(tmp_path, monkeypatch, capsys) -> None:
    import json
    import sys

    from rich.console import Console
    from typer.testing import CliRunner

    from ownmark import cli
    from ownmark.models import load_model, save_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_model(tmp_path / "enc", ModelSpec("conv4", 1, 16, 28, family="encoder").build())
        save_model(tmp_path / "clf", ModelSpec("cnn2", 1, 10, 28).build())
    monkeypatch.setattr(cli, "console", Console(width=300, color_system=None))
    args = ["attack", "stolenencoder", "--model", str(tmp_path / "enc"), "--out", str(tmp_path / "stolen"),
            "--preset", "paper", "--set", "budget=32", "--set", "epochs=1", "--set", "lambda_value=0"]  # fmt: skip
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "victim probe" in result.stdout and "linear CKA" in result.stdout and "32 queries" in result.stdout
    stolen, manifest = load_model(tmp_path / "stolen")
    assert stolen.spec.family == "encoder" and manifest["info"]["cost"]["queries"] == 32
    saved = json.loads((tmp_path / "stolen.config.json").read_text())
    assert saved["preset"] == "paper" and saved["config"]["optimizer"] == "sgd" and saved["config"]["budget"] == 32
    monkeypatch.setattr(sys, "argv", ["ownmark", "attack", "stolenencoder", "--model", str(tmp_path / "clf"),
                                      "--out", str(tmp_path / "o")])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1 and "not an encoder" in capsys.readouterr().err
