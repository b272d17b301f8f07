"""Image-to-image architectures, the barrier artefact, and the tasks on bundled photo patches."""

from __future__ import annotations

import pytest
import torch

from ownmark.data import load_dataset, make_splits
from ownmark.data.image2image import TASKS, load_task, make_pairs
from ownmark.errors import ConfigError, ShapeError, UnknownNameError
from ownmark.models import ModelSpec, load_model, save_model
from ownmark.models.image2image import I2I_MODELS, BarrierModel
from ownmark.verify.metrics import psnr


@pytest.mark.parametrize("arch", ["unet", "encdec", "resnet-i2i", "conv3", "lite"])
def test_architectures_map_images_to_images_and_round_trip(arch: str, tmp_path) -> None:
    model = ModelSpec(arch, 3, 3, 32, family="image2image").build().eval()
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == x.shape
    save_model(tmp_path / "m", model)
    loaded, manifest = load_model(tmp_path / "m")
    assert manifest["spec"]["family"] == "image2image"
    assert torch.equal(loaded(x), model(x))


def test_barrier_model_is_one_artefact(tmp_path) -> None:
    barrier = ModelSpec("barrier:conv3+conv3", 3, 3, 16, family="image2image").build().eval()
    assert isinstance(barrier, BarrierModel)
    with torch.no_grad():
        barrier.watermark.copy_(torch.rand(3, 16, 16))
    save_model(tmp_path / "b", barrier)
    loaded, _ = load_model(tmp_path / "b")
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.watermark, barrier.watermark) and torch.equal(loaded(x), barrier(x))
        assert 0 <= float(loaded(x).min()) and float(loaded(x).max()) <= 1


def test_lite_embedder_is_a_small_fraction_of_every_target() -> None:
    # H runs at full resolution, so its multiply-adds per pixel are its weights: 1.2k against ~60k for encdec
    # (barrier latency measured by the image2image bench: 1.12x the encdec target; with a UNet H it was 1.92x)
    h = sum(p.numel() for p in ModelSpec("lite", 6, 3, 32, family="image2image").build().parameters())
    for arch in ("unet", "encdec", "resnet-i2i"):
        target = sum(p.numel() for p in ModelSpec(arch, 3, 3, 32, family="image2image").build().parameters())
        assert h < 0.02 * target, arch


def test_bad_shapes_and_names_are_refused() -> None:
    with pytest.raises(ShapeError, match="divisible by 4"):
        ModelSpec("unet", 3, 3, 32, family="image2image").build()(torch.rand(1, 3, 30, 30))
    with pytest.raises(ConfigError, match="image_size"):
        ModelSpec("unet", 3, 3, 30, family="image2image").build()
    with pytest.raises(UnknownNameError, match="unet"):
        ModelSpec("unte", 3, 3, 32, family="image2image").build()
    with pytest.raises(ConfigError, match="barrier"):
        ModelSpec("barrier:unet", 3, 3, 32, family="image2image").build()
    assert {"unet", "encdec", "resnet-i2i"} <= set(I2I_MODELS.names())


def test_tasks_are_deterministic_disjoint_and_degrade() -> None:
    assert {"denoise", "deblur", "colourise"} <= set(TASKS.names())
    a, b = load_task("denoise", split_seed=0), load_task("denoise", split_seed=0)
    assert torch.equal(a.owner.x, b.owner.x) and torch.equal(a.attacker.y, b.attacker.y)
    parts = make_splits(load_dataset("photos"), seed=0)
    owner, attacker = set(parts.indices["owner"].tolist()), set(parts.indices["attacker"].tolist())
    assert not owner & attacker and len(a.owner) == 557
    assert torch.equal(a.owner.y, parts.owner.x) and torch.equal(a.attacker.y, parts.attacker.x)
    assert 19 < psnr(a.test.x, a.test.y) < 22  # noise std 0.1: about 20.4 dB
    assert 27 < psnr(load_task("deblur").test.x, load_task("deblur").test.y) < 30  # measured 28.8 dB
    grey = load_task("colourise").test.x
    assert torch.equal(grey[:, 0], grey[:, 1])
    with pytest.raises(UnknownNameError):
        make_pairs("dehaze", torch.rand(2, 3, 8, 8), torch.arange(2))


@pytest.mark.parametrize(("arch", "size", "multiple"), [("unet:3", 64, 8), ("unet:1", 32, 2), ("encdec:3", 64, 8),
                                                        ("resnet-i2i:5", 64, 4)])  # fmt: skip
def test_depth_is_a_setting_of_the_name_and_larger_images_pass(arch: str, size: int, multiple: int, tmp_path) -> None:
    """``unet:N`` / ``encdec:N`` / ``resnet-i2i:N``: deeper networks for larger images (issue 16 item 3)."""
    model = ModelSpec(arch, 3, 3, size, family="image2image").build().eval()
    base = ModelSpec(arch.split(":")[0], 3, 3, size, family="image2image").build()
    x = torch.rand(2, 3, size, size)
    assert model(x).shape == x.shape and model.multiple == multiple
    deeper = int(arch.split(":")[1]) > {"unet": 2, "encdec": 2, "resnet-i2i": 3}[arch.split(":")[0]]
    assert (sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in base.parameters())) == deeper
    save_model(tmp_path / "m", model)
    loaded, manifest = load_model(tmp_path / "m")
    assert manifest["spec"]["arch"] == arch and torch.equal(loaded(x), model(x))
    with pytest.raises(ShapeError, match=f"divisible by {multiple}"):
        model(torch.rand(1, 3, size + multiple // 2, size + multiple // 2))


@pytest.mark.parametrize(
    ("arch", "size", "match"),
    [("unet:0", 32, "1 to 8"), ("unet:x", 32, "1 to 8"), ("conv3:2", 32, "no depth"), ("unet:3", 36, "divisible by 8"),
     ("unte:3", 32, "unet")],
)  # fmt: skip
def test_bad_depths_are_one_clear_error(arch: str, size: int, match: str) -> None:
    with pytest.raises((ConfigError, UnknownNameError), match=match):
        ModelSpec(arch, 3, 3, size, family="image2image").build()


def _folder(root, n: int, size: int, grey: bool = False):
    """A flat folder of ``n`` photo patches of ``size`` px cut from scikit-image's astronaut, as PNGs."""
    from PIL import Image
    from skimage import data

    root.mkdir()
    img = data.astronaut()
    for i in range(n):
        r, c = (i // 10) * 24 % (512 - size), (i % 10) * 40 % (512 - size)
        patch = Image.fromarray(img[r : r + size, c : c + size])
        (patch.convert("L") if grey else patch).save(root / f"p{i:03d}.png")
    return root


def test_a_task_runs_on_a_users_flat_image_folder_at_its_size(tmp_path) -> None:
    from ownmark.data.image2image import parse_task

    assert parse_task("deblur") == ("deblur", "photos")
    assert parse_task("denoise@folder:/x/y") == ("denoise", "folder:/x/y")
    with pytest.raises(UnknownNameError, match="deblur"):
        parse_task("deblurr@folder:/x")
    with pytest.raises(ConfigError, match="after '@'"):
        parse_task("deblur@")
    root = _folder(tmp_path / "imgs", 50, 64)
    splits = load_task("deblur", dataset=f"folder:{root}")
    assert (len(splits.owner), len(splits.attacker), len(splits.test)) == (25, 15, 10)
    assert tuple(splits.owner.x.shape[1:]) == (3, 64, 64)
    assert 0 < (splits.owner.x - splits.owner.y).abs().mean() < 0.1  # blurred inputs, clean targets
    grey = load_task("denoise", dataset=f"folder:{_folder(tmp_path / 'grey', 20, 32, grey=True)}")
    assert tuple(grey.owner.x.shape[1:]) == (3, 32, 32)  # grey images repeated on three channels
    assert torch.equal(grey.owner.y[:, 0], grey.owner.y[:, 1])
