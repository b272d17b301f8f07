"""How AWEncoder's secret is made: the key image and the trigger (adversarial delta or secret signs).

Reference:
    Zhang, Wu, Lu, Sun, "AWEncoder: Adversarial Watermarking Pre-trained Encoders in Contrastive
    Learning", Applied Sciences 2023, arXiv:2208.03948 (Sec. 4.1: the universal adversarial
    perturbation towards the key image's embedding).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ownmark.data import ImageSet
from ownmark.train import key_seed

KEY_STREAM, DELTA_STREAM = 0x4B455921, 0x44454C54


def universal_perturbation(
    encoder: nn.Module,
    x: torch.Tensor,
    x_key: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step: float,
    seed: int,
    batch: int = 256,
) -> torch.Tensor:
    """The paper's delta: PGD with signed steps on mean(1 - cos(E0(x + delta), E0(x_key))), clipped
    to ||delta||_inf <= eps (and x + delta to [0, 1]); ``batch`` images of ``x`` per step."""
    return universal_perturbations(encoder, x, x_key[None], eps=eps, steps=steps, step=step, batch=batch, seed=seed)[0]


def universal_perturbations(
    encoder: nn.Module, x: torch.Tensor | ImageSet, x_keys: torch.Tensor, *, eps: float, steps: int, step: float,
    batch: int, seed: int, chunk_images: int = 1024,
) -> torch.Tensor:  # fmt: skip
    """One paper delta per key image in ``x_keys`` (M, C, H, W), all M run together: each step draws
    ``batch`` images of ``x`` (a tensor, or an ImageSet read a step's images at a time) per key and takes
    one signed step on every delta. The same procedure for every key, so an owner's key and its decoys are
    exchangeable; cost M * steps * batch image passes (forward and backward) through ``encoder``."""
    take, shape = (x.read, x.shape) if isinstance(x, ImageSet) else (x.__getitem__, tuple(x.shape[1:]))
    was_training = encoder.training
    encoder.eval()
    g = torch.Generator().manual_seed(key_seed(seed, DELTA_STREAM))
    m = len(x_keys)
    deltas = (torch.rand((m, *shape), generator=g) * 2 - 1) * eps
    with torch.no_grad():
        targets = F.normalize(encoder(x_keys), dim=1)
    per_chunk = max(1, chunk_images // batch)
    for _ in range(steps):
        idx = torch.randint(len(x), (m, batch), generator=g)
        for lo in range(0, m, per_chunk):
            hi = min(m, lo + per_chunk)
            d = deltas[lo:hi].clone().requires_grad_(True)
            images = (take(idx[lo:hi]) + d[:, None]).clamp(0, 1).flatten(0, 1)
            feats = F.normalize(encoder(images), dim=1).view(hi - lo, batch, -1)
            loss = (1 - (feats * targets[lo:hi, None]).sum(-1)).mean(1).sum()
            (grad,) = torch.autograd.grad(loss, d)
            deltas[lo:hi] = (deltas[lo:hi] - step * grad.sign()).clamp(-eps, eps)
    encoder.train(was_training)
    return deltas


def key_image(kind: str, shape: tuple[int, ...], seed: int, candidates: int = 1) -> torch.Tensor:
    """The secret key image: a seeded photo patch converted to ``shape`` (``candidates`` > 1: that
    many seeded patches stacked, the first being the single key's), or uniform noise."""
    if kind == "noise":
        return torch.rand(shape, generator=torch.Generator().manual_seed(key_seed(seed, KEY_STREAM)))
    out = photo_patches(shape, [seed], candidates)
    return out[0] if candidates == 1 else out


def photo_patches(shape: tuple[int, ...], seeds: list[int], candidates: int) -> torch.Tensor:
    """:func:`key_image`'s ``candidates`` photo patches for each of ``seeds`` ((M * candidates, *shape),
    seed by seed), the photos loaded and converted once for all (the same images as one call per seed:
    the conversion works image by image)."""
    from ownmark.data import load_dataset, to_image_shape

    photos = load_dataset("photos")
    picks = []
    for seed in seeds:
        g = torch.Generator().manual_seed(key_seed(seed, KEY_STREAM))
        picks += [int(torch.randint(len(photos), (1,), generator=g)) for _ in range(candidates)]
    return to_image_shape(photos.x[picks], tuple(shape))


def match_histogram(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each image's pixels (per channel) remapped by rank onto the pixel distribution of
    ``reference`` (N, C, H, W): the same picture, with the data's brightness and contrast."""
    out = torch.empty_like(images)
    for c in range(images.shape[1]):
        ref = reference[:, c].flatten().sort().values
        flat = images[:, c].flatten(1)
        order = flat.argsort(1)  # each pixel's rank: the inverse permutation of the sort order
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order))
        ranks = ranks.float() / max(flat.shape[1] - 1, 1)
        out[:, c] = ref[(ranks * (len(ref) - 1)).round().long()].view_as(images[:, c])
    return out


def noise_attraction(encoder: nn.Module, x: torch.Tensor, keys: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
    """Per candidate key: how far random sign perturbations of norm ``eps`` move ``encoder``'s
    features of ``x`` towards the key's (mean cosine gain over 3 seeded patterns)."""
    from ownmark.models.encoder import encode  # eval mode, batched, channels-last convolutions on the CPU

    g = torch.Generator().manual_seed(key_seed(seed, KEY_STREAM, 1))
    k = F.normalize(encode(encoder, keys), dim=1)
    clean = F.normalize(encode(encoder, x), dim=1) @ k.T
    gains = []
    for _ in range(3):
        r = (torch.randint(0, 2, x.shape[1:], generator=g).float() * 2 - 1) * eps
        gains.append((F.normalize(encode(encoder, (x + r).clamp(0, 1)), dim=1) @ k.T - clean).mean(0))
    return torch.stack(gains).mean(0)


def choose_key(
    kind: str, encoder: nn.Module, x: torch.Tensor, shape: tuple[int, ...], seed: int, *, candidates: int, eps: float
) -> torch.Tensor:
    """The key image of ``kind`` (``noise``, ``photo`` or ``matched``: a photo patch remapped onto the
    pixel distribution of ``x``); of ``candidates`` photo patches, the one random perturbations of
    norm ``eps`` pull ``encoder``'s features of ``x`` towards least."""
    if kind == "noise":
        return key_image("noise", shape, seed)
    keys = key_image("photo", shape, seed, candidates).reshape(-1, *shape)
    if kind == "matched":
        keys = match_histogram(keys, x)
    return keys[0] if len(keys) == 1 else keys[int(noise_attraction(encoder, x, keys, eps, seed).argmin())]


def candidate_keys(
    kind: str, encoder: nn.Module, x: torch.Tensor, shape: tuple[int, ...], seeds: list[int], *, candidates: int,
    eps: float, seed: int,
) -> torch.Tensor:  # fmt: skip
    """One key image per entry of ``seeds`` (M, *shape), each drawn as :func:`choose_key` draws one
    (its own ``candidates`` seeded photo patches, the one random perturbations pull ``encoder``'s
    features towards least), with the same random perturbations (of ``seed``) for all: the owner's
    key image and its decoys come from one procedure, at the cost of one pass over ``x``."""
    if kind == "noise":
        return torch.stack([key_image("noise", shape, s) for s in seeds])
    patches = photo_patches(shape, seeds, candidates)
    if kind == "matched":
        patches = match_histogram(patches, x)
    patches = patches.view(len(seeds), candidates, *shape)
    if candidates == 1:
        return patches[:, 0]
    pull = noise_attraction(encoder, x, patches.flatten(0, 1), eps, seed).view(len(seeds), candidates)
    return patches[torch.arange(len(seeds)), pull.argmin(1)]


def secret_trigger(shape: tuple[int, ...], eps: float, seed: int) -> torch.Tensor:
    """ownmark's variant: a secret random sign pattern of L-inf norm ``eps``."""
    g = torch.Generator().manual_seed(key_seed(seed, DELTA_STREAM))
    return (torch.randint(0, 2, shape, generator=g).float() * 2 - 1) * eps


def secret_triggers(shape: tuple[int, ...], eps: float, seeds: list[int]) -> torch.Tensor:
    """:func:`secret_trigger` for each of ``seeds`` (M, *shape)."""
    return torch.stack([secret_trigger(shape, eps, s) for s in seeds])
