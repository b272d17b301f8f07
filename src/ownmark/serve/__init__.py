"""Models behind an API: the in-process ModelAPI, the HTTP service and its client.

The HTTP parts (FastAPI, uvicorn, httpx) load on first use, so ``from ownmark.serve import ModelAPI``
stays as light as the in-process API.
"""

from importlib import import_module
from typing import Any

from ownmark.serve.api import KINDS, ModelAPI, default_kind

_LAZY = {
    "ServeConfig": "app", "Service": "app", "background_server": "app", "create_app": "app", "load_models": "app",
    "read_tokens": "app", "RemoteModel": "client", "ServiceError": "client", "RateLimiter": "store",
    "UsageStore": "store", "key_id": "store",
}  # fmt: skip

__all__ = ["KINDS", "ModelAPI", "default_kind", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"ownmark.serve.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ownmark.serve' has no attribute {name!r}")
