"""Weight quantization: the thief stores its copy with fewer bits per weight.

Each conv and linear weight tensor is rounded to ``2**bits`` evenly spaced levels between its own
smallest and largest value (uniform affine quantization per tensor, then dequantized back to float
so the model runs unchanged). Biases and normalisation layers keep full precision. No data, no
training. Written by hand: torch's own quantization targets int8 inference kernels and offers no
arbitrary bit width; the rounding itself is one line.

Reference:
    Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
    Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (weight quantization as a removal attack);
    Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
    Inference", CVPR 2018, arXiv:1712.05877 (uniform affine quantization).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ownmark.attacks.base import ATTACKS
from ownmark.attacks.prune import WeightEdit, prunable_weights
from ownmark.errors import ConfigError


@dataclass(frozen=True)
class QuantizeConfig:
    """Bits per weight, 1 to 16."""

    bits: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 16:
            raise ConfigError(f"QuantizeConfig.bits must be an int from 1 to 16, got {self.bits!r}")


def quantize_(weight: torch.Tensor, bits: int) -> None:
    """Round ``weight`` in place to ``2**bits`` levels spanning its own [min, max].

    Example:
        >>> w = torch.tensor([0.0, 0.26, 0.74, 1.0]); quantize_(w, 1); w.tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    with torch.no_grad():
        lo, hi = float(weight.min()), float(weight.max())
        if hi == lo:
            return
        scale = (hi - lo) / (2**bits - 1)
        weight.copy_(torch.round((weight - lo) / scale) * scale + lo)


@ATTACKS.register("quantize")
class Quantize(WeightEdit):
    """Uniform per-tensor weight quantization of a copy of the victim (no data needed).

    Example:
        >>> from ownmark.models import ModelSpec
        >>> q, cost = Quantize(QuantizeConfig(bits=2))(ModelSpec("cnn2", 1, 10, 28).build(), None, seed=0)
        >>> all(len(w.unique()) <= 4 for w in prunable_weights(q)), cost.details["bits"]
        (True, 2)
    """

    config_class = QuantizeConfig

    def edit(self, model: nn.Module) -> dict:
        for w in prunable_weights(model):
            quantize_(w, self.config.bits)
        return {"bits": self.config.bits}
