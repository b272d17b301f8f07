"""A frozen target classifier with a proprietary watermark classifier injected at its output,
and loading the classifier to protect (bring your own model)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.errors import ConfigError, IntegrityError, KeyMismatchError, MissingFileError
from ownmark.io import artefact_paths

if TYPE_CHECKING:
    from ownmark.models.store import ModelSpec


class InjectedModel(nn.Module):
    """``scores = softmax(target(x)) + alpha * softmax(proprietary(x))[:, :n_wm] @ mix``.

    The proprietary net has ``n_wm + 1`` outputs: watermark classes ``0 .. n_wm - 1`` and the
    clean class ``n_wm`` (:attr:`clean_class`), which is dropped. ``mix`` is the fixed
    ``(n_wm, K)`` one-hot matrix sending watermark class ``w`` to its target label ``t_w``, so
    ``score_t = p_t + alpha * sum_{w: t_w = t} q_w``. The sum is built without in-place writes,
    so gradients reach both parts (end-to-end fine-tuning), and ``mix`` and ``alpha`` are
    buffers: saved with the weights, never trained.

    The scores are not normalised probabilities (they sum to ``1 + alpha * (1 - q_clean)``);
    their argmax is the label. The target is kept as it is: the module neither copies nor
    freezes it, and nothing here trains it.

    Reference:
        Wang, Ren, et al., "Free Fine-tuning: A Plug-and-Play Watermarking Scheme for Deep Neural
        Networks", ACM MM 2023, arXiv:2210.07809.

    Example:
        >>> from ownmark.models import ModelSpec
        >>> target, proprietary = ModelSpec("cnn2", 1, 10, 28).build(), ModelSpec("cnn2", 1, 2, 28).build()
        >>> model = InjectedModel(target, proprietary, targets=[7], alpha=1.5, num_classes=10)
        >>> model(torch.zeros(3, 1, 28, 28)).shape, model.clean_class, model.mix.argmax(1).tolist()
        (torch.Size([3, 10]), 1, [7])
    """

    def __init__(
        self, target: nn.Module, proprietary: nn.Module, targets: Sequence[int], alpha: float, num_classes: int
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"InjectedModel num_classes must be a positive int, got {num_classes!r}")
        labels = [int(t) for t in targets]
        if not labels or any(not 0 <= t < num_classes for t in labels):
            raise ConfigError(
                f"InjectedModel targets must be one label in [0, {num_classes}) per watermark class, got {labels}"
            )
        n_out = getattr(getattr(proprietary, "spec", None), "num_classes", len(labels) + 1)
        if n_out != len(labels) + 1:
            raise ConfigError(
                f"the proprietary net has {n_out} outputs but {len(labels)} watermark classes need {len(labels) + 1} "
                "(one per watermark class, then the clean class)"
            )
        if not alpha > 0:
            raise ConfigError(f"InjectedModel alpha must be a positive number, got {alpha!r}")
        # the proprietary net is registered first, so module order ends with the target's output layer
        # (attacks such as FTLL take the last nn.Linear as "the output layer")
        self.proprietary = proprietary
        self.target = target
        mix = torch.zeros(len(labels), num_classes)
        mix[torch.arange(len(labels)), torch.tensor(labels)] = 1.0
        self.register_buffer("mix", mix)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        if hasattr(target, "spec"):
            self.spec = target.spec  # the interface (input shape, classes) is the target's

    @property
    def n_wm(self) -> int:
        """Number of watermark classes of the proprietary net."""
        return self.mix.shape[0]

    @property
    def clean_class(self) -> int:
        """Index of the proprietary net's clean class (its last output)."""
        return self.n_wm

    @property
    def targets(self) -> list[int]:
        """Target label ``t_w`` of each watermark class ``w``."""
        return self.mix.argmax(1).tolist()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.softmax(self.target(x), dim=1)  # (N, K)
        q = F.softmax(self.proprietary(x), dim=1)  # (N, n_wm + 1)
        return p + self.alpha * (q[:, : self.n_wm] @ self.mix)


def normalised_nll(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of labels ``y`` under an injected model's scores normalised to sum
    to one: ``-log(score_y / sum(scores))``, the loss to train an :class:`InjectedModel` with.

    Its outputs are sums of probabilities in ``[0, 1 + alpha]``, not logits: cross-entropy on them
    (a softmax of numbers that differ by at most ``1 + alpha``) can never make the answer
    confident and its gradients stay small, so fine-tuning attacks trained that way understate
    what the attacker gets (RTLL on mnist5k: 74% clean accuracy that way, 95% with this loss).

    Example:
        >>> scores = torch.tensor([[0.5, 0.25, 0.25], [0.0, 2.5, 0.0]])   # rows need not sum to 1
        >>> round(normalised_nll(scores, torch.tensor([0, 1])).item(), 4)    # (log 2 + 0) / 2
        0.3466
    """
    scores = scores.clamp_min(1e-12)
    return F.nll_loss(scores.log() - scores.sum(1, keepdim=True).log(), y)


def fit_loss(model: nn.Module):
    """The ``loss`` :func:`ownmark.train.fit` needs to train ``model``: None (cross-entropy on its
    logits), or for an :class:`InjectedModel`, :func:`normalised_nll` of its scores."""
    if not isinstance(model, InjectedModel):
        return None

    def loss(forward, x: torch.Tensor, y: torch.Tensor, _step: int) -> torch.Tensor:
        return normalised_nll(forward(x), y)

    return loss


def load_target(path_or_name: str | Path, spec_hint: ModelSpec | None = None, *, seed: int = 0) -> nn.Module:
    """The classifier to protect, from an ownmark model artefact, a bare state dict, or a name.

    Tried in this order: an ownmark artefact (``NAME.safetensors`` with its ``NAME.json``);
    a bare state dict (``.safetensors``, or ``.pt``/``.pth``/``.bin`` read with
    ``weights_only=True``) loaded into ``spec_hint.build()``; otherwise an architecture name
    (``cnn2``, ``tv:resnet18``, ``timm:...``) built with ``spec_hint``'s shape and classes and
    initialised from ``seed``: untrained, since nothing is downloaded (a warning says so).

    Args:
        spec_hint: the data's shape and classes, and the architecture of a bare state dict. An
            artefact must agree with it.

    Example:
        >>> import warnings
        >>> from ownmark.models import ModelSpec
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     model = load_target("lenet", ModelSpec("cnn2", 1, 10, 28))
        >>> model.spec.arch, model.training
        ('lenet', False)
    """
    from ownmark.models.store import ModelSpec, load_model  # store imports this module

    text = str(path_or_name)
    st_path, js_path = artefact_paths(text)
    if st_path.is_file() and js_path.is_file():
        model, _ = load_model(text)
        if spec_hint is not None and (model.spec.input_shape, model.spec.num_classes) != (
            spec_hint.input_shape, spec_hint.num_classes,
        ):  # fmt: skip
            raise KeyMismatchError(
                f"{text} takes {model.spec.input_shape} images with {model.spec.num_classes} classes but the data has "
                f"{spec_hint.input_shape} with {spec_hint.num_classes}; pass the data the model was trained on"
            )
        return model
    if spec_hint is None:
        raise ConfigError(f"load_target needs spec_hint (architecture, shape, classes) for {text!r}")
    path = Path(text)
    if path.is_file():
        model = spec_hint.build()
        _load_state(model, _read_state_dict(path), path)
        return model.eval()
    if path.suffix in (".safetensors", ".json", ".pt", ".pth", ".bin") or "/" in text or "\\" in text:
        raise MissingFileError(f"no such model file: {text}")
    from ownmark.train import cpu_seeded

    spec = ModelSpec(text, spec_hint.in_channels, spec_hint.num_classes, spec_hint.image_size)
    with cpu_seeded(seed):
        model = spec.build()
    warnings.warn(f"{text!r} names an architecture: its weights are random, not trained", stacklevel=2)
    return model.eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a bare state dict; ``{"state_dict": ...}``/``{"model": ...}`` wrappers and
    DataParallel's ``module.`` prefix are undone."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise several unrelated types for a bad file
        raise IntegrityError(f"{path} is not a readable state dict ({type(err).__name__}); pass a state dict") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IntegrityError(f"{path} holds no state dict (names to tensors); save model.state_dict()")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` strictly; a plain torchvision state dict also fits ownmark's grey-input adapter."""
    expected = model.state_dict()
    if set(state) != set(expected) and {f"body.{k}" for k in state} == set(expected):
        state = {f"body.{k}": v for k, v in state.items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        spec = model.spec
        raise IntegrityError(
            f"{path} does not fit architecture {spec.arch!r} {spec.input_shape} with {spec.num_classes} classes: "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}; name its architecture"
        )
    model.load_state_dict(state)
