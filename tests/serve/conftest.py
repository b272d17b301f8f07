"""A real uvicorn server on 127.0.0.1 for the service tests: ``serve(models, config, db=...)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import pytest
import torch
from torch import nn

from ownmark.models import ModelSpec
from ownmark.serve import ServeConfig, Service, UsageStore, background_server, create_app

TOKEN, OTHER = "test-token-0001", "test-token-0002"
Serve = Callable[..., AbstractContextManager[str]]


@pytest.fixture()
def classifier() -> nn.Module:
    torch.manual_seed(0)
    return ModelSpec("cnn2", 1, 4, 8).build().eval()


@pytest.fixture()
def serve() -> Iterator[Serve]:
    """Start a service on a free port; ``with serve({"m": model}, ServeConfig(...), db=path) as url``."""
    with ExitStack() as stack:

        def start(
            models: dict[str, nn.Module], config: ServeConfig = ServeConfig(), *, db: Path | None = None,
            tokens: tuple[str, ...] = (TOKEN, OTHER),
        ) -> AbstractContextManager[str]:  # fmt: skip
            store = UsageStore(db)
            stack.callback(store.close)
            return background_server(create_app(Service(models, tokens, config, store)))

        yield start
