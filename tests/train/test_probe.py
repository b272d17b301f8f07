import pytest
import torch

from ownmark.data import ImageSet, load_dataset, make_splits, to_image_shape
from ownmark.errors import ShapeError
from ownmark.models import ModelSpec
from ownmark.train.probe import few_shot, knn_accuracy, linear_probe, pixel_probe


@pytest.mark.slow
def test_simclr_encoder_beats_pixels_and_a_random_encoder_on_mnist_and_digits(mnist_splits, mnist_encoder) -> None:
    splits, enc = mnist_splits, mnist_encoder
    torch.manual_seed(0)
    random_acc = linear_probe(ModelSpec("conv4", 1, 128, 28, family="encoder").build(), splits.attacker,
                              splits.test, shots=10).accuracy  # fmt: skip
    full = linear_probe(enc, splits.attacker, splits.test)
    shot = linear_probe(enc, splits.attacker, splits.test, shots=10)
    pixels = pixel_probe(splits.attacker, splits.test, shots=10)
    assert full.accuracy > 0.88, full.accuracy
    assert shot.accuracy > pixels + 0.03 and shot.accuracy > random_acc + 0.05, (shot.accuracy, pixels, random_acc)
    assert knn_accuracy(enc, splits.attacker, splits.test) > 0.75
    # a downstream task the encoder never saw: scikit-learn's 8x8 digits, upsampled
    digits = load_dataset("digits")
    digits = ImageSet("digits", to_image_shape(digits.x, (1, 28, 28)), digits.y, digits.num_classes)
    d = make_splits(digits, seed=0, fractions=(0.5, 0.25, 0.25))
    assert linear_probe(enc, d.owner, d.test).accuracy > 0.85
    # the probe is a classifier module over the frozen encoder
    assert full.classifier(splits.test.x[:4]).shape == (4, 10)
    assert full.classifier.encoder is enc and all(p.requires_grad for p in enc.parameters())


def test_few_shot_draws_exactly_shots_per_class() -> None:
    data = make_splits(load_dataset("digits"), seed=0).owner
    picked = few_shot(data, 5, seed=0)
    assert torch.bincount(picked.y, minlength=10).tolist() == [5] * 10
    assert torch.equal(picked.x, few_shot(data, 5, seed=0).x)
    with pytest.raises(ShapeError, match="few-shot"):
        few_shot(data, 10_000, seed=0)
