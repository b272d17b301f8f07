import pytest
import torch

from ownmark.data import ImageSet, make_loader, toy_images
from ownmark.errors import ConfigError, ShapeError


def test_shape_len_and_subset_copies() -> None:
    data = toy_images()
    part = data.subset(torch.tensor([3, 1]))
    assert len(part) == 2 and part.shape == data.shape == (3, 16, 16)
    assert part.name == data.name and part.num_classes == data.num_classes
    assert torch.equal(part.x[0], data.x[3]) and part.y.tolist() == [data.y[3].item(), data.y[1].item()]
    part.x.zero_()
    assert data.x[3].sum() > 0
    assert len(data.subset([])) == 0


@pytest.mark.parametrize(
    ("x", "y", "num_classes", "error", "match"),
    [
        (torch.rand(4, 8, 8), torch.zeros(4, dtype=torch.int64), 2, ShapeError, r"\(N, C, H, W\)"),
        (torch.rand(4, 1, 8, 8), torch.zeros(3, dtype=torch.int64), 2, ShapeError, "y must be int64"),
        (torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.int32), 2, ShapeError, "y must be int64"),
        (torch.rand(4, 1, 8, 8) * 255, torch.zeros(4, dtype=torch.int64), 2, ConfigError, r"\[0, 1\]"),
        (torch.rand(4, 1, 8, 8), torch.full((4,), 2, dtype=torch.int64), 2, ConfigError, "labels"),
        (torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64), 0, ConfigError, "num_classes"),
    ],
)
def test_rejects_bad_tensors(x, y, num_classes, error, match) -> None:
    with pytest.raises(error, match=match):
        ImageSet("bad", x, y, num_classes)


def test_loader_is_seeded_and_covers_data() -> None:
    data = toy_images()

    def order(seed: int) -> list[int]:
        loader = make_loader(data, batch_size=10, shuffle=True, seed=seed)
        return torch.cat([y for _, y in loader]).tolist()

    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(0)) == sorted(data.y.tolist())
    plain = make_loader(data, batch_size=10, shuffle=False, drop_last=True)
    assert len(plain) == 6 and torch.equal(next(iter(plain))[1], data.y[:10])


def test_loader_rejects_bad_batch_size() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        make_loader(toy_images(), batch_size=0, shuffle=False)
