"""The client of the model service: a served model called like the in-process ModelAPI.

:class:`RemoteModel` is a query function: images (N, C, H, W) in [0, 1] go in, the server's
answers come out as a tensor, and ``queries`` / ``remaining`` count as ``ModelAPI`` does. So every
black-box attack (extraction, encoder stealing, surrogate training) and every black-box
verification takes it where it takes a query function, and runs unchanged against
``http://127.0.0.1:PORT``. A budget refusal raises BudgetExhaustedError as in process; a rate
limit is waited out (up to ``max_wait`` seconds); every other refusal is one clear OwnmarkError.
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
from typing import Any
from urllib.parse import urlsplit

import httpx
import torch

from ownmark.errors import BudgetExhaustedError, ConfigError, OwnmarkError, ShapeError, UnknownNameError
from ownmark.serve.wire import TENSOR_TYPE, decode, encode


class ServiceError(OwnmarkError):
    """The model service refused a request or could not be reached; ``status`` is the HTTP code (0: none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def split_url(url: str) -> tuple[str, str | None]:
    """The service's base URL and the model named in it, if any.

    Example:
        >>> split_url("http://127.0.0.1:8000/v1/models/marked")
        ('http://127.0.0.1:8000', 'marked')
        >>> split_url("http://127.0.0.1:8000/")
        ('http://127.0.0.1:8000', None)
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"the target URL must look like http://HOST:PORT[/v1/models/NAME], got {url!r}")
    path = parts.path.rstrip("/")
    name = None
    if path.startswith("/v1/models/"):
        name, path = path.removeprefix("/v1/models/"), ""
    if path or "/" in (name or ""):
        raise ConfigError(f"the target URL must look like http://HOST:PORT[/v1/models/NAME], got {url!r}")
    return f"{parts.scheme}://{parts.netloc}", name


class RemoteModel:
    """A model behind ``ownmark serve``, with the call interface of :class:`~ownmark.serve.api.ModelAPI`.

    Args:
        url: ``http://HOST:PORT`` (the service must serve one model, or name it with ``model``)
            or ``http://HOST:PORT/v1/models/NAME``.
        token: an API token the service was started with (sent as a bearer token, never logged).
        model: the served model's name.
        timeout: seconds to wait for one answer.
        max_wait: seconds the client may spend waiting out the server's rate limit per call.

    Attributes:
        queries: images this client had answered.
        kind, input_shape, budget: what the service says of the model.
    """

    def __init__(
        self, url: str, token: str, *, model: str | None = None, timeout: float = 60.0, max_wait: float = 30.0
    ) -> None:
        base, named = split_url(url)
        if not token:
            raise ConfigError("RemoteModel needs the API token given to `ownmark serve` (--token or OWNMARK_TOKEN)")
        self.url, self.max_wait, self.queries = base, max_wait, 0
        # TCP_NODELAY: headers and body leave as two writes; Nagle + delayed ACK would add 40 ms to each call
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=timeout, transport=transport
        )
        weakref.finalize(self, self._http.close)  # a client dropped unclosed leaves no open socket
        self._lock = threading.Lock()
        name = model or named
        if name is None:
            names = [m["name"] for m in self._get("/v1/models")]
            if len(names) != 1:
                raise ConfigError(f"{base} serves {names}; name one: {base}/v1/models/NAME or model=NAME")
            name = names[0]
        self.name = name
        info = self._get(f"/v1/models/{name}")
        self.kind: str = info["kind"]
        self.input_shape: tuple[int, ...] | None = tuple(info["input_shape"]) if info["input_shape"] else None
        self.budget: int | None = info["budget"]
        self._remaining: int | None = info["remaining"]

    @property
    def remaining(self) -> int | None:
        """Images this key may still have answered (as of the last answer), or None without a budget."""
        return self._remaining

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The service's answers to images (N, C, H, W) in [0, 1]; the batch is charged whole or refused."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"the query must be a torch.Tensor, got {type(x).__name__}")
        if x.is_floating_point():
            x = x.to(torch.float32)
        body = encode(x)
        deadline = time.monotonic() + self.max_wait
        while True:
            try:
                resp = self._http.post(f"/v1/models/{self.name}/query", content=body,
                                       headers={"Content-Type": TENSOR_TYPE})  # fmt: skip
            except httpx.HTTPError as err:
                raise ServiceError(f"cannot reach {self.url} ({err}); is `ownmark serve` running there?") from None
            wait = float(resp.headers.get("X-Ownmark-Retry-After", 0))
            if resp.status_code == 429 and wait > 0 and time.monotonic() + wait <= deadline:
                time.sleep(wait)
                continue
            break
        if resp.status_code != 200:
            raise self._error(resp)
        out = decode(resp.content)
        with self._lock:
            self.queries += len(x)
            left = resp.headers.get("X-Ownmark-Remaining", "none")
            self._remaining = None if left == "none" else int(left)
        return out

    def info(self) -> dict[str, Any]:
        """The service's description of the model, with this key's ``used`` and ``remaining`` images."""
        return self._get(f"/v1/models/{self.name}")

    def close(self) -> None:
        """Close the connection pool (the client is unusable afterwards)."""
        self._http.close()

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteModel({self.url}/v1/models/{getattr(self, 'name', '?')})"

    def _get(self, path: str) -> Any:
        try:
            resp = self._http.get(path)
        except httpx.HTTPError as err:
            raise ServiceError(f"cannot reach {self.url} ({err}); is `ownmark serve` running there?") from None
        if resp.status_code != 200:
            raise self._error(resp)
        return resp.json()

    def _error(self, resp: httpx.Response) -> OwnmarkError:
        """The OwnmarkError for a refusal: the server's one-line reason, with what to do."""
        try:
            detail = str(resp.json()["detail"])
        except (ValueError, KeyError, TypeError):
            detail = resp.text[:200] or resp.reason_phrase
        code = resp.status_code
        if code == 429 and resp.headers.get("X-Ownmark-Refusal") == "budget":
            return BudgetExhaustedError(detail)
        if code == 400:
            return ShapeError(detail)
        if code == 404:
            return UnknownNameError(f"{self.url}: {detail}")
        if code == 401:
            return ServiceError(f"{self.url} refused the API token: {detail}; pass a token the service was started "
                                "with (--token or OWNMARK_TOKEN)", code)  # fmt: skip
        return ServiceError(f"{self.url} answered {code}: {detail}", code)
