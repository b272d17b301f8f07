import pytest
import torch
from torch import nn

from ownmark.errors import KeyMismatchError
from ownmark.verify.encoder import key_effects, majority_moves, suspect_features


def test_key_effects_on_a_hand_made_encoder() -> None:
    # features = mean of each image half; the key lights the left half, delta lights it on x too
    class Halves(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x[..., :2].mean((1, 2, 3)), x[..., 2:].mean((1, 2, 3))], 1)

    x = torch.zeros(3, 1, 4, 4)
    x[..., 2:] = 1.0  # right half on: orthogonal to the key
    key = torch.zeros(1, 4, 4)
    key[..., :2] = 1.0
    delta = torch.zeros(1, 4, 4)
    delta[..., :2] = 1.0  # pushes the left half on: cos(S(x + delta), S(key)) = cos((1, 1), (1, 0))
    with_mark, without, effect = key_effects(Halves(), x, delta, key)
    assert torch.allclose(without, torch.zeros(3)) and torch.allclose(with_mark, torch.full((3,), 2**-0.5))
    assert torch.allclose(effect, with_mark - without)


def test_majority_moves_counts_only_images_that_change_label() -> None:
    # a "classifier" that labels by mean brightness: dark 0, bright 1
    def classify(imgs: torch.Tensor) -> torch.Tensor:
        return (imgs.mean((1, 2, 3)) > 0.5).long()

    x = torch.cat([torch.full((6, 1, 2, 2), 0.2), torch.full((2, 1, 2, 2), 0.9)])
    moved, eligible, queries = majority_moves(classify, x, torch.full((1, 2, 2), 0.5))
    assert (moved, eligible, queries) == (6, 6, 16)  # all go bright; the 2 already bright are not eligible


def test_suspect_features_refuses_a_wrong_suspect() -> None:
    with pytest.raises(KeyMismatchError, match="cannot take"):
        suspect_features(nn.Linear(3, 2), torch.rand(2, 1, 4, 4))
    with pytest.raises(KeyMismatchError, match=r"\(N, D\)"):
        suspect_features(lambda imgs: torch.zeros(len(imgs)), torch.rand(2, 1, 4, 4))
