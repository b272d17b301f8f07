"""What verification measures on a suspect encoder (white-box) or its downstream classifier (black-box).

Pure measurement functions for key-image watermarks such as AWEncoder: the per-image effect of a
perturbation on the cosine to a key image, how many images a perturbation sends to one label, and how
unlike other candidate perturbations one is labelled (``distinctness``).
The ``candidate_*`` forms score an owner's key and its decoys at once; the rank that turns
those scores into a p-value is in :mod:`ownmark.verify.randomization`.
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
    with_mark, without, eff = candidate_effects(suspect, x, delta[None], x_key[None], centred=centred)
    return with_mark[0], without[0], eff[0]


def candidate_effects(
    suspect: Any, x: torch.Tensor, deltas: torch.Tensor, x_keys: torch.Tensor, *, centred: bool = False,
    chunk_images: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """:func:`key_effects` for M candidate (delta, key image) pairs at once, each (M, N).

    The clean images are encoded once and shared by every candidate; queries: N + M + M * N images.

    Example:
        >>> enc = nn.Flatten()
        >>> x = torch.zeros(3, 1, 2, 2) + 0.5
        >>> deltas, keys = torch.stack([torch.full((1, 2, 2), 0.1), torch.zeros(1, 2, 2)]), torch.ones(2, 1, 2, 2)
        >>> [tuple(t.shape) for t in candidate_effects(enc, x, deltas, keys)]
        [(2, 3), (2, 3), (2, 3)]
    """
    n, m = len(x), len(deltas)
    clean = suspect_features(suspect, x)
    keys = suspect_features(suspect, x_keys)
    per = max(1, chunk_images // max(n, 1))
    marked = torch.cat([
        suspect_features(suspect, (x[None] + deltas[lo : lo + per, None]).clamp(0, 1).flatten(0, 1))
        for lo in range(0, m, per)
    ]).view(m, n, -1)  # fmt: skip
    if centred:
        mean = clean.mean(0)
        clean, keys, marked = clean - mean, keys - mean, marked - mean
    k = F.normalize(keys, dim=1)
    with_mark = (F.normalize(marked, dim=2) * k[:, None]).sum(-1)
    without = (F.normalize(clean, dim=1) @ k.T).T
    return with_mark, without, with_mark - without


def majority_moves(suspect: Any, x: torch.Tensor, delta: torch.Tensor) -> tuple[int, int, int]:
    """(moved, eligible, queries): L* is the label the suspect gives most of the images x + delta;
    of the images not labelled L* when clean (eligible), how many delta moves to L*.

    Example:
        >>> always_zero = lambda imgs: torch.zeros(len(imgs), dtype=torch.long)
        >>> majority_moves(always_zero, torch.rand(5, 1, 2, 2), torch.zeros(1, 2, 2))
        (0, 0, 10)
    """
    moved, eligible, queries = candidate_moves(suspect, x, delta[None])
    return int(moved[0]), int(eligible[0]), queries


def candidate_labels(
    suspect: Any, x: torch.Tensor, deltas: torch.Tensor, *, chunk_images: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The suspect's labels of the clean images (N,) and of every x + delta_j (M, N), and the queries.

    The clean images are labelled once and shared by every candidate; queries: N + M * N images.
    """
    n, m = len(x), len(deltas)
    oracle = LabelOracle(suspect)
    clean = oracle(x)
    per = max(1, chunk_images // max(n, 1))
    marked = torch.cat([
        oracle((x[None] + deltas[lo : lo + per, None]).clamp(0, 1).flatten(0, 1)) for lo in range(0, m, per)
    ]).view(m, n)  # fmt: skip
    return clean, marked, oracle.queries


def candidate_moves(
    suspect: Any, x: torch.Tensor, deltas: torch.Tensor, *, chunk_images: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`majority_moves` for M candidate perturbations at once: (moved (M,), eligible (M,), queries).

    The clean images are labelled once and shared by every candidate; queries: N + M * N images.

    Example:
        >>> by_brightness = lambda imgs: (imgs.mean((1, 2, 3)) > 0.5).long()
        >>> x = torch.full((4, 1, 2, 2), 0.45)
        >>> moved, eligible, q = candidate_moves(by_brightness, x, torch.stack([torch.full((1, 2, 2), 0.1), -x[0]]))
        >>> moved.tolist(), eligible.tolist(), q
        ([4, 0], [4, 0], 12)
    """
    clean, marked, queries = candidate_labels(suspect, x, deltas, chunk_images=chunk_images)
    return label_moves(clean, marked) + (queries,)


def label_moves(clean: torch.Tensor, marked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(moved (M,), eligible (M,)) from :func:`candidate_labels`' clean (N,) and marked (M, N) labels."""
    target = torch.mode(marked, dim=1).values
    eligible = clean[None] != target[:, None]
    moved = ((marked == target[:, None]) & eligible).sum(1)
    return moved, eligible.sum(1)


def distinctness(marked: torch.Tensor) -> torch.Tensor:
    """Per candidate j of M (rows of ``marked``, labels of N images): the share of the other
    candidates that label an image differently from j, averaged over the images.

    A symmetric function of the candidates (it does not care which one is the owner's), so ranking
    the owner's score among the decoys' keeps the rank test exact. A suspect that answers every
    perturbation alike (one label everywhere, or one label for any noise) scores 0 for every candidate.

    Example:
        >>> [round(v, 3) for v in distinctness(torch.tensor([[1, 1, 1], [1, 1, 1], [2, 2, 1]])).tolist()]
        [0.333, 0.333, 0.667]
    """
    m, n = marked.shape
    if m < 2:
        return torch.zeros(m)
    labels = int(marked.max()) + 1
    counts = torch.zeros(n, labels, dtype=torch.long).scatter_add_(1, marked.T, torch.ones(n, m, dtype=torch.long))
    same = counts.gather(1, marked.T).T  # (M, N): candidates (j included) that give j's label to image i
    return ((m - same).double() / (m - 1)).mean(1)
