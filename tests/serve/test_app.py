"""The service over a real socket: bad requests, defenses, rate limits, persistence, the encoder family."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from torch import nn

from ownmark.defenses import parse_defense
from ownmark.errors import ConfigError, MissingFileError
from ownmark.models import ModelSpec, save_model
from ownmark.serve import ModelAPI, RemoteModel, ServeConfig, Service, load_models, read_tokens
from ownmark.serve.wire import JSON_TYPE, TENSOR_TYPE, encode

from .conftest import OTHER, TOKEN, Serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}
GOOD = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))


HTTP = httpx.Client(timeout=30)  # one pool for the module: a client per request costs ~30 ms to set up


@pytest.fixture(scope="module", autouse=True)
def close_http() -> Iterator[None]:
    yield
    HTTP.close()


def post(url: str, body: bytes, *, headers: dict[str, str] | None = None, model: str = "m") -> httpx.Response:
    return HTTP.post(f"{url}/v1/models/{model}/query", content=body, headers={**AUTH, "Content-Type": TENSOR_TYPE,
                      **(headers or {})})  # fmt: skip


def raw_post(url: str, head: str, body: bytes) -> httpx.Response:
    """Send a request as raw bytes (an HTTP client refuses to send a lying Content-Length)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/models/m/query HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode() + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
            data.lower().partition(b"content-length: ")[2].split(b"\r\n")[0] or 0
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status, _, rest = data.partition(b"\r\n\r\n")
    return httpx.Response(int(status.split()[1]), content=rest)


def nan_images() -> torch.Tensor:
    x = GOOD.clone()
    x[0, 0, 0, 0] = float("nan")
    return x


BAD = {
    "no token": (401, "missing API token", lambda url: post(url, encode(GOOD), headers={"Authorization": ""})),
    "wrong token": (401, "invalid API", lambda url: post(url, encode(GOOD), headers={"Authorization": "Bearer x"})),
    "basic auth": (401, "missing API token", lambda url: post(url, encode(GOOD), headers={"Authorization": "Basic x"})),
    "unknown model": (404, "no model named 'nope'", lambda url: post(url, encode(GOOD), model="nope")),
    "wrong shape": (400, "model takes", lambda url: post(url, encode(torch.rand(2, 3, 8, 8)))),
    "empty batch": (400, "no images", lambda url: post(url, encode(torch.rand(0, 1, 8, 8)))),
    "not 4-d": (400, r"\(N, C, H, W\)", lambda url: post(url, encode(torch.rand(8, 8)))),
    "NaN": (400, "NaN", lambda url: post(url, encode(nan_images()))),
    "out of range": (400, r"\[0, 1\]", lambda url: post(url, encode(GOOD * 3))),
    "int dtype": (400, "float", lambda url: post(url, encode((GOOD * 255).to(torch.uint8)))),
    "float64": (400, "float32", lambda url: post(url, encode(GOOD.double()))),
    "garbage": (400, "not an ownmark tensor", lambda url: post(url, b"\x80\x04garbage-pickle-like-bytes")),
    "short body": (400, "header", lambda url: post(url, b"OW")),
    "lying header": (400, "declares shape", lambda url: post(url, encode(GOOD)[:-4])),
    "bad json": (400, "not valid JSON", lambda url: post(url, b"{images", headers={"Content-Type": JSON_TYPE})),
    "json no images": (400, "images", lambda url: post(url, b'{"x": 1}', headers={"Content-Type": JSON_TYPE})),
    "ragged json": (400, "nested lists", lambda url: post(url, json.dumps({"images": [[[[0.1, 0.2], [0.3]]]]}).encode(),
                                                           headers={"Content-Type": JSON_TYPE})),
    "json strings": (400, "nested lists", lambda url: post(url, b'{"images": [[[["a"]]]]}',
                                                            headers={"Content-Type": JSON_TYPE})),
    "json NaN": (400, "NaN", lambda url: post(url, json.dumps({"images": nan_images().tolist()}).encode(),
                                              headers={"Content-Type": JSON_TYPE})),
    "content type": (415, "content type", lambda url: post(url, encode(GOOD), headers={"Content-Type": "text/plain"})),
    "oversized": (413, "exceeds the limit", lambda url: post(url, encode(torch.rand(200, 1, 8, 8)))),
    "oversized, streamed": (413, "exceeds the limit", lambda url: post(url, iter([encode(GOOD)] * 40))),
    "lying length": (413, "exceeds the limit", lambda url: raw_post(
        url, f"Authorization: Bearer {TOKEN}\r\nContent-Type: {TENSOR_TYPE}\r\nContent-Length: 99999999\r\n", b"x")),
    "path validation": (404, "Not Found", lambda url: HTTP.get(f"{url}/v1/nothing", headers=AUTH)),
    "wrong method": (405, "Method Not Allowed", lambda url: HTTP.get(f"{url}/v1/models/m/query", headers=AUTH)),
}  # fmt: skip


def test_bad_requests_get_a_one_line_4xx_cost_nothing_and_the_server_keeps_serving(
    serve: Serve, classifier: nn.Module
) -> None:
    with serve({"m": classifier}, ServeConfig(budget=100, max_body=20_000)) as url:
        for name, (status, match, send) in BAD.items():
            resp = send(url)
            assert resp.status_code == status, (name, resp.status_code, resp.text)
            detail = resp.json()["detail"]
            assert "\n" not in detail and re.search(match, detail), (name, detail)
            ok = post(url, encode(GOOD))  # still serving, and every bad request was free
            assert ok.status_code == 200, (name, ok.text)
        assert HTTP.get(f"{url}/v1/models/m", headers=AUTH).json()["used"] == 3 * len(BAD)


def test_answers_match_the_in_process_api_in_both_formats(serve: Serve, classifier: nn.Module) -> None:
    with serve({"m": classifier}, ServeConfig(kind="logits", defense="noise:0.5", seed=3)) as url:
        local = ModelAPI(classifier, "logits", defense=parse_defense("noise:0.5"), seed=3)
        with RemoteModel(url, TOKEN) as remote:
            for _ in range(3):  # the same noise stream, answer after answer
                assert torch.equal(remote(GOOD), local(GOOD))
            assert remote.queries == 9 and remote.remaining is None and remote.kind == "logits"
        resp = HTTP.post(f"{url}/v1/models/m/query", json={"images": GOOD.tolist()}, headers=AUTH)
        body = resp.json()
        assert body["shape"] == [3, 4] and body["used"] == 12 and body["dtype"] == "float32"
        assert torch.equal(torch.tensor(body["output"]), local(GOOD))
        other = RemoteModel(url, OTHER)  # another key: its own noise stream, from the start
        assert torch.equal(
            other(GOOD), ModelAPI(classifier, "logits", defense=parse_defense("noise:0.5"), seed=3)(GOOD)
        )


def test_topk_and_labels_apply_on_the_server(serve: Serve, classifier: nn.Module) -> None:
    with serve({"a": classifier}, ServeConfig(defense="topk:1")) as url:
        assert ((RemoteModel(url, TOKEN)(GOOD) > 0).sum(1) == 1).all()
    with serve({"a": classifier}, ServeConfig(kind="labels")) as url:
        labels = RemoteModel(url, TOKEN)(GOOD)
        assert labels.dtype == torch.int64 and torch.equal(labels, classifier(GOOD).argmax(1))


def test_health_models_and_openapi_docs(serve: Serve, classifier: nn.Module) -> None:
    with serve({"m": classifier, "n": classifier}, ServeConfig(budget=10)) as url:
        assert HTTP.get(f"{url}/health").json() == {"status": "ok", "models": 2}
        listed = HTTP.get(f"{url}/v1/models", headers=AUTH).json()
        assert [m["name"] for m in listed] == ["m", "n"]
        assert listed[0] | {"name": "m"} == {
            "name": "m", "family": "classifier", "kind": "probs", "input_shape": [1, 8, 8], "defense": "none",
            "budget": 10, "used": 0, "remaining": 10,
        }  # fmt: skip
        assert HTTP.get(f"{url}/v1/models").status_code == 401
        spec = HTTP.get(f"{url}/openapi.json").json()
        assert "/v1/models/{name}/query" in spec["paths"] and "HTTPBearer" in spec["components"]["securitySchemes"]
        page = HTTP.get(f"{url}/docs")
        # rendered by the service: it reads offline (no Swagger UI script from a CDN) and lists every route
        assert page.status_code == 200 and "<script" not in page.text and "http" not in page.text.replace(url, "")
        assert "POST /v1/models/{name}/query" in page.text and "429 query budget exhausted" in page.text
        with pytest.raises(ConfigError, match="serves"):
            RemoteModel(url, TOKEN)  # two models: the client must name one
        assert RemoteModel(f"{url}/v1/models/n", TOKEN).name == "n"


def test_rate_limit_refuses_with_retry_after_and_the_client_waits_it_out(serve: Serve, classifier: nn.Module) -> None:
    with serve({"m": classifier}, ServeConfig(rate=2.0, burst=2)) as url:
        codes = [post(url, encode(GOOD)) for _ in range(3)]
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert "rate limit of 2 requests/s" in codes[2].json()["detail"] and codes[2].headers["Retry-After"] == "1"
        remote = RemoteModel(url, OTHER)
        for _ in range(4):  # bursts past the limit: the client sleeps as told and every answer comes
            remote(GOOD)
        assert remote.queries == 12


def test_budgets_survive_a_restart(serve: Serve, classifier: nn.Module, tmp_path: Path) -> None:
    config = ServeConfig(budget=10)
    with serve({"m": classifier}, config, db=tmp_path / "usage.sqlite") as url:
        assert post(url, encode(torch.rand(7, 1, 8, 8))).status_code == 200
    with serve({"m": classifier}, config, db=tmp_path / "usage.sqlite") as url:
        remote = RemoteModel(url, TOKEN)
        assert remote.remaining == 3
        refused = post(url, encode(torch.rand(4, 1, 8, 8)))
        assert refused.status_code == 429
        assert refused.json()["detail"] == (
            "query budget exhausted: 7 of 10 images answered, a batch of 4 exceeds the 3 left"
        )
        remote(torch.rand(3, 1, 8, 8))
        assert remote.remaining == 0


def test_an_encoder_serves_features(serve: Serve) -> None:
    torch.manual_seed(0)
    encoder = ModelSpec("conv4", 1, 32, 28, family="encoder").build().eval()
    x = torch.rand(5, 1, 28, 28)
    with serve({"enc": encoder}, ServeConfig(defense="round:2")) as url:
        remote = RemoteModel(url, TOKEN)
        assert remote.kind == "features"
        assert torch.equal(remote(x), ModelAPI(encoder, defense=parse_defense("round:2"))(x))


def test_models_load_from_artefacts_and_tokens_from_a_file(tmp_path: Path, classifier: nn.Module) -> None:
    save_model(tmp_path / "marked", classifier)
    models = load_models([str(tmp_path / "marked"), f"copy={tmp_path / 'marked.safetensors'}"])
    assert sorted(models) == ["copy", "marked"]
    assert torch.equal(models["copy"](GOOD), classifier(GOOD))
    with pytest.raises(ConfigError, match="taken"):
        load_models([str(tmp_path / "marked"), f"marked={tmp_path / 'marked'}"])
    (tmp_path / "tokens.txt").write_text("# keys of the lab\nalpha-token-1\n\n  beta-token-22  # bob\n")
    assert read_tokens(tmp_path / "tokens.txt") == ["alpha-token-1", "beta-token-22"]
    with pytest.raises(MissingFileError, match="no tokens file"):
        read_tokens(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"tokens": []}, "at least one API token"), ({"tokens": ["short"]}, "at least 8 characters"),
     ({"models": {}}, "at least one model")],
)  # fmt: skip
def test_bad_service_settings(classifier: nn.Module, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Service(**{"models": {"m": classifier}, "tokens": [TOKEN], **kwargs})


@pytest.mark.parametrize(
    "bad", [{"budget": -1}, {"rate": 0}, {"defense": "blur:1"}, {"max_body": 0}, {"burst": 0}, {"kind": "words"}]
)
def test_bad_serve_configs(bad: dict) -> None:
    with pytest.raises((ConfigError, LookupError), match=next(iter(bad)) if "defense" not in bad else "blur"):
        ServeConfig(**bad)


def test_a_model_without_a_spec_refuses_shapes_it_cannot_take_with_400(serve: Serve) -> None:
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with serve({"plain": plain}, ServeConfig(budget=10)) as url:
        assert post(url, encode(GOOD), model="plain").status_code == 200
        refused = post(url, encode(torch.rand(2, 1, 4, 4)), model="plain")
        assert refused.status_code == 400 and refused.json()["detail"] == "the model cannot take images (1, 4, 4)"
        assert HTTP.get(f"{url}/v1/models/plain", headers=AUTH).json()["used"] == 3  # the refusal was refunded


def test_a_client_that_hangs_up_mid_body_costs_one_log_line_and_nothing_else(
    serve: Serve, classifier: nn.Module, capfd: pytest.CaptureFixture[str]
) -> None:
    with serve({"m": classifier}, ServeConfig(budget=100)) as url:
        host, port = url.removeprefix("http://").split(":")
        for _ in range(3):
            with socket.create_connection((host, int(port))) as sock:
                head = (
                    f"POST /v1/models/m/query HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Content-Type: {TENSOR_TYPE}\r\nContent-Length: 100000\r\n\r\n"
                )
                sock.sendall(head.encode() + b"\0" * 1000)  # then hang up, 99,000 bytes short
        assert HTTP.get(f"{url}/health").status_code == 200
        assert HTTP.get(f"{url}/v1/models/m", headers=AUTH).json()["used"] == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in ASGI application" not in err, err[-2000:]
