"""Where matrix tasks run: in this process, in local worker processes, or on a Ray cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from ownmark.errors import ConfigError


def serial() -> Callable[[Callable, list], Iterator[Any]]:
    """Run tasks one after the other in this process."""

    def run(fn: Callable, tasks: list) -> Iterator[Any]:
        for task in tasks:
            yield fn(task)

    return run


def local(workers: int) -> Callable[[Callable, list], Iterator[Any]]:
    """Run tasks in ``workers`` fresh processes (spawned), sharing the cores between them."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        return serial()

    def run(fn: Callable, tasks: list) -> Iterator[Any]:
        if not tasks:
            return
        ctx = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(fn, t) for t in tasks]
            for future in as_completed(futures):
                yield future.result()

    return run


def ray(address: str | None = None, num_cpus: int | None = None) -> Callable[[Callable, list], Iterator[Any]]:
    """Run tasks as Ray tasks: on the cluster at ``address``, or on a local Ray instance.

    Needs the ``ray`` extra (``pip install ownmark[ray]``). Each task asks Ray for one CPU; the
    driver collects rows as tasks finish, so a killed driver loses only unfinished cells. A local
    instance runs its workers at normal priority: Ray's default (niceness 15, for a driver that
    must stay responsive) let any other busy process starve the bench's tasks (measured: the
    two-worker test run took 808 s beside one other busy process, 48 s alone).
    """
    try:
        import ray as ray_
    except ImportError:
        raise ConfigError("--executor ray needs Ray; run `pip install 'ownmark[ray]'`") from None

    def run(fn: Callable, tasks: list) -> Iterator[Any]:
        if not tasks:
            return
        if not ray_.is_initialized():
            local = {"num_cpus": num_cpus, "_system_config": {"worker_niceness": 0}} if address is None else {}
            ray_.init(address=address, include_dashboard=False, **local)
        remote = ray_.remote(num_cpus=1)(fn)
        pending = [remote.remote(t) for t in tasks]
        while pending:
            ready, pending = ray_.wait(pending, num_returns=1)
            yield ray_.get(ready[0])

    return run


def make_executor(
    name: str, *, workers: int = 1, address: str | None = None
) -> Callable[[Callable, list], Iterator[Any]]:
    """The executor called ``name``: serial, local or ray."""
    if name == "serial":
        return serial()
    if name == "local":
        return local(workers)
    if name == "ray":
        return ray(address, num_cpus=workers)
    raise ConfigError(f"--executor must be serial, local or ray, got {name!r}")
