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


def _pin_gpu(counter: Any, gpus: int) -> None:
    """Worker initializer: this worker sees one GPU, the next of ``gpus`` in turn (CUDA_VISIBLE_DEVICES)."""
    import os

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)


def local(workers: int, gpus: int = 0) -> Callable[[Callable, list], Iterator[Any]]:
    """Run tasks in ``workers`` fresh processes (spawned), sharing the cores between them.

    With ``gpus`` > 0 each worker sees one GPU (``CUDA_VISIBLE_DEVICES``), given round robin: one worker
    per GPU when ``workers == gpus``, or ``workers / gpus`` workers sharing each GPU.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ConfigError(f"--gpus must be an int >= 0, got {gpus!r}")
    if workers == 1 and gpus == 0:
        return serial()

    def run(fn: Callable, tasks: list) -> Iterator[Any]:
        if not tasks:
            return
        ctx = get_context("spawn")
        pin = {"initializer": _pin_gpu, "initargs": (ctx.Value("i", 0), gpus)} if gpus else {}
        with ProcessPoolExecutor(workers, mp_context=ctx, **pin) as pool:
            futures = [pool.submit(fn, t) for t in tasks]
            for future in as_completed(futures):
                yield future.result()

    return run


def ray_resources(workers: int, gpus: int) -> dict[str, float]:
    """What each Ray task asks for: one CPU, and with ``gpus`` a share ``gpus / workers`` of a GPU (at most 1),
    so that ``workers`` tasks run at once on ``gpus`` GPUs.

    Example:
        >>> ray_resources(4, 0), ray_resources(4, 2), ray_resources(2, 4)
        ({'num_cpus': 1}, {'num_cpus': 1, 'num_gpus': 0.5}, {'num_cpus': 1, 'num_gpus': 1.0})
    """
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ConfigError(f"--gpus must be an int >= 0, got {gpus!r}")
    return {"num_cpus": 1, **({"num_gpus": min(1.0, gpus / max(1, workers))} if gpus else {})}


def ray(
    address: str | None = None, num_cpus: int | None = None, gpus: int = 0
) -> Callable[[Callable, list], Iterator[Any]]:
    """Run tasks as Ray tasks: on the cluster at ``address``, or on a local Ray instance.

    Needs the ``ray`` extra (``pip install ownmark[ray]``). Each task asks Ray for one CPU (and, with
    ``gpus``, its share of a GPU: :func:`ray_resources`); the
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
        remote = ray_.remote(**ray_resources(num_cpus or 1, gpus))(fn)
        pending = [remote.remote(t) for t in tasks]
        while pending:
            ready, pending = ray_.wait(pending, num_returns=1)
            yield ray_.get(ready[0])

    return run


def make_executor(
    name: str, *, workers: int = 1, address: str | None = None, gpus: int = 0
) -> Callable[[Callable, list], Iterator[Any]]:
    """The executor called ``name``: serial, local or ray (``gpus``: GPUs the workers share, see each)."""
    if name == "serial":
        if gpus:
            raise ConfigError("--gpus places workers on GPUs; use --executor local or ray with it")
        return serial()
    if name == "local":
        return local(workers, gpus)
    if name == "ray":
        return ray(address, num_cpus=workers, gpus=gpus)
    raise ConfigError(f"--executor must be serial, local or ray, got {name!r}")
