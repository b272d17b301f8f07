import copy

import pytest
import torch
from torch import nn

from ownmark.attacks import ATTACKS, FineTune, FineTuneConfig, Prune, PruneConfig, global_l1_prune
from ownmark.attacks.prune import prunable_weights
from ownmark.data.toy import toy_images
from ownmark.errors import ConfigError
from ownmark.models import ModelSpec
from ownmark.models.injected import InjectedModel
from ownmark.train import TrainConfig, accuracy, fit


def victim(arch: str = "cnn2") -> nn.Module:
    torch.manual_seed(0)
    return ModelSpec(arch, 3, 4, 16).build().eval()


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    model = victim()
    fit(model, toy_images(), TrainConfig(epochs=4, batch_size=8, lr=0.03), seed=0)
    return model


def test_expected_attacks_are_registered() -> None:
    expected = {"ftal", "ftll", "rtll", "rtal", "prune", "fineprune", "distill", "noise", "blur", "flip", "jpeg"}
    expected |= {"strip", "ft-target"}
    assert expected <= set(ATTACKS.names())


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("arch", ["cnn2", "resnet-s"])
def test_attack_leaves_victim_untouched_and_keeps_output_shape(name: str, arch: str) -> None:
    attack_class = ATTACKS.get(name)
    if attack_class.families == ("image2image",):
        pytest.skip("image-to-image attacks are covered by tests/image2image/test_surrogate.py")
    config = attack_class.config_class()
    if hasattr(config, "epochs"):
        config = type(config)(**{**config.__dict__, "epochs": 1})  # keep the test fast
    if name == "overwrite":  # the thief's FCW must fit the 16 toy images per class
        config = type(config)(**{**config.__dict__, "settings": "n_embed=4,n_verify=4,batch_size=16"})
    attack = attack_class(config)
    model, width = victim(arch), 4
    if getattr(attack_class, "needs_injected", False):  # PTYNet attacks take an injected model
        model = InjectedModel(model, ModelSpec(arch, 3, 2, 16).build(), [1], 1.5, 4).eval()
    if attack_class.families == ("encoder",):  # encoder attacks: 16 features out
        torch.manual_seed(0)
        model, width = ModelSpec("conv4" if arch == "cnn2" else arch, 3, 16, 16, family="encoder").build().eval(), 16
    if name == "feature-permute" and arch == "resnet-s":  # sequential networks only, refused in one line
        with pytest.raises(ConfigError, match="handles sequential networks"):
            attack(model, toy_images(), seed=0)
        return
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attacked, cost = attack(model, toy_images(), seed=0)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert attacked is not model and cost.seconds >= 0
    x = toy_images(1).x[:5]
    with torch.no_grad():
        answer, original = attacked.eval()(x), model(x)
    assert answer.shape == original.shape == (5, width)
    if name == "feature-permute":  # other weights, the same function (tests/attacks/test_permute.py)
        assert torch.allclose(answer, original, atol=1e-5)
    elif name == "trigger-detect":  # only queries its detector flags are answered otherwise (test_adaptive.py)
        kept = ~attacked.flagged(x)
        assert torch.equal(answer[kept], original[kept]) and cost.details["own_triggers"] > 0
    else:
        assert not torch.equal(answer, original)  # it did attack
    attacked_state = attacked.state_dict()
    if attacked_state.keys() == before.keys():  # input transforms wrap the model instead of changing weights
        assert any(not torch.equal(before[k], attacked_state[k]) for k in before)


def test_prune_zeroes_exactly_the_requested_share() -> None:
    model = victim()
    weights = prunable_weights(model)
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == 0  # fresh init has no exact zeros
    for amount in (0.1, 0.3, 0.5, 0.77, 0.99):
        pruned, cost = Prune(PruneConfig(amount=amount))(model, None, seed=0)
        zeros = sum(int((w == 0).sum()) for w in prunable_weights(pruned))
        assert zeros == cost.details["zeroed"] == int(amount * total), amount
        assert cost.details["amount"] == amount and not pruned.training
        for name, param in pruned.named_parameters():
            if name.endswith("bias"):
                assert torch.equal(param, dict(model.named_parameters())[name]), name


def test_prune_removes_the_smallest_weights_across_layers() -> None:
    model = victim()
    magnitudes = torch.cat([w.detach().abs().flatten() for w in prunable_weights(model)])
    pruned, _ = Prune(PruneConfig(amount=0.4))(model, None, seed=0)
    kept = torch.cat([w.detach().abs().flatten() for w in prunable_weights(pruned)])
    dropped = kept == 0
    assert magnitudes[dropped].max() <= magnitudes[~dropped].min()
    assert torch.equal(kept[~dropped], magnitudes[~dropped])  # survivors untouched


def test_prune_keeps_batch_norm() -> None:
    model = victim("resnet-s")
    pruned, _ = Prune(PruneConfig(amount=0.5))(model, None, seed=0)
    for name, module in pruned.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            original = dict(model.named_modules())[name]
            assert torch.equal(module.weight, original.weight) and torch.equal(module.bias, original.bias)


def test_prune_with_ties_still_zeroes_exactly_count() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        for m in model:
            m.weight.fill_(0.5)
    assert global_l1_prune(model, 0.5) == 12
    assert sum(int((m.weight == 0).sum()) for m in model) == 12


def test_prune_amount_zero_changes_nothing() -> None:
    model = victim()
    pruned, cost = Prune(PruneConfig(amount=0.0))(model, None, seed=0)
    assert cost.details["zeroed"] == 0
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), pruned.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("amount", [1.0, 1.5, -0.1, float("nan"), "0.5"])
def test_prune_config_rejects_bad_amount(amount: object) -> None:
    with pytest.raises(ConfigError, match=r"PruneConfig\.amount must lie in \[0\.0, 1\.0\)"):
        PruneConfig(amount=amount)  # type: ignore[arg-type]


def test_pruning_sweep_on_a_trained_model(trained: nn.Module) -> None:
    assert accuracy(trained, toy_images(1)) >= 0.9
    total = sum(w.numel() for w in prunable_weights(trained))
    fractions, accuracies = [], []
    for amount in (0.0, 0.2, 0.4, 0.6, 0.8, 0.95):
        pruned, _ = Prune(PruneConfig(amount=amount))(trained, None, seed=0)
        fractions.append(sum(int((w == 0).sum()) for w in prunable_weights(pruned)) / total)
        accuracies.append(accuracy(pruned, toy_images(1)))
    assert all(a < b for a, b in zip(fractions, fractions[1:], strict=False)), fractions
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(0.95, abs=1 / total)
    assert accuracies[1] >= 0.9  # light pruning of an easy task barely hurts


def test_finetune_cost_and_change(trained: nn.Module) -> None:
    before = copy.deepcopy(trained.state_dict())
    attacked, cost = FineTune(FineTuneConfig(epochs=2, batch_size=16, lr=0.01))(trained, toy_images(2), seed=0)
    assert cost.epochs == 2.0 and cost.seconds > 0 and cost.queries == 0
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in attacked.state_dict().items())
    assert accuracy(attacked, toy_images(1)) >= 0.9  # fine-tuning on the same task keeps the task


def test_finetune_is_seeded(trained: nn.Module) -> None:
    attack = FineTune(FineTuneConfig(epochs=1, batch_size=16))
    a, _ = attack(trained, toy_images(2), seed=5)
    b, _ = attack(trained, toy_images(2), seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize(
    ("field", "value"), [("epochs", 0), ("lr", 0.0), ("batch_size", -1), ("momentum", -0.1), ("optimizer", "lbfgs")]
)
def test_finetune_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"FineTuneConfig.{field}"):
        FineTuneConfig(**{field: value})
