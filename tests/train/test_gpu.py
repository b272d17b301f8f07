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
