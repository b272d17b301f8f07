"""InjectedModel: the injection formula, gradients, one-artefact save/load, and load_target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from ownmark.errors import ConfigError, IntegrityError, KeyMismatchError, MissingFileError
from ownmark.models import ModelSpec, load_model, save_model
from ownmark.models.injected import InjectedModel, load_target


class Fixed(nn.Module):
    """Answers every image with the same logits (plus a learnable offset for gradient tests)."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def injected(seed: int = 0, targets: tuple[int, ...] = (3, 1)) -> InjectedModel:
    torch.manual_seed(seed)
    target, proprietary = ModelSpec("cnn2", 1, 10, 28).build(), ModelSpec("cnn2", 1, len(targets) + 1, 28).build()
    return InjectedModel(target, proprietary, list(targets), 1.5, 10).eval()


def test_scores_add_alpha_times_each_watermark_class_to_its_own_label() -> None:
    target_logits, ptynet_logits = [0.5, -1.0, 2.0, 0.0], [1.0, 3.0, -2.0]  # watermark classes 0, 1; clean class 2
    model = InjectedModel(Fixed(target_logits), Fixed(ptynet_logits), targets=[2, 0], alpha=1.5, num_classes=4)
    p, q = F.softmax(torch.tensor(target_logits), 0), F.softmax(torch.tensor(ptynet_logits), 0)
    expected = p.clone()
    expected[2] += 1.5 * q[0]  # watermark class 0 -> label 2
    expected[0] += 1.5 * q[1]  # watermark class 1 -> label 0; the clean class q[2] is dropped
    scores = model(torch.zeros(2, 1, 4, 4))
    assert torch.allclose(scores, expected.expand(2, -1), atol=1e-6)
    assert model.clean_class == 2 and model.n_wm == 2 and model.targets == [2, 0]
    assert scores.sum(1).allclose(1 + 1.5 * (1 - q[2]))  # not probabilities: the docstring says so


def test_gradients_reach_both_parts() -> None:
    model = injected().train()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()  # fails if the output were written in place
    for part in (model.target, model.proprietary):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert not model.mix.requires_grad and not model.alpha.requires_grad


def test_gradcheck_in_float64() -> None:
    model = InjectedModel(Fixed([0.1, 0.2, -0.3]), Fixed([0.4, -0.5]), [1], 2.0, 3).double()
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    names = [name for name, _ in model.named_parameters()]

    def scores(*params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, dict(zip(names, params, strict=True)), (x,))

    assert torch.autograd.gradcheck(scores, tuple(p.detach().clone().requires_grad_() for p in model.parameters()))


@pytest.mark.parametrize(
    ("targets", "alpha", "classes", "match"),
    [([], 1.5, 10, "one label"), ([10], 1.5, 10, r"\[0, 10\)"), ([1], 0.0, 10, "alpha"), ([1], 1.5, 0, "num_classes")],
)
def test_bad_arguments_are_refused(targets: list[int], alpha: float, classes: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        InjectedModel(
            ModelSpec("cnn2", 1, 10, 28).build(), ModelSpec("cnn2", 1, 2, 28).build(), targets, alpha, classes
        )


def test_proprietary_net_needs_one_output_per_watermark_class_and_a_clean_one() -> None:
    with pytest.raises(ConfigError, match="3 outputs but 1 watermark classes need 2"):
        InjectedModel(ModelSpec("cnn2", 1, 10, 28).build(), ModelSpec("cnn2", 1, 3, 28).build(), [4], 1.5, 10)


def test_output_layer_of_the_injected_model_is_the_targets() -> None:
    from ownmark.attacks.finetune import last_linear

    model = injected()
    assert last_linear(model) is model.target[-1]


def test_injected_model_is_one_artefact_that_loads_and_runs_like_a_classifier(tmp_path: Path) -> None:
    model = injected()
    save_model(tmp_path / "m", model, info={"scheme": "ptynet"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    loaded, manifest = load_model(tmp_path / "m")
    assert isinstance(loaded, InjectedModel) and not loaded.training and loaded.spec == model.spec
    assert manifest["injected"] == {
        "proprietary": {"arch": "cnn2", "in_channels": 1, "num_classes": 3, "image_size": 28, "family": "classifier"},
        "targets": [3, 1],
        "alpha": 1.5,
    }
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_plain_models_still_save_without_an_injected_entry(tmp_path: Path) -> None:
    save_model(tmp_path / "m", ModelSpec("cnn2", 1, 10, 28).build())
    assert "injected" not in json.loads((tmp_path / "m.json").read_text())
    assert not isinstance(load_model(tmp_path / "m")[0], InjectedModel)


@pytest.mark.parametrize(
    "entry",
    [
        {"targets": [3, 1], "alpha": 1.5},
        {"proprietary": None, "targets": [1]},
        {"proprietary": {"arch": "cnn2", "in_channels": 1, "num_classes": 3, "image_size": 28}, "targets": [3, 10],
         "alpha": 1.5},
    ],
)  # fmt: skip
def test_broken_injected_entry_is_refused(tmp_path: Path, entry: dict) -> None:
    save_model(tmp_path / "m", injected())
    manifest = json.loads((tmp_path / "m.json").read_text())
    manifest["injected"] = entry
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="injected-model entry"):
        load_model(tmp_path / "m")


def test_injected_entry_that_does_not_fit_the_weights_is_refused(tmp_path: Path) -> None:
    save_model(tmp_path / "m", injected())
    manifest = json.loads((tmp_path / "m.json").read_text())
    manifest["injected"]["proprietary"]["arch"] = "lenet"
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="does not fit"):
        load_model(tmp_path / "m")


def test_foreign_proprietary_net_cannot_be_saved(tmp_path: Path) -> None:
    model = InjectedModel(ModelSpec("cnn2", 1, 10, 28).build(), Fixed([0.0, 0.0]), [1], 1.5, 10)
    with pytest.raises(IntegrityError, match="no ownmark ModelSpec"):
        save_model(tmp_path / "m", model)


SPEC = ModelSpec("cnn2", 1, 10, 28)


def test_load_target_from_an_ownmark_artefact(tmp_path: Path) -> None:
    model = SPEC.build()
    save_model(tmp_path / "m", model)
    for path in (tmp_path / "m", tmp_path / "m.safetensors"):
        loaded = load_target(path, SPEC)
        assert same_weights(model, loaded)
    with pytest.raises(KeyMismatchError, match="pass the data the model was trained on"):
        load_target(tmp_path / "m", ModelSpec("cnn2", 3, 4, 16))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_target_from_a_bare_state_dict(tmp_path: Path, suffix: str) -> None:
    model = ModelSpec("lenet", 1, 10, 28).build()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    else:
        save_file(model.state_dict(), str(path))
    loaded = load_target(path, ModelSpec("lenet", 1, 10, 28))
    assert loaded.spec.arch == "lenet" and not loaded.training
    assert same_weights(model, loaded)
    with pytest.raises(IntegrityError, match="does not fit architecture 'cnn2'"):
        load_target(path, SPEC)


def test_load_target_fits_a_plain_torchvision_state_dict_into_the_grey_adapter(tmp_path: Path) -> None:
    import torchvision

    body = torchvision.models.get_model("resnet18", weights=None, num_classes=10)
    torch.save(body.state_dict(), tmp_path / "resnet18.pth")
    loaded = load_target(tmp_path / "resnet18.pth", ModelSpec("tv:resnet18", 1, 10, 28))
    assert torch.equal(loaded.body.fc.weight, body.fc.weight)


def test_load_target_from_a_name_warns_that_it_is_untrained() -> None:
    with pytest.warns(UserWarning, match="random"):
        one = load_target("tv:resnet18", ModelSpec("cnn2", 3, 4, 16), seed=1)
    with pytest.warns(UserWarning):
        two = load_target("tv:resnet18", ModelSpec("cnn2", 3, 4, 16), seed=1)
    assert one.spec.arch == "tv:resnet18" and one(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    assert same_weights(one, two)


def test_load_target_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="no such model file"):
        load_target(tmp_path / "missing.safetensors", SPEC)
    with pytest.raises(ConfigError, match="spec_hint"):
        load_target("cnn2")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(IntegrityError, match="not a readable state dict"):
        load_target(tmp_path / "junk.pt", SPEC)


def test_normalised_nll_is_the_nll_of_scores_divided_by_their_sum() -> None:
    from ownmark.models.injected import normalised_nll

    scores = torch.tensor([[0.2, 1.6, 0.2], [0.5, 0.3, 0.2]])
    y = torch.tensor([1, 0])
    expected = -(torch.log(torch.tensor(1.6 / 2.0)) + torch.log(torch.tensor(0.5))) / 2
    assert torch.allclose(normalised_nll(scores, y), expected)
    assert torch.isfinite(normalised_nll(torch.tensor([[0.0, 1.0]]), torch.tensor([0])))  # a zero score stays finite


def test_fit_loss_trains_an_injected_model_on_normalised_scores_and_leaves_others_alone() -> None:
    from ownmark.models.injected import fit_loss, normalised_nll

    model = injected().train()
    assert fit_loss(model.target) is None  # a plain classifier: fit's cross-entropy on logits
    x, y = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3])
    value = fit_loss(model)(model, x, y, 0)
    assert torch.allclose(value, normalised_nll(model(x), y))
    value.backward()  # the injection has no in-place writes: gradients reach both parts
    assert all(p.grad is not None for p in model.parameters())
