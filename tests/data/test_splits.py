import pytest
import torch

from ownmark.data import ImageSet, load_dataset, make_splits, toy_images
from ownmark.errors import ConfigError

PARTS = ("owner", "attacker", "test")


@pytest.fixture(scope="module")
def mnist() -> ImageSet:
    return load_dataset("mnist5k")


def test_parts_are_disjoint_and_cover_the_data(mnist: ImageSet) -> None:
    splits = make_splits(mnist, seed=0)
    joined = torch.cat([splits.indices[p] for p in PARTS])
    assert all(splits.indices[p].dtype == torch.int64 for p in PARTS)
    assert joined.sort().values.tolist() == list(range(len(mnist)))
    rows = {p: {bytes(img.numpy().tobytes()) for img in getattr(splits, p).x} for p in PARTS}
    assert not rows["owner"] & rows["attacker"] and not rows["owner"] & rows["test"]
    assert not rows["attacker"] & rows["test"]
    for p in PARTS:
        part = getattr(splits, p)
        assert torch.equal(part.x, mnist.x[splits.indices[p]]) and torch.equal(part.y, mnist.y[splits.indices[p]])
        assert part.num_classes == 10 and part.name == "mnist5k"


@pytest.mark.parametrize("fractions", [(0.5, 0.3, 0.2), (0.6, 0.25, 0.15), (1 / 3, 1 / 3, 1 / 3)])
def test_each_class_is_split_in_the_target_proportions(mnist: ImageSet, fractions: tuple[float, float, float]) -> None:
    splits = make_splits(mnist, seed=1, fractions=fractions)
    per_class = mnist.y.bincount()
    for p, share in zip(PARTS, fractions, strict=True):
        counts = getattr(splits, p).y.bincount(minlength=10)
        assert ((counts - per_class * share).abs() <= 1).all(), (p, counts.tolist())


def test_sorted_order_is_broken(mnist: ImageSet) -> None:
    owner = make_splits(mnist, seed=0).owner
    assert owner.y.unique().tolist() == list(range(10))
    assert owner.y[:100].unique().numel() == 10  # classes are mixed, not in blocks


def test_same_seed_same_split_other_seed_other_split(mnist: ImageSet) -> None:
    a, b, c = (make_splits(mnist, seed=s) for s in (7, 7, 8))
    assert all(torch.equal(a.indices[p], b.indices[p]) for p in PARTS)
    assert not any(torch.equal(a.indices[p], c.indices[p]) for p in PARTS)


def test_global_rng_is_untouched() -> None:
    state = torch.get_rng_state()
    make_splits(toy_images(), seed=0)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("fractions", [(0.5, 0.3, 0.3), (0.7, 0.3, 0.0), (1.2, -0.1, -0.1), (0.5, 0.5)])
def test_bad_fractions_are_config_errors(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="fractions"):
        make_splits(toy_images(), seed=0, fractions=fractions)


def test_empty_part_is_config_error() -> None:
    with pytest.raises(ConfigError, match="attacker part of 'toy' would be empty"):
        make_splits(toy_images(n=4), seed=0, fractions=(0.6, 0.3, 0.1))
