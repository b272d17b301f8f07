import torch
import torch.nn.functional as F

from ownmark.data import toy_images, toy_loader


def test_toy_images_shape_range_balance() -> None:
    data = toy_images()
    assert data.x.shape == (64, 3, 16, 16) and data.num_classes == 4
    assert data.x.min() >= 0 and data.x.max() <= 1
    assert data.y.bincount().tolist() == [16] * 4


def test_seeded() -> None:
    assert torch.equal(toy_images(3).x, toy_images(3).x)
    assert not torch.equal(toy_images(3).x, toy_images(4).x)


def test_classes_are_learnable_across_seeds() -> None:
    train, test = toy_images(0), toy_images(1)
    means = torch.stack([train.x[train.y == k].mean(0) for k in range(4)]).flatten(1)
    nearest = torch.cdist(test.x.flatten(1), means).argmin(1)
    assert (nearest == test.y).float().mean() == 1.0


def test_loader_batches_and_a_few_steps_learn() -> None:
    model = torch.nn.Linear(3 * 16 * 16, 4)
    with torch.no_grad():  # a fixed start instead of the global RNG
        model.weight.zero_()
        model.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        for x, y in toy_loader(batch_size=16):
            assert x.shape == (16, 3, 16, 16)
            loss = F.cross_entropy(model(x.flatten(1)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    test = toy_images(1)
    assert (model(test.x.flatten(1)).argmax(1) == test.y).float().mean() > 0.9
