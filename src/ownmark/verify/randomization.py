"""Randomization tests over the owner's secret: p-values that hold for any model made without it.

Every watermark key is one draw of a public procedure (a class triple, a patch and a label, a
perturbation, an arrangement of labels). A model made without the owner's secret cannot depend on
which draw the owner kept, so if the verifier scores the suspect on the true key and on decoy keys
drawn by the *same* procedure, the true key's rank among them is uniform (ties broken against the
owner). ``p = #{candidates scoring >= the true key} / #candidates`` is then a valid p-value about the
**model**, whatever the model is (biased to one label, constant, distilled, third-party), with no null
model and no calibration. Its smallest value is ``1 / #candidates``.

The unit of independence is the model: images, bits or pixels of one model are never counted as
independent evidence here. The only assumption is the one the owner controls: the true key was drawn
uniformly among the candidates, by the same procedure, before the suspect was seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ownmark.core import Evidence
from ownmark.errors import ConfigError

RANDOMIZATION_TEST = "randomization over decoy keys"
PERMUTATION_TEST = "permutation over the secret label arrangement"
NULL_HYPOTHESIS = "the suspect was made without the owner's secret (unit of independence: the model)"


def rank_pvalue(true_score: float, decoy_scores: Sequence[float] | torch.Tensor | np.ndarray) -> float:
    """``(1 + #{decoys scoring >= true}) / (1 + #decoys)``: exact when the true key is one uniform draw.

    Ties count against the owner, and NaN scores (a decoy the suspect could not be scored on) count
    as ties, so the p-value never falls below what the evidence supports.

    Example:
        >>> rank_pvalue(0.9, [0.1, 0.2, 0.3])
        0.25
        >>> rank_pvalue(0.5, [0.5, 0.5, 0.1])
        0.75
    """
    decoys = np.asarray(decoy_scores, dtype=float).reshape(-1)
    if not math.isfinite(float(true_score)):
        return 1.0
    at_least = int(np.sum(~(decoys < float(true_score))))  # NaN compares False: counted against the owner
    return (1 + at_least) / (1 + len(decoys))


def candidate_pvalue(scores: torch.Tensor | np.ndarray, true_index: int | tuple[int, ...]) -> float:
    """:func:`rank_pvalue` of ``scores[true_index]`` against every other finite or NaN entry.

    ``scores`` holds one score per candidate key (any shape); entries set to ``-inf`` are not
    candidates (e.g. a class triple with a repeated class) and are left out.

    Example:
        >>> s = torch.tensor([[0.1, 0.9], [0.2, -float("inf")]])
        >>> candidate_pvalue(s, (0, 1))
        0.3333333333333333
    """
    arr = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=float)
    flat_index = np.ravel_multi_index(true_index if isinstance(true_index, tuple) else (true_index,), arr.shape)
    flat = arr.reshape(-1)
    if flat[flat_index] == -np.inf:
        raise ConfigError("the true key is not among the candidates (its score is -inf); the key is inconsistent")
    keep = np.ones(len(flat), dtype=bool)
    keep[flat_index] = False
    keep &= flat != -np.inf
    return rank_pvalue(float(flat[flat_index]), flat[keep])


def n_candidates(scores: torch.Tensor | np.ndarray) -> int:
    """How many candidate keys a score array holds (entries that are not ``-inf``)."""
    arr = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=float)
    return int(np.sum(arr != -np.inf))


def label_contrast(rates: torch.Tensor, control: torch.Tensor | None = None) -> torch.Tensor:
    """Candidate scores for one-label triggers: how much more a suspect answers label c on trigger
    set d than it does on the other sets, or on the controls (the same images without the trigger).

    Args:
        rates: ``(D, K)``: share of trigger set d answered with label c.
        control: ``(D, K)`` or ``(K,)``: the same shares on control images; None uses the mean over
            the D sets, so a model that favours a label everywhere gains nothing.

    Example:
        >>> r = torch.tensor([[1.0, 0.0], [1.0, 0.0]])   # answers label 0 everywhere
        >>> label_contrast(r).tolist()
        [[0.0, 0.0], [0.0, 0.0]]
    """
    if rates.ndim != 2:
        raise ConfigError(f"label_contrast needs rates of shape (D, K), got {tuple(rates.shape)}")
    base = rates.mean(0, keepdim=True) if control is None else control.expand_as(rates)
    return rates - base


def permutation_pvalue(
    answers: torch.Tensor, labels: torch.Tensor, *, n_permutations: int = 99_999, seed: int = 0
) -> tuple[int, float]:
    """Matches of ``answers`` with secret ``labels``, and their p-value under random arrangements.

    The owner's labels are a uniformly random arrangement of a public multiset (e.g. each class equally
    often). A model made without the secret answers the same whatever the arrangement, so the matches
    of the true arrangement rank uniformly among those of random re-arrangements. Monte Carlo with
    ``n_permutations`` draws: ``p = (1 + #{draws >= observed}) / (1 + n_permutations)``, exact for any
    number of draws; the smallest p-value is ``1 / (1 + n_permutations)``. A model that answers one label
    everywhere matches every arrangement equally and gets p = 1.

    Example:
        >>> k, p = permutation_pvalue(torch.arange(20) % 4, torch.arange(20) % 4, n_permutations=999)
        >>> k, p < 0.01
        (20, True)
        >>> permutation_pvalue(torch.zeros(20, dtype=torch.long), torch.arange(20) % 4, n_permutations=99)
        (5, 1.0)
    """
    a = np.asarray(answers.detach().cpu(), dtype=np.int64).reshape(-1)
    y = np.asarray(labels.detach().cpu(), dtype=np.int64).reshape(-1)
    if len(a) != len(y) or len(a) == 0:
        raise ConfigError(f"permutation_pvalue needs equal, non-empty answers and labels, got {len(a)} and {len(y)}")
    if not isinstance(n_permutations, int) or n_permutations < 1:
        raise ConfigError(f"n_permutations must be a positive int, got {n_permutations!r}")
    observed = int(np.sum(a == y))
    rng = np.random.default_rng(seed)
    at_least, done, chunk = 0, 0, max(1, 2_000_000 // len(a))
    while done < n_permutations:
        m = min(chunk, n_permutations - done)
        perms = rng.permuted(np.broadcast_to(y, (m, len(y))), axis=1)
        at_least += int(np.sum((perms == a).sum(1) >= observed))
        done += m
    return observed, (1 + at_least) / (1 + n_permutations)


def randomization_evidence(
    scheme: str, scores: torch.Tensor, true_index: int | tuple[int, ...], *, k: int, n: int, queries: int,
    what: str, details: dict | None = None, test: str = RANDOMIZATION_TEST,
) -> Evidence:  # fmt: skip
    """Evidence whose p-value is the true key's rank among all candidate keys' ``scores``.

    Args:
        k, n: the true key's matches of n queries (reported; the decision rests on the rank).
        what: what the candidates are, in words (e.g. "720 class triples (a, b, t)").
    """
    total = n_candidates(scores)
    p = candidate_pvalue(scores, true_index)
    arr = scores.detach().cpu().float()
    stat = float(arr.reshape(-1)[int(np.ravel_multi_index(
        true_index if isinstance(true_index, tuple) else (true_index,), tuple(arr.shape)))])  # fmt: skip
    info = {"candidates": total, "smallest_p": 1.0 / total, "rank_p": p, "candidate_kind": what, **(details or {})}
    return Evidence(
        scheme, k=k, n=n, p0=1.0 / total, queries=queries, details=info, test=test, p_value=p, statistic=stat,
        null_hypothesis=(f"{NULL_HYPOTHESIS}; then the owner's key ranks uniformly among {total} candidate keys "
                         f"({what}) drawn by the same procedure"),
    )  # fmt: skip
