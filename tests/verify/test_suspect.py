import pytest
import torch

from ownmark.errors import KeyMismatchError
from ownmark.models import ModelSpec, build_classifier
from ownmark.verify import LabelOracle


def images(n: int, c: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(n))


def mismatch(call) -> str:
    with pytest.raises(KeyMismatchError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_counts_every_image_queried() -> None:
    oracle = LabelOracle(lambda x: torch.zeros(len(x), dtype=torch.long))
    assert oracle.queries == 0
    oracle(images(5))
    oracle(images(3))
    assert oracle.queries == 8


def test_scores_are_reduced_with_argmax() -> None:
    scores = torch.tensor([[0.1, 0.7, 0.2], [2.0, -1.0, 0.5], [0.0, 0.0, 3.0], [-5.0, -4.0, -6.0]])
    oracle = LabelOracle(lambda x: scores[: len(x)], num_classes=3)
    labels = oracle(images(4))
    assert labels.tolist() == [1, 0, 2, 1] and labels.dtype == torch.int64


def test_labels_are_returned_as_long() -> None:
    oracle = LabelOracle(lambda x: torch.tensor([3, 1], dtype=torch.int32))
    out = oracle(images(2))
    assert out.tolist() == [3, 1] and out.dtype == torch.int64


def test_module_is_queried_in_eval_mode_and_restored() -> None:
    torch.manual_seed(0)
    model = ModelSpec("resnet-s", 3, 4, 16).build().train()  # batch norm: eval and train answers differ
    x = images(6)
    with torch.no_grad():
        expected = model.eval()(x).argmax(1)
    model.train()
    oracle = LabelOracle(model, num_classes=4)
    assert torch.equal(oracle(x), expected)
    assert model.training and oracle.queries == 6


def test_wrong_number_of_classes() -> None:
    model = ModelSpec("cnn2", 3, 10, 16).build()
    msg = mismatch(lambda: LabelOracle(model, num_classes=4)(images(2)))
    assert "10 classes" in msg and "made for 4" in msg
    fn = LabelOracle(lambda x: torch.zeros(len(x), 7), num_classes=4)
    assert "7 classes" in mismatch(lambda: fn(images(2)))


def test_module_that_cannot_take_the_images() -> None:
    model = build_classifier("cnn2", 3, 4, 28)  # no spec attached: the forward pass itself fails
    oracle = LabelOracle(model, num_classes=4)
    msg = mismatch(lambda: oracle(images(2, size=16)))
    assert "cannot take the key's images (3, 16, 16)" in msg


def test_model_with_a_spec_is_checked_before_querying() -> None:
    oracle = LabelOracle(ModelSpec("cnn2", 3, 4, 28).build(), num_classes=4)
    msg = mismatch(lambda: oracle(images(2, size=16)))
    assert "(3, 16, 16)" in msg and "(3, 28, 28)" in msg
    assert oracle.queries == 0
    assert oracle(images(2, size=28)).shape == (2,) and oracle.queries == 2


def test_grey_model_given_colour_images() -> None:
    oracle = LabelOracle(build_classifier("cnn2", 1, 4, 16))
    mismatch(lambda: oracle(images(2, c=3)))


@pytest.mark.parametrize("shape", [(3,), (2, 4, 1), (2,)])
def test_bad_answers_from_a_function(shape: tuple[int, ...]) -> None:
    oracle = LabelOracle(lambda x: torch.zeros(shape))
    assert "label query must return" in mismatch(lambda: oracle(images(4)))


def test_non_callable_suspect() -> None:
    with pytest.raises(TypeError, match="got str"):
        LabelOracle("model.safetensors")  # type: ignore[arg-type]
