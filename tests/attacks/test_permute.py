"""Feature permutation changes every hidden layer's weights and nothing a verifier can query."""

import pytest
import torch

import ownmark as om
from ownmark.attacks import ATTACKS
from ownmark.errors import ConfigError
from ownmark.families import FAMILIES
from ownmark.models import ModelSpec


@pytest.mark.parametrize(("arch", "family", "layers"), [("cnn2", "classifier", 3), ("lenet", "classifier", 4),
                                                        ("conv4", "encoder", 3)])  # fmt: skip
def test_same_function_other_weights(arch: str, family: str, layers: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FAMILIES.get(family).build(arch, 1, 16, 28).eval()
    model.spec = ModelSpec(arch, 1, 16, 28, family=family)
    if family == "encoder":  # batch-norm statistics that are not the defaults, so their permutation matters
        model.train()
        with torch.no_grad():
            model(torch.rand(64, 1, 28, 28))
        model.eval()
    attacked, cost = ATTACKS.get("feature-permute")()(model, None, seed=0)
    x = torch.rand(16, 1, 28, 28)
    assert cost.details["permuted_layers"] == layers and cost.queries == 0
    assert torch.allclose(attacked(x), model(x), atol=1e-5)
    moved = [not torch.equal(a, b) for a, b in zip(attacked.parameters(), model.parameters(), strict=True)]
    assert sum(moved) >= layers + 1  # every permuted layer's weights, and the last one's input side


def test_an_ownmark_verdict_does_not_move(toy_victim) -> None:
    from ownmark.data.toy import toy_images

    scheme = om.create_scheme("unrelated", n_embed=8, n_verify=8, epochs=1, batch_size=16, triggers_per_batch=2)
    marked, key = scheme.embed(toy_victim, toy_images(0), seed=0)
    permuted, _ = ATTACKS.get("feature-permute")()(marked, None, seed=3)
    assert om.verify(permuted, key).p_value == om.verify(marked, key).p_value


def test_non_sequential_networks_are_refused() -> None:
    with pytest.raises(ConfigError, match="handles sequential networks"):
        ATTACKS.get("feature-permute")()(ModelSpec("resnet-s", 1, 10, 28).build(), None, seed=0)


def test_an_injected_model_is_permuted_network_by_network() -> None:
    """A PTYNet victim: the target and the proprietary net are each permuted, the injected answers unchanged."""
    from ownmark.models import ModelSpec
    from ownmark.models.injected import InjectedModel

    torch.manual_seed(0)
    injected = InjectedModel(ModelSpec("cnn2", 3, 4, 16).build(), ModelSpec("cnn2", 3, 2, 16).build(), [1], 1.5, 4)
    injected.eval()
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    attacked, cost = ATTACKS.get("feature-permute")()(injected, None, seed=0)
    assert cost.details["permuted_layers"] == 6  # 3 per cnn2
    assert torch.allclose(attacked(x), injected(x), atol=1e-5)
    assert not torch.equal(attacked.target.state_dict()["0.weight"], injected.target.state_dict()["0.weight"])
