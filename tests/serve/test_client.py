"""Black-box attacks and verification over HTTP give what they give in process; budgets hold under concurrency."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import httpx
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from ownmark import cli
from ownmark.attacks import ATTACKS
from ownmark.attacks.distill import Distill, DistillConfig
from ownmark.core import Key
from ownmark.data.toy import toy_images
from ownmark.errors import BudgetExhaustedError, ConfigError, ShapeError, UnknownNameError
from ownmark.io import save_key
from ownmark.models import ModelSpec, load_model, save_model
from ownmark.serve import ModelAPI, RemoteModel, ServeConfig, ServiceError
from ownmark.serve.client import split_url
from ownmark.verify import decide
from ownmark.watermarks import WATERMARKS

from .conftest import OTHER, TOKEN, Serve


@pytest.fixture()
def victim() -> nn.Module:
    torch.manual_seed(1)
    return ModelSpec("cnn2", 3, 4, 16).build().eval()


@pytest.mark.parametrize("output", ["probs", "labels"])
def test_distillation_over_http_equals_distillation_in_process(
    serve: Serve, victim: nn.Module, output: str, one_thread: None
) -> None:
    data, config = toy_images(), DistillConfig(output=output, budget=48, epochs=2, arch="cnn2", query_batch=16)
    local = ModelAPI(victim, output, budget=48)
    there, there_cost = Distill(config)(local, data, seed=3)
    with serve({"victim": victim}, ServeConfig(kind=output, budget=48)) as url, RemoteModel(url, TOKEN) as remote:
        here, here_cost = Distill(config)(remote, data, seed=3)
        assert remote.queries == local.queries == here_cost.queries == there_cost.queries == 48
        assert remote.remaining == local.remaining == 0
    assert all(torch.equal(a, b) for a, b in zip(here.state_dict().values(), there.state_dict().values(), strict=True))


def test_encoder_stealing_over_http_equals_stealing_in_process(serve: Serve, one_thread: None) -> None:
    torch.manual_seed(2)
    encoder = ModelSpec("conv4", 3, 16, 16, family="encoder").build().eval()
    attack = ATTACKS.get("stolenencoder")
    config = attack.config_class(budget=40, epochs=1, arch="conv4", query_batch=16)
    there, _ = attack(config)(ModelAPI(encoder, "features", budget=40), toy_images(), seed=1)
    with serve({"encoder": encoder}, ServeConfig(budget=40)) as url, RemoteModel(url, TOKEN) as remote:
        here, cost = attack(config)(remote, toy_images(), seed=1)
        assert cost.queries == remote.queries == 40 and remote.remaining == 0
    assert all(torch.equal(a, b) for a, b in zip(here.state_dict().values(), there.state_dict().values(), strict=True))


def test_an_attack_past_the_budget_fails_as_in_process(serve: Serve, victim: nn.Module) -> None:
    data, config = toy_images(), DistillConfig(budget=64, epochs=1, arch="cnn2", query_batch=16)
    with pytest.raises(BudgetExhaustedError) as in_process:
        Distill(config)(ModelAPI(victim, budget=40), data, seed=0)
    with serve({"victim": victim}, ServeConfig(budget=40)) as url, RemoteModel(url, TOKEN) as remote:
        with pytest.raises(BudgetExhaustedError) as over_http:
            Distill(config)(remote, data, seed=0)
        assert str(over_http.value) == str(in_process.value) and remote.queries == 32


def test_budgets_are_exact_under_concurrent_clients(serve: Serve, victim: nn.Module) -> None:
    """Eight clients of one key race for 200 images: 200 are answered, then every next one gets 429."""
    answered, refusals, x = [0] * 8, [], torch.rand(1, 3, 16, 16)
    with serve({"victim": victim}, ServeConfig(budget=200)) as url:

        def client(i: int) -> None:
            with RemoteModel(url, TOKEN) as remote:
                while True:
                    try:
                        remote(x)
                    except BudgetExhaustedError as err:
                        refusals.append(str(err))
                        return
                    answered[i] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(answered) == 200 and len(refusals) == 8
        assert all(r.startswith("query budget exhausted: 200 of 200 images answered") for r in refusals)
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            info = http.get(f"{url}/v1/models/victim").json()
            resp = http.post(f"{url}/v1/models/victim/query", json={"images": x.tolist()})
        assert (info["used"], info["remaining"], resp.status_code) == (200, 0, 429)
        assert resp.json() == {
            "detail": "query budget exhausted: 200 of 200 images answered, a batch of 1 exceeds the 0 left"
        }
        with RemoteModel(url, OTHER) as other:  # another key has its own budget
            assert other(x).shape == (1, 4) and other.remaining == 199


def _memorise(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A copy of ``model`` that answers ``y`` on ``x`` (a marked model by construction)."""
    marked = copy.deepcopy(model).train()
    opt = torch.optim.Adam(marked.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(marked(x), y)
        loss.backward()
        opt.step()
    marked.eval()
    assert bool((marked(x).argmax(1) == y).all())
    return marked


def _random_label_key(x: torch.Tensor, num_classes: int, seed: int) -> Key:
    """An unrelated-trigger key with secret balanced random labels: exact permutation test."""
    from ownmark.watermarks.baselines import balanced_labels

    y = balanced_labels(len(x), num_classes, torch.Generator().manual_seed(seed))
    return Key("unrelated", {}, {"verify_x": x, "verify_y": y}, {"num_classes": num_classes, "target": None})


def test_verification_of_a_served_suspect_gives_the_in_process_verdict(serve: Serve, victim: nn.Module) -> None:
    xv = torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    key = _random_label_key(xv, 4, seed=5)
    marked = _memorise(victim, xv, key.tensors["verify_y"])
    scheme = WATERMARKS.get("unrelated")()
    with serve({"marked": marked, "innocent": victim}, ServeConfig(budget=1000)) as url:
        for name, model in [("marked", marked), ("innocent", victim)]:
            with RemoteModel(f"{url}/v1/models/{name}", TOKEN) as remote:
                over_http = decide(scheme.detect(remote, key))
                assert over_http == decide(scheme.detect(model, key))
                assert over_http.queries == remote.queries == 40 and over_http.owned == (name == "marked")
        # the untrained model answers one class everywhere: it matches a quarter of the labels, p = 1
        assert decide(scheme.detect(victim, key)).p_value == 1.0


def test_client_errors_are_one_clear_ownmark_error(serve: Serve, victim: nn.Module) -> None:
    with serve({"victim": victim}, ServeConfig()) as url:
        with pytest.raises(ServiceError, match="refused the API token: invalid API token") as err:
            RemoteModel(url, "not-a-token")
        assert err.value.status == 401
        with pytest.raises(UnknownNameError, match="no model named 'nope'"):
            RemoteModel(url, TOKEN, model="nope")
        with RemoteModel(url, TOKEN) as remote:
            with pytest.raises(ShapeError, match=r"model takes \(3, 16, 16\)"):
                remote(torch.rand(2, 1, 16, 16))
            with pytest.raises(ShapeError, match="NaN"):
                remote(torch.full((1, 3, 16, 16), float("nan")))
            assert remote.queries == 0 and remote.input_shape == (3, 16, 16)
    with pytest.raises(ServiceError, match="cannot reach .* is `ownmark serve` running"):
        RemoteModel(url, TOKEN)  # the server is gone
    for bad in ["127.0.0.1:8000", "ftp://host/x", "http://host:1/v2/other"]:
        with pytest.raises(ConfigError, match="target URL"):
            split_url(bad)
    with pytest.raises(ConfigError, match="API token"):
        RemoteModel("http://127.0.0.1:9", "")


def test_cli_attacks_and_verifies_over_the_wire(serve: Serve, tmp_path: Path, one_thread: None) -> None:
    torch.manual_seed(0)
    xv = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    key = _random_label_key(xv, 10, seed=2)
    model = _memorise(ModelSpec("cnn2", 1, 10, 8).build().eval(), xv, key.tensors["verify_y"])  # takes digits
    save_key(tmp_path / "key", key)
    save_model(tmp_path / "model", model)
    runner = CliRunner()
    with serve({"model": model}, ServeConfig(budget=100)) as url:
        result = runner.invoke(cli.app, ["verify", "--key", str(tmp_path / "key"), "--target-url", url,
                                         "--model", str(tmp_path / "model")], env={"OWNMARK_TOKEN": TOKEN})  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = [line.split("│")[2:] for line in result.output.splitlines() if "30 (n=30)" in line]
        assert len(rows) == 2 and rows[0] == rows[1] and "OWNED" in rows[0][3], result.output  # same verdict
        result = runner.invoke(cli.app, [
            "attack", "distill", "--target-url", url, "--token", TOKEN, "--out", str(tmp_path / "stolen"),
            "--dataset", "digits", "--set", "budget=64", "--set", "epochs=1", "--set", "arch=cnn2",
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "64 queries" in result.output and load_model(tmp_path / "stolen")[1]["info"]["target_url"] == url
        result = runner.invoke(cli.app, ["attack", "ftal", "--target-url", url, "--token", TOKEN,
                                         "--out", str(tmp_path / "x"), "--dataset", "digits"])  # fmt: skip
        assert isinstance(result.exception, ConfigError) and "black-box" in str(result.exception)
        no_token = ["verify", "--key", str(tmp_path / "key"), "--target-url", url]
        result = runner.invoke(cli.app, no_token, env={"OWNMARK_TOKEN": None})
        assert isinstance(result.exception, ConfigError) and "needs the API token" in str(result.exception)
        result = runner.invoke(cli.app, [*no_token, "--token", "wrong-token"])
        assert isinstance(result.exception, ServiceError) and "invalid API token" in str(result.exception)


def test_cli_serve_builds_the_service_from_artefacts_and_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ownmark.serve.app as app_module

    started = {}
    monkeypatch.setattr(app_module, "serve_forever", lambda app, host, port: started.update(app=app, port=port))
    torch.manual_seed(0)
    save_model(tmp_path / "marked", ModelSpec("cnn2", 1, 4, 8).build())
    (tmp_path / "tokens").write_text(f"{TOKEN}\n")
    runner = CliRunner()
    args = ["serve", str(tmp_path / "marked"), "--tokens-file", str(tmp_path / "tokens"), "--budget", "5",
            "--defense", "round:2", "--db", str(tmp_path / "usage.sqlite"), "--port", "8123"]  # fmt: skip
    result = runner.invoke(cli.app, args, env={"OWNMARK_TOKEN": None})
    assert result.exit_code == 0, result.output
    assert "serving marked at http://127.0.0.1:8123" in result.output and started["port"] == 8123
    routes = {route.path for route in started["app"].routes}
    assert {"/health", "/v1/models/{name}/query", "/docs"} <= routes
    result = runner.invoke(cli.app, args[:2], env={"OWNMARK_TOKEN": None})
    assert isinstance(result.exception, ConfigError) and "at least one API token" in str(result.exception)
    result = runner.invoke(cli.app, [*args, "--defense", "blur:3"], env={"OWNMARK_TOKEN": TOKEN})
    assert isinstance(result.exception, LookupError) and "blur" in str(result.exception)
