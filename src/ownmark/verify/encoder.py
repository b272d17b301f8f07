"""What verification measures on a suspect encoder (white-box) or its downstream classifier (black-box).

Pure measurement functions for key-image watermarks such as AWEncoder: the per-image effect of a
perturbation on the cosine to a key image, and how many images a perturbation sends to one label.
The tests that turn them into p-values are in :mod:`ownmark.verify.tests`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.errors import KeyMismatchError
from ownmark.models.encoder import encode
from ownmark.verify.suspect import LabelOracle


def suspect_features(suspect: Any, x: torch.Tensor) -> torch.Tensor:
    """Features (N, D) from an encoder module or a feature query function (ModelAPI, RemoteModel)."""
    try:
        out = encode(suspect, x) if isinstance(suspect, nn.Module) else torch.as_tensor(suspect(x)).float()
    except RuntimeError as err:
        raise KeyMismatchError(
            f"the suspect cannot take the key's images {tuple(x.shape[1:])} ({str(err).splitlines()[0][:120]}); "
            "use the key made for this encoder"
        ) from None
    if out.ndim != 2 or len(out) != len(x):
        raise KeyMismatchError(f"a suspect encoder must return (N, D) features, got {tuple(out.shape)}")
    return out


def key_effects(
    suspect: Any, x: torch.Tensor, delta: torch.Tensor, x_key: torch.Tensor, *, centred: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: cos(S(x + delta), S(x_key)), cos(S(x), S(x_key)) and their difference (the effect).

    Args:
        centred: subtract the suspect's mean clean feature first (removes the direction that all
            non-negative features share).

    Example:
        >>> enc = nn.Flatten()
        >>> x, key = torch.zeros(4, 1, 2, 2) + 0.5, torch.ones(1, 2, 2)
        >>> [round(float(t.mean()), 3) for t in key_effects(enc, x, torch.full((1, 2, 2), 0.1), key)]
        [1.0, 1.0, 0.0]
    """
    feats = suspect_features(suspect, torch.cat([x_key[None], x, (x + delta).clamp(0, 1)]))
    if centred:
        feats = feats - feats[1 : 1 + len(x)].mean(0)
    k, clean, marked = feats[:1], feats[1 : 1 + len(x)], feats[1 + len(x) :]
    with_mark = F.cosine_similarity(marked, k.expand_as(marked), dim=1)
    without = F.cosine_similarity(clean, k.expand_as(clean), dim=1)
    return with_mark, without, with_mark - without


def majority_moves(suspect: Any, x: torch.Tensor, delta: torch.Tensor) -> tuple[int, int, int]:
    """(moved, eligible, queries): L* is the label the suspect gives most of the images x + delta;
    of the images not labelled L* when clean (eligible), how many delta moves to L*.

    Example:
        >>> always_zero = lambda imgs: torch.zeros(len(imgs), dtype=torch.long)
        >>> majority_moves(always_zero, torch.rand(5, 1, 2, 2), torch.zeros(1, 2, 2))
        (0, 0, 10)
    """
    labels = LabelOracle(suspect)(torch.cat([x, (x + delta).clamp(0, 1)]))
    clean, marked = labels[: len(x)], labels[len(x) :]
    target = torch.mode(marked).values
    eligible = clean != target
    return int((marked[eligible] == target).sum()), int(eligible.sum()), len(labels)
