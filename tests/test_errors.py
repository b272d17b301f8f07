from dataclasses import dataclass
from typing import Any

import pytest
import torch

from ownmark.errors import (
    BudgetExhaustedError,
    ConfigError,
    IntegrityError,
    KeyMismatchError,
    MissingFileError,
    OwnmarkError,
    RegistryError,
    ShapeError,
    UnknownNameError,
    check_images,
    check_same_shape,
    require_choice,
    require_in_range,
    require_non_negative,
    require_positive,
)


@dataclass
class Cfg:
    value: Any = 1


def test_hierarchy() -> None:
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, OwnmarkError)
    assert issubclass(ShapeError, ValueError) and issubclass(ShapeError, OwnmarkError)
    assert issubclass(UnknownNameError, LookupError) and issubclass(UnknownNameError, OwnmarkError)
    assert issubclass(MissingFileError, FileNotFoundError)
    assert issubclass(IntegrityError, ValueError)
    assert issubclass(KeyMismatchError, OwnmarkError)
    for cls in (RegistryError, BudgetExhaustedError):
        assert issubclass(cls, OwnmarkError)
    # ConfigError is not a LookupError, UnknownNameError not a ValueError: callers catch them apart
    assert not issubclass(ConfigError, LookupError)
    assert not issubclass(UnknownNameError, ValueError)


@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan"), float("inf"), True, "3", None])
def test_require_positive_rejects(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"Cfg\.value must be a finite positive number, got") as info:
        require_positive(Cfg(value), "value")
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [1, 0.001, 10**9])
def test_require_positive_accepts(value: Any) -> None:
    require_positive(Cfg(value), "value")


def test_require_positive_checks_every_name() -> None:
    @dataclass
    class Two:
        a: int = 1
        b: int = 0

    with pytest.raises(ConfigError, match=r"Two\.b"):
        require_positive(Two(), "a", "b")


def test_require_non_negative() -> None:
    require_non_negative(Cfg(0), "value")
    with pytest.raises(ConfigError, match=r"Cfg\.value must be a finite number >= 0, got -1"):
        require_non_negative(Cfg(-1), "value")
    with pytest.raises(ConfigError, match=r"Cfg\.value must be a finite number >= 0, got inf"):
        require_non_negative(Cfg(float("inf")), "value")


@pytest.mark.parametrize(
    ("value", "kwargs", "ok"),
    [
        (0.0, {}, True),
        (1.0, {}, True),
        (0.0, {"low_open": True}, False),
        (1.0, {"high_open": True}, False),
        (0.5, {"low_open": True, "high_open": True}, True),
        (1.5, {}, False),
        (-0.1, {}, False),
        (True, {}, False),
        ("0.5", {}, False),
        (float("nan"), {}, False),
    ],
)
def test_require_in_range(value: Any, kwargs: dict, ok: bool) -> None:
    if ok:
        require_in_range(Cfg(value), "value", 0.0, 1.0, **kwargs)
        return
    with pytest.raises(ConfigError, match=r"Cfg\.value must lie in") as info:
        require_in_range(Cfg(value), "value", 0.0, 1.0, **kwargs)
    interval = f"{'(' if kwargs.get('low_open') else '['}0.0, 1.0{')' if kwargs.get('high_open') else ']'}"
    assert interval in str(info.value) and repr(value) in str(info.value)


def test_require_choice() -> None:
    require_choice(Cfg("sgd"), "value", ("sgd", "adam"))
    with pytest.raises(ConfigError, match=r"Cfg\.value must be one of \['sgd', 'adam'\], got 'sdg'"):
        require_choice(Cfg("sdg"), "value", ("sgd", "adam"))


def test_check_same_shape() -> None:
    check_same_shape("a", torch.zeros(2, 3), "b", torch.ones(2, 3))
    with pytest.raises(ShapeError, match=r"images has shape \(2, 3\) but labels has shape \(3, 2\)"):
        check_same_shape("images", torch.zeros(2, 3), "labels", torch.zeros(3, 2))


def test_check_images() -> None:
    check_images("x", torch.rand(2, 3, 4, 4), channels=3)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        check_images("x", [[0.0]])
    with pytest.raises(ShapeError, match=r"batch must have shape \(N, C, H, W\), got \(3, 4, 4\)"):
        check_images("batch", torch.rand(3, 4, 4))
    with pytest.raises(ShapeError, match="batch must be a float tensor.*torch.uint8"):
        check_images("batch", torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="batch has 1 channels, expected 3"):
        check_images("batch", torch.rand(1, 1, 4, 4), channels=3)


@pytest.mark.parametrize(
    "call",
    [
        lambda: require_positive(Cfg(0), "value"),
        lambda: require_in_range(Cfg(2), "value", 0, 1),
        lambda: require_choice(Cfg("x"), "value", ["a\nb"]),
        lambda: check_same_shape("a", torch.zeros(1), "b", torch.zeros(2)),
        lambda: check_images("x", torch.rand(1, 1, 4, 4), channels=3),
    ],
)
def test_messages_are_one_line(call) -> None:
    with pytest.raises(OwnmarkError) as info:
        call()
    assert "\n" not in str(info.value)
