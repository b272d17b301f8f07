import pytest
import torch

from ownmark.defenses import DEFENSES, Noise, Rounding, TopK, parse_defense
from ownmark.errors import ConfigError, UnknownNameError


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_noise_is_relative_to_each_answers_spread() -> None:
    out = torch.cat([torch.full((500, 64), 0.01), torch.full((500, 64), 10.0)])
    diff = Noise(0.5)(out, gen()) - out
    assert diff[:500].std().item() == pytest.approx(0.005, rel=0.05)
    assert diff[500:].std().item() == pytest.approx(5.0, rel=0.05)
    absolute = Noise(0.5, absolute=True)(out, gen()) - out
    assert absolute.std().item() == pytest.approx(0.5, rel=0.05)


def test_noise_is_reproducible_from_the_generator() -> None:
    out = torch.rand(3, 8)
    assert torch.equal(Noise(1.0)(out, gen()), Noise(1.0)(out, gen()))


def test_rounding_and_topk() -> None:
    out = torch.tensor([[0.123, 0.987, 0.5, -0.25]])
    assert torch.allclose(Rounding(1)(out, gen()), torch.tensor([[0.1, 1.0, 0.5, -0.2]]))
    kept = TopK(2)(out, gen())
    assert kept.tolist() == [[0.0, pytest.approx(0.987), 0.5, 0.0]]
    assert torch.equal(TopK(10)(out, gen()), out)


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defense_keeps_the_shape(name: str) -> None:
    spec = {"none": "none", "noise": "noise:0.1", "round": "round:2", "topk": "topk:3"}[name]
    defense = parse_defense(spec)
    assert defense.spec == spec
    assert defense(torch.rand(4, 16), gen()).shape == (4, 16)


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [("noise:-1", ConfigError, "finite number >= 0"), ("noise:nan", ConfigError, "finite number >= 0"),
     ("noise:inf", ConfigError, "finite number >= 0"), ("round:1.5", ConfigError, "round:1.5"),
     ("topk:0", ConfigError, "positive int"), ("topk", ConfigError, "topk:K"), ("blur:1", UnknownNameError, "blur")],
)  # fmt: skip
def test_bad_specs_name_the_fix(text: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        parse_defense(text)
