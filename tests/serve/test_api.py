import pytest
import torch

from ownmark.defenses import parse_defense
from ownmark.errors import BudgetExhaustedError, ConfigError, ShapeError
from ownmark.models import ModelSpec
from ownmark.serve import ModelAPI


@pytest.fixture()
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return ModelSpec("cnn2", 1, 4, 8).build()


def test_budget_is_exact_and_a_refused_batch_costs_nothing(model: torch.nn.Module) -> None:
    api = ModelAPI(model, budget=10)
    api(torch.rand(6, 1, 8, 8))
    with pytest.raises(BudgetExhaustedError, match="6 of 10 images answered, a batch of 5 exceeds the 4 left"):
        api(torch.rand(5, 1, 8, 8))
    assert api.queries == 6
    api(torch.rand(4, 1, 8, 8))
    assert (api.queries, api.remaining) == (10, 0)
    with pytest.raises(BudgetExhaustedError):
        api(torch.rand(1, 1, 8, 8))


def test_kinds_agree_with_the_model(model: torch.nn.Module) -> None:
    x = torch.rand(5, 1, 8, 8)
    logits = ModelAPI(model, "logits")(x)
    assert torch.allclose(ModelAPI(model, "probs")(x), logits.softmax(1))
    assert torch.equal(ModelAPI(model, "labels")(x), logits.argmax(1))
    assert model.training  # the API restores the model's mode


def test_defense_applies_and_is_seeded(model: torch.nn.Module) -> None:
    x = torch.rand(5, 1, 8, 8)
    a = ModelAPI(model, "logits", defense=parse_defense("noise:0.5"), seed=1)(x)
    b = ModelAPI(model, "logits", defense=parse_defense("noise:0.5"), seed=1)(x)
    clean = ModelAPI(model, "logits")(x)
    assert torch.equal(a, b) and not torch.allclose(a, clean)
    top = ModelAPI(model, "probs", defense=parse_defense("topk:1"))(x)
    assert ((top > 0).sum(1) == 1).all()


@pytest.mark.parametrize(
    ("x", "match"),
    [(torch.rand(2, 3, 8, 8), "model takes"), (torch.full((2, 1, 8, 8), float("nan")), "NaN"),
     (torch.full((2, 1, 8, 8), 2.0), r"\[0, 1\]"), (torch.zeros(2, 1, 8, 8, dtype=torch.long), "float")],
)  # fmt: skip
def test_bad_queries_are_refused_before_they_are_counted(model: torch.nn.Module, x: torch.Tensor, match: str) -> None:
    api = ModelAPI(model, budget=10)
    with pytest.raises(ShapeError, match=match):
        api(x)
    assert api.queries == 0


def test_bad_settings() -> None:
    model = ModelSpec("cnn2", 1, 4, 8).build()
    with pytest.raises(ConfigError, match="kind"):
        ModelAPI(model, "scores")
    with pytest.raises(ConfigError, match="budget"):
        ModelAPI(model, budget=-1)


@pytest.mark.parametrize(
    ("family", "ok", "bad"), [("classifier", "logits", "images"), ("encoder", "features", "labels")]
)
def test_a_kind_the_family_cannot_give_is_refused(family: str, ok: str, bad: str) -> None:
    model = ModelSpec("cnn2" if family == "classifier" else "conv4", 1, 4, 8, family=family).build()
    assert ModelAPI(model, ok).kind == ok
    with pytest.raises(ConfigError, match=f"a {family} cannot answer '{bad}'; its API answers"):
        ModelAPI(model, bad)


def test_a_header_that_declares_no_images_is_refused() -> None:
    import struct

    from ownmark.serve import wire

    body = wire.encode(torch.rand(1, 1, 2, 2))
    head = body[: wire._HEAD.size]
    empty = head + struct.pack("<4I", 0, 2**32 - 1, 2**32 - 1, 2**32 - 1)  # 0 bytes of data follow
    with pytest.raises(ShapeError, match="holds no images; send at least one"):
        wire.decode(empty)
