"""Fidelity and extraction metrics: hand-computed cases and shape checks."""

from __future__ import annotations

import pytest
import torch

from ownmark.errors import ConfigError, ShapeError
from ownmark.verify.metrics import bit_accuracy, bits_image, centred_nc, decode_bits, nc, psnr, ssim, success_rate


def test_psnr_and_ssim_on_known_cases() -> None:
    x = torch.full((2, 3, 16, 16), 0.5)
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-3)
    y = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    noise = 0.3 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    assert ssim(y, y) == 1.0 and ssim((y + noise).clamp(0, 1), y) < 0.9
    with pytest.raises(ShapeError, match="must match"):
        psnr(x, x[:1])


def test_raw_nc_passes_a_blank_image_but_centred_nc_does_not() -> None:
    logo = torch.ones(3, 16, 16)
    logo[:, 6:10, 6:10] = 0  # a small dark logo on white
    blank = torch.ones(1, 3, 16, 16)
    assert float(nc(blank, logo)[0]) > 0.95  # why the paper's raw NC misleads
    assert float(centred_nc(blank, logo)[0]) == 0.0
    assert float(centred_nc(logo[None] * 0.3 + 0.1, logo)[0]) == pytest.approx(1.0)
    assert float(centred_nc(1 - logo[None], logo)[0]) == pytest.approx(-1.0)
    with pytest.raises(ShapeError, match="watermark"):
        nc(blank, torch.ones(1, 16, 16))


def test_success_rate_and_bits() -> None:
    assert success_rate(torch.tensor([0.99, 0.5, 0.96, 0.2]), 0.95) == 0.5
    with pytest.raises(ConfigError):
        success_rate(torch.tensor([0.1]), 2.0)
    bits = torch.randint(2, (64,), generator=torch.Generator().manual_seed(1))
    image = bits_image(bits, 3, 32)
    assert torch.equal(decode_bits(image, 64), bits)
    noisy = (image[None] + 0.3 * torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    assert bit_accuracy(decode_bits(noisy, 64), bits) == 1.0  # block means average the noise away
    assert bit_accuracy(1 - bits, bits) == 0.0
    with pytest.raises(ShapeError):
        bit_accuracy(bits[:10], bits)
    with pytest.raises(ConfigError, match="k\\*k"):
        decode_bits(image, 60)
