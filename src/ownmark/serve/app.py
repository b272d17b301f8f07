"""The model service over HTTP: ownmark models behind a FastAPI app, with keys, budgets and defenses.

Every model is served through the in-process :class:`~ownmark.serve.api.ModelAPI` (its input
checks, its kinds of answer, its defenses), one per (key, model), so a client sees on the wire
exactly what an attacker in process would. In front of it sit the access controls: a bearer
token per client (compared in constant time, never logged), a request body limit enforced before
anything is parsed, a token-bucket rate limit per key, and a per-key image budget kept in SQLite
(:class:`~ownmark.serve.store.UsageStore`), so budgets are exact under concurrency and survive a
restart. Every client mistake is a 4xx with a one-line ``{"detail": ...}``.

Routes: ``GET /health``; ``GET /v1/models``; ``GET /v1/models/{name}``;
``POST /v1/models/{name}/query`` with a binary tensor (:mod:`ownmark.serve.wire`) or JSON
``{"images": ...}``; OpenAPI docs at ``/docs`` (a page rendered by the service itself, so it reads
offline: no script from a CDN) and ``/openapi.json``. Bodies are parsed in a worker thread, so a
large JSON query never stalls ``/health``; a client that hangs up mid-body costs one log line.
"""

from __future__ import annotations

import hmac
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from torch import nn

from ownmark.defenses import parse_defense
from ownmark.errors import BudgetExhaustedError, ConfigError, MissingFileError, ShapeError
from ownmark.serve.api import KINDS, ModelAPI, default_kind
from ownmark.serve.store import RateLimiter, UsageStore, key_id
from ownmark.serve.wire import JSON_TYPE, TENSOR_TYPE, decode, encode, from_json, to_json

log = logging.getLogger(__name__)
DESCRIPTION = (
    "ownmark models behind an API: send images (N, C, H, W) in [0, 1] with a bearer token; get labels, "
    "probabilities, logits, features or images. Each key has a per-model image budget and a rate limit."
)
MIN_TOKEN = 8


@dataclass(frozen=True)
class ServeConfig:
    """How the service answers and what it allows each key.

    Args:
        kind: what every model returns (one of ``KINDS``); None takes each model's family default.
        budget: images each key may have answered per model, over the store's lifetime; None: no limit.
        defense: output defense spec (``none``, ``noise:STD``, ``round:D``, ``topk:K``).
        seed: seeds each key's defense noise, as ``ModelAPI(seed=...)`` does in process.
        rate: requests per second per key (token bucket); None: no limit.
        burst: requests a key may send at once before ``rate`` applies.
        max_body: largest request body in bytes; larger ones get 413 before they are read.
    """

    kind: str | None = None
    budget: int | None = None
    defense: str = "none"
    seed: int = 0
    rate: float | None = None
    burst: int = 20
    max_body: int = 16 * 2**20

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ConfigError(f"ServeConfig.kind must be one of {list(KINDS)} or None, got {self.kind!r}")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 0):  # fmt: skip
            raise ConfigError(f"ServeConfig.budget must be a non-negative int or None, got {self.budget!r}")
        for name in ("burst", "max_body"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ServeConfig.{name} must be a positive int, got {value!r}")
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, (int, float))
                                      or not 0 < self.rate < math.inf):  # fmt: skip
            raise ConfigError(
                f"ServeConfig.rate must be a finite positive number of requests/s or None, got {self.rate!r}"
            )
        parse_defense(self.defense)  # a bad spec fails here, not at the first request


def read_tokens(path: str | Path) -> list[str]:
    """API tokens from a file: one per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no tokens file {path}; write one token per line")
    return [t for line in path.read_text(encoding="utf-8").splitlines() if (t := line.split("#")[0].strip())]


def load_models(paths: Sequence[str]) -> dict[str, nn.Module]:
    """Models by name from ``NAME=PATH`` or ``PATH`` (named after the file) of ownmark artefacts."""
    from ownmark.models import load_model

    models: dict[str, nn.Module] = {}
    for item in paths:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name.removesuffix(".safetensors"), item
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name in models:
            raise ConfigError(f"model name {name!r} from {item!r} is empty, taken or not [A-Za-z0-9._-]; "
                              "name it with NAME=PATH")  # fmt: skip
        models[name] = load_model(path)[0]
    return models


class Service:
    """What the app does, apart from HTTP: authenticate, limit, check, charge, answer.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> svc = Service({"m": ModelSpec("cnn2", 1, 3, 8).build()}, ["token-123"], ServeConfig(budget=5))
        >>> key = svc.authenticate("token-123")
        >>> out, remaining = svc.answer(key, "m", torch.rand(4, 1, 8, 8))
        >>> tuple(out.shape), remaining
        ((4, 3), 1)
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        tokens: Sequence[str],
        config: ServeConfig = ServeConfig(),
        store: UsageStore | None = None,
    ) -> None:
        if not models:
            raise ConfigError("the service needs at least one model to serve")
        tokens = [t.strip() for t in tokens if t.strip()]
        if not tokens:
            raise ConfigError("the service needs at least one API token; give --token or --tokens-file")
        if short := [key_id(t) for t in tokens if len(t) < MIN_TOKEN]:
            raise ConfigError(f"API tokens must have at least {MIN_TOKEN} characters; too short: {short}")
        self.models, self.config = dict(models), config
        self._tokens = [(t.encode(), key_id(t)) for t in tokens]
        self.store = store or UsageStore(None)
        self.limiter = RateLimiter(config.rate, config.burst) if config.rate is not None else None
        self.defense = parse_defense(config.defense)
        self._apis: dict[tuple[str, str], tuple[ModelAPI, threading.Lock]] = {}
        self._lock = threading.Lock()
        for name, model in self.models.items():
            ModelAPI(model, self.kind(name))  # refuses a kind the model cannot give, before serving

    def kind(self, name: str) -> str:
        return self.config.kind or default_kind(self.models[name])

    def authenticate(self, token: str | None) -> str | None:
        """The key id of a valid token, else None; every known token is compared in constant time."""
        if not token:
            return None
        given, found = token.encode(), None
        for known, kid in self._tokens:
            if hmac.compare_digest(given, known):
                found = kid
        return found

    def api(self, key: str, name: str) -> tuple[ModelAPI, threading.Lock]:
        """The key's own ModelAPI on a model (its own defense noise stream) and the lock guarding it."""
        with self._lock:
            if (key, name) not in self._apis:
                api = ModelAPI(self.models[name], self.kind(name), defense=self.defense, seed=self.config.seed)
                self._apis[key, name] = (api, threading.Lock())
            return self._apis[key, name]

    def info(self, name: str, key: str | None = None) -> dict[str, Any]:
        """What a client may know of a served model (never its architecture or weights)."""
        model, budget = self.models[name], self.config.budget
        spec = getattr(model, "spec", None)
        out: dict[str, Any] = {
            "name": name, "family": getattr(spec, "family", None), "kind": self.kind(name),
            "input_shape": list(spec.input_shape) if spec is not None else None,
            "defense": self.defense.spec, "budget": budget,
        }  # fmt: skip
        if key is not None:
            used = self.store.used(key, name)
            out.update(used=used, remaining=None if budget is None else budget - used)
        return out

    def answer(self, key: str, name: str, x: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        """Check ``x``, charge the key, answer; returns the answers and the key's remaining budget."""
        if x.dtype != torch.float32:
            raise ShapeError(f"images must be float32 in [0, 1], got {str(x.dtype).removeprefix('torch.')}")
        api, lock = self.api(key, name)
        api.check_input(x)
        if len(x) == 0:
            raise ShapeError("the query holds no images; send a batch (N, C, H, W) with N >= 1")
        remaining = self.store.charge(key, name, len(x), budget=self.config.budget)
        try:
            with lock:
                out = api.answer(x)
        except BaseException as err:
            self.store.refund(key, name, len(x))  # a failed answer costs the client nothing
            if isinstance(err, RuntimeError) and api.input_shape is None:  # a model without a spec: shapes unknown
                raise ShapeError(f"the model cannot take images {tuple(x.shape[1:])}") from None
            raise
        return out, remaining


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())[:300]


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": _one_line(detail)}, status_code=status, headers=headers)


QUERY_BODY = {
    "required": True,
    "content": {
        TENSOR_TYPE: {"schema": {"type": "string", "format": "binary", "description": "ownmark.serve.wire tensor"}},
        JSON_TYPE: {"schema": {"type": "object", "required": ["images"], "properties": {"images": {
            "type": "array", "items": {}, "description": "float images (N, C, H, W) in [0, 1]"}}}},
    },
}  # fmt: skip
ERRORS = {
    code: {"description": text, "content": {JSON_TYPE: {"example": {"detail": text}}}}
    for code, text in [(400, "bad images: shape, dtype, range or NaN"), (401, "missing or invalid API token"),
                       (404, "no such model"), (413, "request body too large"), (415, "unsupported content type"),
                       (429, "query budget exhausted or rate limit exceeded")]
}  # fmt: skip


def create_app(service: Service) -> FastAPI:
    """The FastAPI app serving ``service``'s models."""
    app = FastAPI(title="ownmark model service", version="1", description=DESCRIPTION, docs_url=None, redoc_url=None)
    bearer = HTTPBearer(auto_error=False, description="an API token given to `ownmark serve`")
    cfg = service.config

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, err.detail, getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        return _error(422, f"invalid request: {'.'.join(map(str, first.get('loc', [])))} {first.get('msg', '')}")

    def authorize(credentials: HTTPAuthorizationCredentials | None) -> str:
        key = service.authenticate(credentials.credentials if credentials else None)
        if key is None:
            detail = "invalid API token" if credentials else "missing API token; send 'Authorization: Bearer TOKEN'"
            raise HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
        return key

    def known(name: str) -> None:
        if name not in service.models:
            raise HTTPException(404, f"no model named {name!r}; GET /v1/models lists the served models")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()))

    @app.get("/health", summary="Liveness: the service is up")
    def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(service.models)}

    @app.get("/v1/models", summary="The served models", responses={401: ERRORS[401]})
    def models(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> list[dict[str, Any]]:
        key = authorize(credentials)
        return [service.info(name, key) for name in service.models]

    @app.get("/v1/models/{name}", summary="A model and this key's budget", responses={c: ERRORS[c] for c in (401, 404)})
    def model(name: str, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> dict[str, Any]:
        key = authorize(credentials)
        known(name)
        return service.info(name, key)

    @app.post(
        "/v1/models/{name}/query",
        summary="Answer a batch of images (N, C, H, W) in [0, 1]",
        description='Send a binary tensor (`application/x-ownmark-tensor`) for speed, or JSON `{"images": ...}`; '
        "the answer comes in the same format. The batch is charged whole or refused with 429.",
        openapi_extra={"requestBody": QUERY_BODY},
        responses={200: {"content": {TENSOR_TYPE: {}, JSON_TYPE: {}}}, **ERRORS},
    )
    async def query(
        name: str, request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> Response:
        key = authorize(credentials)
        known(name)
        if service.limiter is not None and (wait := service.limiter.wait(key)) > 0:
            log.info("rate limit: %s on %s", key, name)
            headers = {"Retry-After": f"{max(1, round(wait))}", "X-Ownmark-Retry-After": f"{wait:.3f}"}
            detail = f"rate limit of {cfg.rate:g} requests/s exceeded; retry in {wait:.2f} s"
            return _error(429, detail, {**headers, "X-Ownmark-Refusal": "rate"})
        body = await _read_body(request, cfg.max_body)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in (TENSOR_TYPE, "application/octet-stream", JSON_TYPE):
            raise HTTPException(415, f"content type {media or 'none'!r}; send {TENSOR_TYPE} or {JSON_TYPE}")
        try:
            x = await run_in_threadpool(from_json if media == JSON_TYPE else decode, body)  # off the event loop
            out, remaining = await run_in_threadpool(service.answer, key, name, x)
        except ShapeError as err:
            raise HTTPException(400, str(err)) from None
        except BudgetExhaustedError as err:
            log.info("budget refusal: %s on %s", key, name)
            return _error(429, str(err), {"X-Ownmark-Refusal": "budget"})
        used = service.store.used(key, name)
        if media == JSON_TYPE:
            return JSONResponse(to_json(out, used=used, remaining=remaining))
        headers = {"X-Ownmark-Used": str(used), "X-Ownmark-Remaining": "none" if remaining is None else str(remaining)}
        return Response(encode(out), media_type=TENSOR_TYPE, headers=headers)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"request body of {declared} bytes exceeds the limit of {limit}; send smaller batches")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"request body exceeds the limit of {limit} bytes; send smaller batches")
            chunks.append(chunk)
    except ClientDisconnect:  # the client hung up mid-body: nothing to answer, nothing charged, one log line
        log.info("client disconnected after %d body bytes", size)
        raise HTTPException(400, "the client disconnected before the request body was complete") from None
    return b"".join(chunks)


def docs_page(spec: Mapping[str, Any]) -> str:
    """The API reference as one self-contained HTML page (no scripts, no CDN) from an OpenAPI ``spec``."""
    from html import escape

    rows = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            responses = op.get("responses", {}).items()
            codes = ", ".join(f"{c} {escape(str(r.get('description', '')))}" for c, r in responses)
            rows.append(
                f"<h2><code>{method.upper()} {escape(path)}</code></h2><p>{escape(op.get('summary', ''))}</p>"
                f"<p>{escape(op.get('description', ''))}</p><p><small>responses: {codes}</small></p>"
            )
    info = spec.get("info", {})
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(info.get('title', ''))}</title></head>"
        f"<body style='font-family:sans-serif;max-width:60em;margin:auto'><h1>{escape(info.get('title', ''))}</h1>"
        f"<p>{escape(info.get('description', ''))}</p><p>Send <code>Authorization: Bearer TOKEN</code>. "
        f"Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>{''.join(rows)}</body></html>"
    )


def uvicorn_config(app: FastAPI, host: str, port: int, **kwargs: Any) -> Any:
    """uvicorn settings for the service: no websockets, no lifespan, no access log (a line per request)."""
    import uvicorn

    kwargs = {"log_level": "warning", "access_log": False, "lifespan": "off", "ws": "none", **kwargs}
    return uvicorn.Config(app, host=host, port=port, **kwargs)


def serve_forever(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` on ``host:port`` until interrupted (Ctrl-C)."""
    import uvicorn

    uvicorn.Server(uvicorn_config(app, host, port, log_level="info")).run()


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` on uvicorn in a background thread; yields its URL and stops it on exit.

    Port 0 picks a free port. Used by the tests and the benchmark.
    """
    import uvicorn

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it, Nagle and delayed ACKs add 40 ms
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn_config(app, host, port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ownmark-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the model service did not start on {host}:{sock.getsockname()[1]}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
