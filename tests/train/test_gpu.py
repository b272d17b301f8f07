"""The same loop on a GPU (skipped without CUDA; deselected by make test)."""

from __future__ import annotations

import pytest
import torch

from ownmark.data.toy import toy_images
from ownmark.models import ModelSpec
from ownmark.train import Engine, TrainConfig, accuracy, fit

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_fit_runs_on_cuda_and_returns_a_cpu_model() -> None:
    data = toy_images(seed=0, n=256)
    model = ModelSpec("cnn2", 3, 4, 16).build()
    result = fit(model, data, TrainConfig(epochs=5, batch_size=32, lr=0.05), seed=0, engine=Engine(accelerator="cuda"))
    assert result.epochs_run == 5
    assert next(model.parameters()).device.type == "cpu"
    assert accuracy(model, toy_images(seed=1, n=256)) > 0.9


def _trained(data, engine: Engine, hook=None) -> torch.nn.Module:
    model = ModelSpec("cnn2", 3, 4, 16).build()
    torch.manual_seed(0)
    fit(model, data, TrainConfig(epochs=3, batch_size=32, lr=0.05), seed=0, engine=engine, batch_hook=hook)
    return model


def test_resident_and_host_batches_train_alike_on_cuda(monkeypatch) -> None:
    """Data resident on the GPU and data sent per batch from pinned memory draw the same batches."""
    from ownmark.train import loop

    data, test = toy_images(seed=0, n=256), toy_images(seed=1, n=256)
    resident = _trained(data, Engine(accelerator="cuda"))
    monkeypatch.setattr(loop, "_free_bytes", lambda _device: 0)  # no room: batches from the host
    host = _trained(data, Engine(accelerator="cuda"))
    assert accuracy(resident, test) > 0.9 and accuracy(host, test) > 0.9
    for a, b in zip(resident.state_dict().values(), host.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-4)


def test_trigger_hook_and_streamed_data_on_cuda(tmp_path, monkeypatch) -> None:
    """FCW-style trigger hooks join device tensors; a streamed set trains on the GPU from DataLoader workers."""
    import numpy as np

    from ownmark.data.streamed import ArraySource, StreamedImageSet
    from ownmark.watermarks.triggers import trigger_batch_hook

    data = toy_images(seed=0, n=256)
    hooked = _trained(data, Engine(accelerator="cuda"), trigger_batch_hook(data.x[:8], data.y[:8], 4))
    assert accuracy(hooked, toy_images(seed=1, n=256)) > 0.9
    monkeypatch.setenv("OWNMARK_LOADER_WORKERS", "2")
    array = (data.x * 255).round().byte().numpy().astype(np.uint8)
    streamed = StreamedImageSet("toy", ArraySource(array), data.y, data.num_classes)
    model = _trained(streamed, Engine(accelerator="cuda", precision="bf16-mixed"))
    assert accuracy(model, toy_images(seed=1, n=256)) > 0.9
