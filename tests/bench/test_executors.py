"""Executors place workers on GPUs without needing one: what each worker is shown is checked on the CPU."""

import os

import pytest

from ownmark.bench.executors import make_executor, ray_resources
from ownmark.errors import ConfigError


def _visible(_task: int) -> tuple[int, str]:
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


def test_local_workers_see_one_gpu_each_in_turn() -> None:
    run = make_executor("local", workers=2, gpus=2)
    seen = dict(run(_visible, list(range(8))))  # pid -> the GPU its worker was given
    assert sorted(seen.values()) == ["0", "1"] and len(seen) == 2
    shared = dict(make_executor("local", workers=2, gpus=1)(_visible, list(range(8))))
    assert set(shared.values()) == {"0"}  # two workers share the one GPU
    alone = dict(make_executor("local", workers=2)(_visible, list(range(4))))
    assert set(alone.values()) == {os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}  # no --gpus: left as it is


def test_ray_tasks_ask_for_their_share_of_the_gpus() -> None:
    assert ray_resources(2, 0) == {"num_cpus": 1}
    assert ray_resources(8, 2) == {"num_cpus": 1, "num_gpus": 0.25}
    with pytest.raises(ConfigError, match="--gpus"):
        ray_resources(2, -1)


def test_gpus_need_workers_that_can_hold_them() -> None:
    with pytest.raises(ConfigError, match="local or ray"):
        make_executor("serial", gpus=1)
    with pytest.raises(ConfigError, match="--gpus"):
        make_executor("local", workers=2, gpus=-1)
