"""``ownmark bench serve``: the model service's throughput and latency next to the in-process API.

The service runs in its own process (uvicorn, binary tensors, SQLite accounting, a token per
request), the client in this one, as an attacker's script would. For a small classifier and a
small encoder, at several batch sizes, the same batch is answered for a fixed time by the
in-process :class:`~ownmark.serve.api.ModelAPI` and over HTTP by
:class:`~ownmark.serve.client.RemoteModel`, alternately; then several clients at once measure the
service's throughput. Both sides compute with one torch thread, so the figures compare the cost of
the wire, not of thread pools fighting over two cores. The goal: HTTP latency at most 2x the
in-process latency at batch 64.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ownmark.bench.report.benchmarks import machine
from ownmark.models import ModelSpec, load_model, save_model
from ownmark.serve.api import ModelAPI
from ownmark.serve.client import RemoteModel

MODELS = {
    "classifier": ModelSpec("cnn2", 1, 10, 28),
    "encoder": ModelSpec("conv4", 1, 32, 28, family="encoder"),
}
TOKEN = "bench-token-0000"
BATCHES, CLIENTS, GOAL_BATCH, GOAL, ROUNDS = (1, 16, 64, 256), 4, 64, 2.0, 10


def _serve(folder: str, urls: Any, stop: Any) -> None:
    """The server process: load the saved models, serve them, report the URL, wait for ``stop``."""
    from ownmark.serve.app import ServeConfig, Service, background_server, create_app
    from ownmark.serve.store import UsageStore

    torch.set_num_threads(1)
    models = {name: load_model(Path(folder) / name)[0] for name in MODELS}
    service = Service(models, [TOKEN], ServeConfig(), UsageStore(Path(folder) / "usage.sqlite"))
    with background_server(create_app(service)) as url:
        urls.put(url)
        stop.wait()


def _timed(call: Callable[[], Any], seconds: float) -> list[float]:
    """Latencies (s) of ``call`` repeated for ``seconds`` (at least 2 calls) after a warm-up call."""
    call()
    out: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(out) < 2:
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def _alternated(api: ModelAPI, remote: RemoteModel, x: torch.Tensor, seconds: float, rounds: int) -> tuple[list, list]:
    """Latencies of both sides in alternated rounds, so that drifts in machine load hit both alike."""
    local: list[float] = []
    wire: list[float] = []
    for _ in range(rounds):
        local += _timed(lambda: api(x), seconds / rounds / 2)
        wire += _timed(lambda: remote(x), seconds / rounds / 2)
    return local, wire


def _stats(lat: list[float], wall: float | None = None, requests: int | None = None) -> dict[str, float]:
    qs = statistics.quantiles(lat, n=100, method="inclusive")
    rate = (requests or len(lat)) / (wall if wall is not None else sum(lat))
    return {"rps": rate, "p50": qs[49] * 1e3, "p99": qs[98] * 1e3}


def _concurrent(url: str, name: str, x: torch.Tensor, seconds: float) -> dict[str, float]:
    """Several clients at once, each with its own connection: aggregate requests/s and latencies."""
    lats: list[list[float]] = [[] for _ in range(CLIENTS)]

    def client(i: int) -> None:
        with RemoteModel(f"{url}/v1/models/{name}", TOKEN) as remote:
            lats[i] = _timed(lambda: remote(x), seconds)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [v for lat in lats for v in lat]
    return _stats(flat, time.perf_counter() - start, len(flat))


def measure(
    url: str, seconds: float, say: Callable[[str], None], batches: Sequence[int] = BATCHES, rounds: int = ROUNDS
) -> list[dict[str, Any]]:
    """One row per (model, batch): in-process and HTTP statistics, alternated; then the concurrent rows."""
    rows = []
    for name, spec in MODELS.items():
        torch.manual_seed(0)
        api = ModelAPI(spec.build().eval())
        with RemoteModel(f"{url}/v1/models/{name}", TOKEN) as remote:
            for batch in batches:
                x = torch.rand(batch, *spec.input_shape, generator=torch.Generator().manual_seed(batch))
                if not torch.allclose(api(x), remote(x), atol=1e-5):
                    raise RuntimeError(f"the served {name} answers differently from the in-process one")
                local, wire = _alternated(api, remote, x, seconds, rounds)
                rows.append({"model": name, "batch": batch, "clients": 1, "local": _stats(local),
                             "http": _stats(wire)})  # fmt: skip
                say(f"{name} batch {batch}: in process {rows[-1]['local']['p50']:.2f} ms, "
                    f"HTTP {rows[-1]['http']['p50']:.2f} ms (p50)")  # fmt: skip
        x = torch.rand(GOAL_BATCH, *spec.input_shape)
        rows.append({"model": name, "batch": GOAL_BATCH, "clients": CLIENTS, "local": None,
                     "http": _concurrent(url, name, x, seconds)})  # fmt: skip
    return rows


def render(rows: list[dict[str, Any]], seconds: float, rounds: int = ROUNDS, load: float | None = None) -> str:
    """The BENCHMARKS.md section for ``rows``."""
    busy = "" if load is None else f"; 1-min load average {load:.1f} at the start (it adds waits for a core)"
    lines = [
        "## Model service over HTTP",
        "",
        "Written by `ownmark bench serve`. The service (uvicorn, binary tensors, bearer token, SQLite "
        "accounting) runs in its own process, the client in another; both compute with 1 torch thread. "
        f"Each single-client figure comes from ~{seconds / 2:g} s of back-to-back requests per side (in-process "
        f"and HTTP alternated in {rounds} rounds); the {CLIENTS}-client rows measure the service's throughput "
        f"with {CLIENTS} connections. "
        f"Models untrained, 1x28x28 inputs: classifier `cnn2` (10 classes), encoder `conv4` (32-d). "
        f"Machine: {machine()}{busy}.",
        "",
        "| model | batch | clients | in-process req/s | in-process p50 / p99 ms | HTTP req/s | HTTP images/s "
        "| HTTP p50 / p99 ms | HTTP / in-process (p50) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for r in rows:
        h, loc = r["http"], r["local"]
        ratio = h["p50"] / loc["p50"] if loc else None
        local_rps = f"{loc['rps']:,.0f}" if loc else "-"
        local_lat = f"{loc['p50']:.2f} / {loc['p99']:.2f}" if loc else "-"
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['clients']} | {local_rps} | {local_lat} | {h['rps']:,.0f} | "
            f"{h['rps'] * r['batch']:,.0f} | {h['p50']:.2f} / {h['p99']:.2f} | {f'{ratio:.2f}' if ratio else '-'} |"
        )
        if loc and r["batch"] == GOAL_BATCH:
            verdicts.append(f"{r['model']} {ratio:.2f}x ({'met' if ratio <= GOAL else 'missed'})")
    lines += ["", f"Goal: HTTP p50 latency <= {GOAL:g}x in process at batch {GOAL_BATCH}: {'; '.join(verdicts)}."]
    return "\n".join(lines)


def run_serve_bench(
    *,
    seconds: float = 3.0,
    batches: Sequence[int] = BATCHES,
    rounds: int = ROUNDS,
    say: Callable[[str], None] = lambda _m: None,
) -> str:
    """Start the service in a child process, measure, return the ``serve`` section (written by
    :func:`ownmark.bench.report.publish`).

    Args:
        seconds: time per (model, batch) measurement, split between the two sides and ``rounds``.
    """
    threads = torch.get_num_threads()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        for name, spec in MODELS.items():
            torch.manual_seed(0)
            save_model(Path(folder) / name, spec.build().eval())
        urls, stop = ctx.Queue(), ctx.Event()
        server = ctx.Process(target=_serve, args=(folder, urls, stop), daemon=True)
        server.start()
        try:
            url = urls.get(timeout=120)
            say(f"service up at {url}")
            torch.set_num_threads(1)
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            rows = measure(url, seconds, say, batches, rounds)
            text = render(rows, seconds, rounds, load)  # machine() reports the 1 thread measured with
        finally:
            torch.set_num_threads(threads)
            stop.set()
            server.join(30)
            if server.is_alive():
                server.terminate()
    return text
