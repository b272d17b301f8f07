"""Batch hooks work on the device the loop hands them batches on (issue 16 item 2).

``fit`` keeps training data resident on an accelerator and indexes batches there, so every batch hook
receives device tensors and must return tensors on that device. No GPU is needed to check this: the
``meta`` device refuses to mix with CPU tensors exactly as CUDA does (``torch.cat``, ``torch.where``,
kornia's rotation), so each hook is run on meta batches here, and on CPU batches against the values
the hook gave before it became device-aware.
"""

from __future__ import annotations

import pytest
import torch

from ownmark.data.toy import toy_images
from ownmark.models import ModelSpec
from ownmark.train import DeviceCopies, label_hook
from ownmark.train import loop as loop_module
from ownmark.train.loop import Batches
from ownmark.watermarks.baselines import Content, ContentConfig, Noise, NoiseConfig, Unrelated, UnrelatedConfig
from ownmark.watermarks.ptynet import augment_hook
from ownmark.watermarks.triggers import trigger_batch_hook

META = torch.device("meta")
_DIGITS = {"source": "digits", "labels": "target"}


def _meta(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(META) for t in tensors)


def test_trigger_hook_keeps_the_batch_device_and_the_cpu_values():
    data = toy_images()
    x_trig, y_trig = data.x[:5], data.y[:5]
    hook = trigger_batch_hook(x_trig, y_trig, per_batch=3)
    x, y = hook(data.x[10:18], data.y[10:18], step=4)
    idx = (torch.arange(3) + 4 * 3) % 5  # the cycle the hook documents
    assert torch.equal(x, torch.cat([data.x[10:18], x_trig[idx]])) and torch.equal(
        y, torch.cat([data.y[10:18], y_trig[idx]])
    )
    xm, ym = hook(*_meta(data.x[10:18], data.y[10:18]), step=4)
    assert xm.device == META and ym.device == META and xm.shape == x.shape and ym.shape == y.shape


def test_label_hook_takes_answers_on_the_index_device():
    targets = torch.rand(20, 4)
    hook = label_hook(targets)
    idx = torch.tensor([3, 7, 1])
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(hook(x, idx, 0)[1], targets[idx])
    _, labels = hook(*_meta(x, idx), 0)
    assert labels.device == META and labels.shape == (3, 4)


def test_device_copies_are_made_once_per_device():
    copies = DeviceCopies(torch.arange(4))
    first, second = copies.on(META)[0], copies.on(META)[0]
    assert first is second and first.device == META
    host = torch.arange(3)
    assert DeviceCopies(host).on(torch.device("cpu"))[0] is host  # no copy on the CPU


def test_ptynet_augmentation_hook_runs_on_the_batch_device():
    data = toy_images()
    hook = augment_hook(seed=0, flip=True, degrees=15.0)
    x, y = hook(data.x[:8], data.y[:8], 3)
    again, _ = hook(data.x[:8], data.y[:8], 3)
    assert torch.equal(x, again) and not torch.equal(x, data.x[:8])  # keyed by the step, and it augments
    xm, ym = hook(*_meta(data.x[:8], data.y[:8]), 3)
    assert xm.device == META and xm.shape == x.shape and ym.device == META


@pytest.mark.parametrize(
    ("scheme", "config"),
    [
        (Content, ContentConfig(n_embed=6, n_verify=4, decoys=3, triggers_per_batch=2, negatives_per_batch=3)),
        (Noise, NoiseConfig(n_embed=6, n_verify=4, decoys=3, triggers_per_batch=2, negatives_per_batch=3)),
        (
            Unrelated,
            UnrelatedConfig(
                n_embed=6,
                n_verify=4,
                decoys=3,
                triggers_per_batch=2,
                negatives_per_batch=3,
                source="digits",
                labels="target",
            ),
        ),
    ],
    ids=["content", "noise", "unrelated"],
)
def test_trigger_set_hooks_join_triggers_and_negatives_on_the_batch_device(scheme, config):
    data = toy_images(n=96)
    method = scheme(config)
    model = ModelSpec("cnn2", 3, data.num_classes, 16).build()
    key = method.draw_key(model, data, seed=0)
    hook = method.batch_hook(model, data, key, seed=0)
    x, y = hook(data.x[:8], data.y[:8], 2)
    again = hook(data.x[:8], data.y[:8], 2)
    assert len(x) == len(y) == 8 + 2 + 3 and torch.equal(x, again[0]) and torch.equal(y, again[1])
    xm, ym = hook(*_meta(data.x[:8], data.y[:8]), 2)
    assert xm.device == META and ym.device == META and xm.shape == x.shape and ym.shape == y.shape


def test_batches_index_where_the_data_lives(monkeypatch):
    data = toy_images()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    on_cpu = Batches([data.x, data.y], torch.device("cpu"))
    x, y = on_cpu.take(on_cpu.order(order)[:16])
    assert on_cpu.where == "cpu" and torch.equal(x, data.x[order[:16]]) and torch.equal(y, data.y[order[:16]])
    # an accelerator with room for the data: moved once, the order moved with it, batches taken there
    monkeypatch.setattr(loop_module, "_free_bytes", lambda _device: 2**40)
    resident = Batches([data.x, data.y], META)
    placed = resident.order(order)
    xm, ym = resident.take(placed[:16])
    assert resident.where == "device" and placed.device == META and xm.device == META and xm.shape == x.shape
    # without room: the data stays on the host
    monkeypatch.setattr(loop_module, "_free_bytes", lambda _device: 1024)
    host = Batches([data.x, data.y], META)
    assert host.where == "host" and host.tensors[0] is data.x and host.order(order) is order
