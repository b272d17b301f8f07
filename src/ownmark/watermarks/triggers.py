"""Building blocks shared by trigger-set watermarks: embedding hooks, counting matches."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ownmark.core import Evidence, Key
from ownmark.data import ImageSet
from ownmark.errors import KeyMismatchError
from ownmark.train import Engine, TrainConfig, fit
from ownmark.train.loop import DeviceCopies, StepHook
from ownmark.verify import LabelOracle


def trigger_batch_hook(x_trig: torch.Tensor, y_trig: torch.Tensor, per_batch: int):
    """A ``fit`` batch hook that appends ``per_batch`` triggers to every clean batch.

    Triggers are taken in a cycle keyed by the step, so a resumed run sees the same ones.
    """
    n, copies = len(x_trig), DeviceCopies(x_trig, y_trig)

    def hook(x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        xt, yt = copies.on(x.device)  # the triggers stay on the training device
        idx = ((torch.arange(per_batch) + step * per_batch) % n).to(x.device)
        return torch.cat([x, xt[idx]]), torch.cat([y, yt[idx]])

    return hook


def fine_tune_with_triggers(
    model: nn.Module, data: ImageSet, x_trig: torch.Tensor, y_trig: torch.Tensor, config: TrainConfig, *,
    per_batch: int, seed: int, engine: Engine = Engine(), checkpoint=None, resume: bool = False,
    step_hook: StepHook | None = None,
) -> nn.Module:  # fmt: skip
    """A copy of ``model`` fine-tuned on ``data`` with ``per_batch`` triggers joined to every clean
    batch (one cross-entropy over the union); ``model`` itself stays untouched. ``step_hook``
    runs on the copy before every step (FCW's weight masking).

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> data = toy_images()
        >>> model = ModelSpec("cnn2", 3, 4, 16).build()
        >>> cfg = TrainConfig(epochs=1, batch_size=16)
        >>> marked = fine_tune_with_triggers(model, data, data.x[:4], data.y[:4], cfg, per_batch=2, seed=0)
        >>> marked is model
        False
    """
    marked = copy.deepcopy(model)
    fit(
        marked, data, config, seed=seed, engine=engine, checkpoint=checkpoint, resume=resume,
        batch_hook=trigger_batch_hook(x_trig, y_trig, per_batch), step_hook=step_hook,
    )  # fmt: skip
    return marked


def check_key(key: Key, scheme: str) -> None:
    """Refuse a key made by another scheme."""
    if key.scheme != scheme:
        raise KeyMismatchError(f"this key was made by {key.scheme!r}, not {scheme!r}; verify it with {key.scheme!r}")


def count_matches(oracle: LabelOracle, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> int:
    """How many of ``x`` the oracle answers with the labels ``y``."""
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((oracle(x[i : i + batch]) == y[i : i + batch]).sum())
    return hits


def label_shares(oracle: LabelOracle, x: torch.Tensor, num_classes: int, batch: int = 512) -> torch.Tensor:
    """Share of ``x`` the oracle answers with each of ``num_classes`` labels, shape ``(num_classes,)``.

    Example:
        >>> oracle = LabelOracle(lambda x: torch.zeros(len(x), dtype=torch.long))
        >>> label_shares(oracle, torch.zeros(4, 1, 2, 2), 3).tolist()
        [1.0, 0.0, 0.0]
    """
    counts = torch.zeros(num_classes)
    for i in range(0, len(x), batch):
        answers = oracle(x[i : i + batch])
        answers = answers[(answers >= 0) & (answers < num_classes)]  # an out-of-range label is no class's
        counts += torch.bincount(answers, minlength=num_classes).float()
    return counts / max(len(x), 1)


def trigger_evidence(scheme: str, suspect, key: Key, p0: float | None) -> Evidence:
    """Evidence from a key holding ``verify_x/verify_y`` (held out) and ``embed_x/embed_y``."""
    check_key(key, scheme)
    num_classes = int(key.meta["num_classes"])
    oracle = LabelOracle(suspect, num_classes=num_classes)
    xv, yv = key.tensors["verify_x"], key.tensors["verify_y"]
    k = count_matches(oracle, xv, yv)
    details = {}
    if "embed_x" in key.tensors:
        details["embed_k"] = count_matches(oracle, key.tensors["embed_x"], key.tensors["embed_y"])
        details["embed_n"] = len(key.tensors["embed_x"])
    p = p0 if p0 is not None else 1.0 / num_classes
    return Evidence(scheme, k=k, n=len(xv), p0=p, queries=oracle.queries, details=details)
