import json
from pathlib import Path

import pytest
import torch

from ownmark.errors import ConfigError, IntegrityError, UnknownNameError
from ownmark.models import MODELS, ModelSpec, build_classifier, clone_model, count_parameters, load_model, save_model
from ownmark.models.store import spec_of


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 28, 10), (3, 16, 4)])
def test_every_model_builds_and_answers_n_by_k(name: str, channels: int, size: int, classes: int) -> None:
    torch.manual_seed(0)
    model = build_classifier(name, channels, classes, size).eval()
    with torch.no_grad():
        out = model(torch.rand(3, channels, size, size))
    assert out.shape == (3, classes) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert count_parameters(model) > 0


def test_expected_models_are_registered() -> None:
    assert {"cnn2", "lenet", "resnet-s"} <= set(MODELS.names())


def test_lenet_refuses_images_too_small_for_its_convolutions() -> None:
    # 5x5 conv, pool 2, 5x5 conv, pool 2: 16 -> 12 -> 6 -> 2 -> 1 is the smallest that works
    with torch.no_grad():
        assert build_classifier("lenet", 1, 10, 16)(torch.rand(1, 1, 16, 16)).shape == (1, 10)
    for size in (15, 11, 4):
        with pytest.raises(ConfigError, match=f"lenet needs images of at least .*, got {size}; use cnn2") as info:
            build_classifier("lenet", 1, 10, size)
        assert "\n" not in str(info.value)


def test_lenet_minimum_stated_in_its_error_is_accepted() -> None:
    import re

    with pytest.raises(ConfigError) as info:
        build_classifier("lenet", 1, 10, 8)
    stated = int(re.search(r"at least (\d+)x", str(info.value)).group(1))
    build_classifier("lenet", 1, 10, stated)


def test_spec_build_attaches_spec() -> None:
    spec = ModelSpec("cnn2", 1, 10, 28)
    model = spec.build()
    assert spec_of(model) == spec and spec.input_shape == (1, 28, 28)
    assert spec_of(clone_model(model)) == spec
    with pytest.raises(IntegrityError, match="no ownmark ModelSpec"):
        spec_of(torch.nn.Linear(1, 1))


def test_torchvision_resnet18_with_one_channel() -> None:
    torch.manual_seed(0)
    model = build_classifier("tv:resnet18", 1, 10, 32).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("channels", [0, 2, 4])
def test_bad_channel_count(channels: int) -> None:
    with pytest.raises(ConfigError, match=f"in_channels must be 1 or 3, got {channels}"):
        build_classifier("cnn2", channels, 10, 28)


def test_unknown_names() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'cnn2'"):
        build_classifier("cnn3", 3, 4, 16)
    with pytest.raises(UnknownNameError, match="torchvision has no classifier named 'nonexistent'"):
        build_classifier("tv:nonexistent", 3, 4, 16)


def test_timm_model_without_timm_or_unknown() -> None:
    with pytest.raises((ConfigError, UnknownNameError)) as info:
        build_classifier("timm:x", 3, 4, 16)
    try:
        import timm  # noqa: F401
    except ImportError:
        assert isinstance(info.value, ConfigError) and "pip install timm" in str(info.value)


def _save_with_spec(tmp_path: Path, spec: dict) -> Path:
    torch.manual_seed(0)
    save_model(tmp_path / "m", ModelSpec("cnn2", 3, 4, 16).build())
    js = tmp_path / "m.json"
    manifest = json.loads(js.read_text())
    manifest["spec"] = spec  # the digest covers the tensors only, so the file still loads up to the spec
    js.write_text(json.dumps(manifest))
    return tmp_path / "m"


def test_load_model_with_another_architecture_in_the_spec(tmp_path: Path) -> None:
    path = _save_with_spec(tmp_path, {"arch": "resnet-s", "in_channels": 3, "num_classes": 4, "image_size": 16})
    with pytest.raises(IntegrityError, match="does not fit architecture 'resnet-s'") as info:
        load_model(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "spec",
    [
        {"arch": "lenet", "in_channels": 3, "num_classes": 4, "image_size": 16},
        {"arch": "cnn2", "in_channels": 3, "num_classes": 10, "image_size": 16},
    ],
)
def test_load_model_with_same_keys_but_other_shapes(tmp_path: Path, spec: dict) -> None:
    with pytest.raises(IntegrityError, match="does not fit"):
        load_model(_save_with_spec(tmp_path, spec))


@pytest.mark.parametrize("spec", [{"arch": "cnn2"}, {"arch": "cnn2", "in_channels": 3, "depth": 3}, None])
def test_load_model_with_broken_spec(tmp_path: Path, spec: object) -> None:
    with pytest.raises(IntegrityError, match="no valid model spec"):
        load_model(_save_with_spec(tmp_path, spec))  # type: ignore[arg-type]


def test_cifar_stem_keeps_a_32px_map_that_the_imagenet_stem_shrinks_to_1x1() -> None:
    from ownmark.models.classifier import build_classifier

    shapes = {}
    for name in ("tv:resnet18", "tv:resnet18:cifar"):
        model = build_classifier(name, 3, 10, 32).eval()
        seen = []
        model.layer4.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(tuple(out.shape[-2:])))
        with torch.no_grad():
            assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        shapes[name] = seen[0]
    assert shapes == {"tv:resnet18": (1, 1), "tv:resnet18:cifar": (4, 4)}
    grey = build_classifier("tv:resnet18:cifar", 1, 10, 28)  # through the grey-to-RGB adapter
    assert grey.body.conv1.kernel_size == (3, 3) and isinstance(grey.body.maxpool, torch.nn.Identity)
    enc = ModelSpec("tv:resnet18:cifar", 3, 64, 32, family="encoder").build()  # encoders take it too
    assert enc(torch.rand(2, 3, 32, 32)).shape == (2, 64)
    with pytest.raises(ConfigError, match="has none; drop ':cifar'"):
        build_classifier("tv:mobilenet_v3_small:cifar", 3, 10, 32)
