"""``ownmark bench perf``'s loop comparison times the same computation on both sides."""

from __future__ import annotations

import copy

import torch

from ownmark.bench.studies.perf import bare_fit, fabric_fit, loop_rates, render, synthetic_cifar
from ownmark.data.toy import toy_images
from ownmark.models import ModelSpec
from ownmark.train import Engine, TrainConfig


def test_bare_loop_trains_the_weights_fit_trains():
    data = toy_images(n=96)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05)
    a = ModelSpec("cnn2", 3, 4, 16).build()
    b = copy.deepcopy(a)
    assert fabric_fit(a, data, config, 3, Engine()) > 0 and bare_fit(b, data, config, 3) > 0
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name  # same order, optimiser and loss: what is timed is the loop alone


def test_loop_rates_and_the_accelerator_section():
    data = toy_images(n=64)
    fab, bare = loop_rates(
        ModelSpec("cnn2", 3, 4, 16), data, TrainConfig(epochs=1, batch_size=16), accelerator="cpu",
        precision="32-true", repeats=1,
    )  # fmt: skip
    assert fab > 0 and bare > 0
    images = synthetic_cifar(20)
    assert images.shape == (3, 32, 32) and images.y.bincount().tolist() == [2] * 10
    text = render([("loop", "1 vs 1", 1.0, ">= 0.95", True)], 1, 64, "cuda")
    assert "tv:resnet18:cifar on 25,600 synthetic 3x32x32 images" in text and "All goals met" in text
    assert text.startswith("## Foundation on cuda") and "`ownmark bench perf --accelerator cuda`" in text


def test_a_gpu_run_writes_its_own_section_beside_the_cpus(tmp_path):
    """The GPU figures of issue 16 must not replace the CPU's (both are must-holds)."""
    from ownmark.bench.report import publish
    from ownmark.bench.studies.perf import section_name

    md = tmp_path / "BENCHMARKS.md"
    row = [("loop", "1 vs 1", 1.0, ">= 0.95", True)]
    publish(md, section_name("cpu"), render(row, 1, 64, "cpu"))
    publish(md, section_name("cuda"), render(row, 1, 64, "cuda"))
    text = md.read_text()
    assert "<!-- section:foundation -->" in text and "<!-- section:foundation-cuda -->" in text
    assert text.count("## Foundation\n") == 1 and text.count("## Foundation on cuda") == 1
