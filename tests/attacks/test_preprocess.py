"""Input preprocessing (squeeze, median, mean, occlusion) and weight quantization on real data."""

import numpy as np
import pytest
import torch

from ownmark.attacks import ATTACKS, TransformedModel
from ownmark.attacks.preprocess import BitDepth, OcclusionConfig, Smooth, SmoothConfig, SqueezeConfig
from ownmark.attacks.prune import prunable_weights
from ownmark.attacks.quantize import QuantizeConfig
from ownmark.errors import ConfigError
from ownmark.models import ModelSpec
from ownmark.train import accuracy

PREPROCESS = ["squeeze", "median", "mean", "occlusion"]


@pytest.mark.parametrize("name", PREPROCESS)
def test_preprocessing_leaves_the_victim_and_costs_nothing(untrained, name: str) -> None:
    victim = untrained(channels=1)
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    wrapped, cost = ATTACKS.get(name)()(victim, None, seed=0)
    x = torch.rand(5, 1, 16, 16)
    assert isinstance(wrapped, TransformedModel) and wrapped(x).shape == (5, 4) and wrapped.spec == victim.spec
    assert (cost.epochs, cost.queries) == (0.0, 0)
    assert all(torch.equal(before[k], v) for k, v in victim.state_dict().items())
    assert getattr(ATTACKS.get(name), "input_transform", False)  # also `ownmark verify --transform NAME`


def test_on_mnist_smoothing_and_squeezing_keep_the_task_and_occlusion_costs_it(mnist_model, mnist_splits) -> None:
    test = mnist_splits.test
    clean = accuracy(mnist_model, test)
    acc = {
        label: accuracy(ATTACKS.get(name)(cfg)(mnist_model, None, seed=0)[0], test)
        for label, name, cfg in [
            ("1 bit", "squeeze", SqueezeConfig(bits=1)), ("median 3", "median", SmoothConfig(3)),
            ("mean 3", "mean", SmoothConfig(3)), ("occlusion 14", "occlusion", OcclusionConfig(size=14)),
        ]
    }  # fmt: skip
    # measured (seed 0): clean 0.942; 1 bit 0.942, median 0.921, mean 0.936, a 14-px square 0.619
    assert clean >= 0.93, clean
    assert acc["1 bit"] >= clean - 0.03 and acc["median 3"] >= clean - 0.03, acc
    assert acc["mean 3"] >= clean - 0.10, acc
    assert acc["occlusion 14"] <= clean - 0.2, acc


def test_weight_quantization_keeps_8_bits_and_breaks_1(mnist_model, mnist_splits) -> None:
    test = mnist_splits.test
    clean = accuracy(mnist_model, test)
    q8, cost = ATTACKS.get("quantize")(QuantizeConfig(bits=8))(mnist_model, None, seed=0)
    q1, _ = ATTACKS.get("quantize")(QuantizeConfig(bits=1))(mnist_model, None, seed=0)
    assert all(len(w.unique()) <= 256 for w in prunable_weights(q8)) and cost.details["bits"] == 8
    # measured (seed 0): clean 0.942; 8 and 4 bits 0.941, 2 bits 0.583, 1 bit 0.446
    assert accuracy(q8, test) >= clean - 0.01
    assert accuracy(q1, test) <= clean - 0.3
    assert not torch.equal(prunable_weights(q8)[0], prunable_weights(mnist_model)[0])  # a copy changed, not the victim


def test_occlusion_is_seeded_per_call() -> None:
    occ = ATTACKS.get("occlusion")(OcclusionConfig(size=3, fill=0.5))
    a, _ = occ(ModelSpec("cnn2", 1, 4, 8).build(), None, seed=1)
    b, _ = occ(ModelSpec("cnn2", 1, 4, 8).build(), None, seed=2)
    x = torch.zeros(4, 1, 8, 8)
    assert torch.equal(a.transform(x), a.transform(x)) and not torch.equal(a.transform(x), b.transform(x))
    assert int((a.transform(x) == 0.5).sum()) == 4 * 9


@pytest.mark.parametrize(
    ("config", "kwargs"),
    [(SqueezeConfig, {"bits": 0}), (SqueezeConfig, {"bits": 9}), (SmoothConfig, {"kernel_size": 4}),
     (OcclusionConfig, {"size": 0}), (OcclusionConfig, {"fill": 2.0}), (QuantizeConfig, {"bits": 0})],
)  # fmt: skip
def test_configs_reject_bad_values(config, kwargs) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        config(**kwargs)


def test_squeeze_and_median_agree_with_ibm_art() -> None:
    """Where ART implements the same preprocessing, ownmark's agrees (ART: Nicolae et al. 2018, arXiv:1807.01069)."""
    pytest.importorskip("art")
    from art.defences.preprocessor import FeatureSqueezing, SpatialSmoothing

    x = torch.rand(6, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    for bits in (1, 3, 5):
        theirs = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bits)(x.numpy())[0]
        np.testing.assert_allclose(BitDepth(bits)(x).numpy(), theirs, atol=1e-6)
    theirs = SpatialSmoothing(window_size=3, channels_first=True)(x.numpy())[0]
    ours = Smooth("median", 3)(x).numpy()
    np.testing.assert_allclose(ours[..., 1:-1, 1:-1], theirs[..., 1:-1, 1:-1], atol=1e-6)  # borders: padding differs
