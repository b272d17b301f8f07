"""A bounded load test: thousands of requests from several clients, no error, no lost accounting."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from ownmark.bench.report import publish
from ownmark.bench.studies.serve import render, run_serve_bench
from ownmark.models import ModelSpec
from ownmark.serve import RemoteModel, ServeConfig, UsageStore, key_id

from .conftest import OTHER, TOKEN, Serve

CLIENTS, REQUESTS = 6, 400  # 2,400 requests, 10,800 images


@pytest.mark.slow
def test_thousands_of_requests_from_several_clients(serve: Serve, tmp_path: Path, one_thread: None) -> None:
    torch.manual_seed(0)
    model: nn.Module = ModelSpec("cnn2", 1, 4, 8).build().eval()
    x = torch.rand(8, 1, 8, 8)
    expected = model(x).softmax(1)
    sent = {TOKEN: 0, OTHER: 0}
    errors: list[BaseException] = []
    lock = threading.Lock()
    with serve({"m": model}, ServeConfig(budget=10**6), db=tmp_path / "usage.sqlite") as url:

        def client(i: int) -> None:
            token = (TOKEN, OTHER)[i % 2]
            try:
                with RemoteModel(url, token) as remote:
                    for j in range(REQUESTS):
                        n = 1 + (i + j) % 8
                        out = remote(x[:n])
                        if not torch.allclose(out, expected[:n], atol=1e-6):
                            raise AssertionError(f"client {i} request {j}: a wrong answer")
                    with lock:
                        sent[token] += remote.queries
            except BaseException as err:  # collected: a thread's exception would otherwise be lost
                errors.append(err)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        with RemoteModel(url, TOKEN) as remote:
            assert remote.info()["used"] == sent[TOKEN]
    usage = {row["key"]: row for row in UsageStore(tmp_path / "usage.sqlite").usage()}
    for token in (TOKEN, OTHER):
        assert usage[key_id(token)]["used"] == sent[token]
        assert usage[key_id(token)]["requests"] == REQUESTS * CLIENTS // 2
    assert sum(sent.values()) == sum(1 + (i + j) % 8 for i in range(CLIENTS) for j in range(REQUESTS))


def test_the_benchmark_section_reports_the_goal() -> None:
    stats = {"rps": 100.0, "p50": 2.0, "p99": 3.0}
    rows = [
        {"model": "classifier", "batch": 64, "clients": 1, "local": stats, "http": {**stats, "p50": 3.0}},
        {"model": "encoder", "batch": 64, "clients": 1, "local": stats, "http": {**stats, "p50": 5.0}},
        {"model": "encoder", "batch": 64, "clients": 4, "local": None, "http": stats},
    ]
    text = render(rows, seconds=1.0)
    assert "| classifier | 64 | 1 | 100 | 2.00 / 3.00 | 100 | 6,400 | 3.00 / 3.00 | 1.50 |" in text
    assert "| encoder | 64 | 4 | - | - | 100 | 6,400 | 2.00 / 3.00 | - |" in text
    assert text.endswith("classifier 1.50x (met); encoder 2.50x (missed).")


@pytest.mark.slow
def test_the_benchmark_runs_against_a_server_process(tmp_path: Path) -> None:
    text = run_serve_bench(seconds=0.01, batches=(64,), rounds=1)
    publish(tmp_path / "BENCHMARKS.md", "serve", text)
    assert (tmp_path / "BENCHMARKS.md").read_text().count("<!-- section:serve -->") == 1
    assert text.count("| classifier | 64 |") == 2 and text.count("| encoder | 64 |") == 2
