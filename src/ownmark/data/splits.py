"""Disjoint, stratified owner / attacker / test splits of one ImageSet."""

from __future__ import annotations

import math

import torch

from ownmark.data.imageset import ImageSet
from ownmark.errors import ConfigError
from ownmark.types import Splits

PARTS = ("owner", "attacker", "test")


def make_splits(data: ImageSet, *, seed: int, fractions: tuple[float, float, float] = (0.5, 0.3, 0.2)) -> Splits:
    """Split ``data`` into owner, attacker and test parts, stratified by class.

    Each class is shuffled and cut in the proportions ``fractions``, so every part has each class
    in (within one image) the same share as the full set; each part is then shuffled, which also
    breaks up datasets stored sorted by class. All randomness comes from a torch.Generator seeded
    with ``seed``: the same seed gives the same split.

    Args:
        fractions: shares of (owner, attacker, test); each > 0, summing to 1.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> splits = make_splits(toy_images(), seed=0)
        >>> len(splits.owner), len(splits.attacker), len(splits.test)
        (32, 20, 12)
    """
    fractions = tuple(fractions)
    if len(fractions) != 3 or any(not f > 0 for f in fractions) or not math.isclose(sum(fractions), 1, abs_tol=1e-6):
        raise ConfigError(
            f"make_splits fractions must be three numbers > 0 for (owner, attacker, test) summing to 1, "
            f"got {fractions!r}"
        )
    generator = torch.Generator().manual_seed(seed)
    cuts = (fractions[0], fractions[0] + fractions[1])
    parts: dict[str, list[torch.Tensor]] = {part: [] for part in PARTS}
    for label in torch.unique(data.y):  # sorted, so the result does not depend on storage order
        members = torch.nonzero(data.y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        ends = [round(len(members) * c) for c in cuts]  # cumulative cuts: each part within 1 image
        for part, chunk in zip(PARTS, torch.tensor_split(members, ends), strict=True):
            parts[part].append(chunk)
    indices = {}
    for part in PARTS:
        joined = torch.cat(parts[part])
        if len(joined) == 0:
            raise ConfigError(
                f"make_splits: the {part} part of {data.name!r} would be empty with {len(data)} images "
                f"and fractions {fractions}; use more images or a larger {part} fraction"
            )
        indices[part] = joined[torch.randperm(len(joined), generator=generator)]
    return Splits(
        owner=data.subset(indices["owner"]),
        attacker=data.subset(indices["attacker"]),
        test=data.subset(indices["test"]),
        indices=indices,
    )


OOD_PARTS = ("owner", "attacker")
OOD_STREAM = 0x4F4F44  # one fixed rule for every dataset, so the two halves never depend on a caller's seed


def ood_part(data: ImageSet, part: str) -> ImageSet:
    """One of two fixed, disjoint halves of a dataset used as out-of-distribution images.

    The owner draws unrelated triggers from the ``"owner"`` half; every attacker query source
    (distillation with images of another distribution) uses the ``"attacker"`` half, so an attacker
    never queries an owner's verification trigger. The rule is fixed (a per-class shuffle with one
    constant seed, the first ceil(n / 2) of each class to the owner), so both sides find the same
    halves without sharing a seed. An image with an exact copy in the owner's half (photos has one
    such patch) is left out of the attacker's.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> data = toy_images(0, n=10)
        >>> owner, attacker = ood_part(data, "owner"), ood_part(data, "attacker")
        >>> len(owner) + len(attacker), bool(torch.cdist(owner.x.flatten(1), attacker.x.flatten(1)).min() > 0)
        (10, True)
    """
    if part not in OOD_PARTS:
        raise ConfigError(f"ood_part part must be one of {list(OOD_PARTS)}, got {part!r}")
    chosen = _ood_positions(data, part)
    if part == "attacker":  # no exact copy of an owner's image
        _, copies = torch.unique(data.x.flatten(1), dim=0, return_inverse=True)  # one id per distinct image
        taken = torch.zeros(int(copies.max()) + 1, dtype=torch.bool)
        taken[copies[_ood_positions(data, "owner")]] = True
        chosen = chosen[~taken[copies[chosen]]]
    return data.subset(chosen)


def _ood_positions(data: ImageSet, part: str) -> torch.Tensor:
    """Sorted positions of ``part``'s half, before copies are removed."""
    generator = torch.Generator().manual_seed(OOD_STREAM)
    halves = []
    for label in torch.unique(data.y):
        members = torch.nonzero(data.y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        cut = (len(members) + 1) // 2
        halves.append(members[:cut] if part == "owner" else members[cut:])
    return torch.sort(torch.cat(halves)).values
