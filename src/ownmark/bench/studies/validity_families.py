"""The validity benchmark's encoder and image-to-image families: their null zoos and key draws.

The classifier family lives in :mod:`ownmark.bench.studies.nulls_zoo`. Here each family gets what the
benchmark needs to verify many keys against many models made without the owner's secret:

- **encoders** (AWEncoder): the owner's clean SimCLR encoder, encoders pre-trained from other
  seeds, with other SSL methods (MoCo v2, BYOL), another architecture and on the attacker's
  split, fine-tuned nulls (downstream fine-tuning and continued SSL), an encoder stolen from the
  *unmarked* encoder through its feature API (StolenEncoder), an untrained encoder, and feature
  functions from outside the project (scikit-learn's PCA, a fixed random projection of the
  pixels, and a constant feature vector). Keys are redrawn by ``AWEncoder.draw_key`` on the
  owner's clean encoder (the secret variant costs about a second per key; the paper's
  adversarial delta needs a PGD per candidate and is left to the matrix).
- **image-to-image** (deep output watermarking): the owner's unmarked target, targets trained
  independently (other seeds and architectures, the attacker's pairs), the owner's target
  fine-tuned on the attacker's pairs, surrogates trained on the *unmarked* target's outputs
  (the paper's attack, aimed at a model that carries no mark), an untrained network, and
  answerers from outside the project: the identity (the blurred input itself), a constant grey
  image and an unsharp mask (a classical deblurring filter). A deepwm key holds a
  trained extractor R; R never reads the secret bits, so ``DeepWM.with_bits`` redraws the bits of
  a key at no cost and the benchmark spreads its key draws over a few trained extractors
  (``extractors``), each with many secrets: given R, each redraw is a fresh draw of the secret.

Every builder returns ``{name: suspect}`` and a ``{name: kind}`` map; trained suspects are
cached as safetensors under the work folder, so an interrupted run resumes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ownmark.errors import ConfigError

Suspect = nn.Module | Callable[[torch.Tensor], torch.Tensor]


class ConstantFeatures:
    """A feature API that answers one fixed vector for every image (an encoder that ignores its input).

    Example:
        >>> ConstantFeatures(4)(torch.zeros(3, 1, 8, 8)).shape
        torch.Size([3, 4])
    """

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.vector = torch.randn(dim, generator=torch.Generator().manual_seed(seed))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.vector.expand(len(x), -1).clone()


class PixelFeatures:
    """Features from outside the project: a scikit-learn PCA of the flattened pixels, or a fixed
    Gaussian random projection of them (``kind`` ``pca`` or ``random``)."""

    def __init__(self, kind: str, x: torch.Tensor, dim: int, seed: int) -> None:
        flat = x.reshape(len(x), -1).double().numpy()
        if kind == "pca":
            from sklearn.decomposition import PCA

            pca = PCA(n_components=dim, random_state=seed).fit(flat)
            self.mean = torch.from_numpy(pca.mean_).float()
            self.matrix = torch.from_numpy(pca.components_.T.copy()).float()
        elif kind == "random":
            g = torch.Generator().manual_seed(seed)
            self.mean = torch.zeros(flat.shape[1])
            self.matrix = torch.randn(flat.shape[1], dim, generator=g) / flat.shape[1] ** 0.5
        else:
            raise ConfigError(f"PixelFeatures.kind must be 'pca' or 'random', got {kind!r}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(len(x), -1).float() - self.mean) @ self.matrix


class ConstantImage:
    """An image-to-image answerer that returns one grey image whatever it is asked."""

    def __init__(self, value: float = 0.5) -> None:
        self.value = value

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


class Identity:
    """An image-to-image answerer that returns its input (the degraded image itself)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class UnsharpMask:
    """A classical deblurring filter, no training: ``x + amount * (x - gaussian(x))`` per channel, with
    scipy's Gaussian filter (scikit-image's ``unsharp_mask`` returned NaNs here now and then, after
    long runs in one process, so the two lines are written out)."""

    def __init__(self, radius: float = 1.5, amount: float = 1.5) -> None:
        self.radius, self.amount = radius, amount

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from scipy.ndimage import gaussian_filter

        arr = x.double().contiguous().numpy()
        blurred = gaussian_filter(arr, sigma=(0, 0, self.radius, self.radius), mode="reflect")
        return torch.from_numpy(arr + self.amount * (arr - blurred)).float().clamp(0, 1)


def _cached(path: Path, build: Callable[[], nn.Module]) -> nn.Module:
    from ownmark.io import artefact_paths
    from ownmark.models import load_model, save_model

    if artefact_paths(path)[1].is_file():
        return load_model(path)[0].eval()
    model = build().eval()
    save_model(path, model, info={"validity": path.name})
    return model


# ----------------------------------------------------------------------------------------- encoders
ENCODER_SUSPECTS = (
    # name, kind, arch, SSL method, seed, split
    ("owner-unmarked", "owner", "", "", 0, "owner"),
    ("conv4-simclr-seed201", "trained", "conv4", "simclr", 201, "owner"),
    ("conv4-simclr-seed202", "trained", "conv4", "simclr", 202, "owner"),
    ("conv4-simclr-seed211-attacker", "trained", "conv4", "simclr", 211, "attacker"),
    ("conv4-moco-seed203-attacker", "trained", "conv4", "moco", 203, "attacker"),
    ("conv4-byol-seed204-attacker", "trained", "conv4", "byol", 204, "attacker"),
    ("resnet-s-simclr-seed205-attacker", "trained", "resnet-s", "simclr", 205, "attacker"),
    ("owner-unmarked+finetuned", "finetuned", "", "", 221, "attacker"),
    ("conv4-simclr-seed201+finetuned", "finetuned", "", "", 222, "attacker"),
    ("owner-unmarked+ssl", "ssl", "", "", 223, "attacker"),
    ("stolen-from-owner-unmarked", "stolen", "conv4", "", 231, "attacker"),
    ("untrained-conv4", "untrained", "conv4", "", 241, ""),
    ("constant-features", "constant", "", "", 0, ""),
    ("pca-features", "sklearn", "pca", "", 0, "attacker"),
    ("random-projection", "sklearn", "random", "", 1, ""),
)
ENCODER_SUSPECTS_TINY = tuple(s for s in ENCODER_SUSPECTS if s[0] in (
    "owner-unmarked", "conv4-simclr-seed211-attacker", "owner-unmarked+finetuned", "constant-features",
    "pca-features", "untrained-conv4",
))  # fmt: skip


def encoder_zoo(
    ctx: Any, owner: nn.Module, cache: Path, *, arch: str, ssl_epochs: int, size: str = "default"
) -> tuple[dict[str, Suspect], dict[str, str]]:
    """The encoder suspects (see the module docstring) and their kinds, built or loaded from ``cache``."""
    from ownmark.attacks.encoder_attacks import EncoderFineTune, EncoderFineTuneConfig, EncoderSSL
    from ownmark.attacks.stolen_encoder import StolenEncoder
    from ownmark.families.encoder import encoder_settings, train_encoder
    from ownmark.models import ModelSpec
    from ownmark.train import Engine, cpu_seeded

    specs = _sized(ENCODER_SUSPECTS, ENCODER_SUSPECTS_TINY, size)
    raw = {"arch": arch, "ssl": {"epochs": ssl_epochs}}
    dim = int(owner(ctx.splits.owner.x[:2]).shape[1])
    out: dict[str, Suspect] = {}
    kinds: dict[str, str] = {}
    for name, kind, a, method, seed, split in specs:
        data = ctx.splits.attacker if split == "attacker" else ctx.splits.owner
        path = Path(cache) / name
        if kind == "owner":
            out[name] = owner
        elif kind == "trained":
            out[name] = _cached(path, lambda a=a, m=method, s=seed, sp=split: train_encoder(
                ctx, encoder_settings({**raw, "arch": a}), a, m, s, sp, Engine()))  # fmt: skip
        elif kind == "finetuned":
            base = out[name.split("+")[0]]
            out[name] = _cached(path, lambda b=base, s=seed, d=data: EncoderFineTune(EncoderFineTuneConfig(lr=1e-3))(
                b, d, seed=s)[0])  # fmt: skip
        elif kind == "ssl":
            out[name] = _cached(path, lambda s=seed, d=data: EncoderSSL()(owner, d, seed=s)[0])
        elif kind == "stolen":
            out[name] = _cached(path, lambda s=seed, d=data: StolenEncoder()(owner, d, seed=s)[0])
        elif kind == "untrained":
            with cpu_seeded(seed):
                c, h, _ = ctx.splits.owner.shape
                out[name] = ModelSpec(a, c, dim, h, family="encoder").build().eval()
        elif kind == "constant":
            out[name] = ConstantFeatures(dim, seed)
        else:
            out[name] = PixelFeatures(a, ctx.splits.attacker.x, min(dim, 64), seed)
        kinds[name] = kind
    return out, kinds


# --------------------------------------------------------------------------------- image-to-image
I2I_SUSPECTS = (
    # name, kind, arch, seed, split
    ("owner-unmarked", "owner", "", 0, "owner"),
    ("encdec-seed301", "trained", "encdec", 301, "owner"),
    ("encdec-seed302", "trained", "encdec", 302, "owner"),
    ("unet-seed303", "trained", "unet", 303, "owner"),
    ("resnet-i2i-seed304-attacker", "trained", "resnet-i2i", 304, "attacker"),
    ("encdec-seed305-attacker", "trained", "encdec", 305, "attacker"),
    ("owner-unmarked+finetuned", "finetuned", "", 311, "attacker"),
    ("surrogate-unet-of-owner-unmarked", "surrogate", "unet", 321, "attacker"),
    ("surrogate-encdec-of-owner-unmarked", "surrogate", "encdec", 322, "attacker"),
    ("untrained-encdec", "untrained", "encdec", 331, ""),
    ("identity", "identity", "", 0, ""),
    ("constant-grey", "constant", "", 0, ""),
    ("unsharp-mask", "filter", "", 0, ""),
)
I2I_SUSPECTS_TINY = tuple(s for s in I2I_SUSPECTS if s[0] in (
    "owner-unmarked", "encdec-seed305-attacker", "surrogate-encdec-of-owner-unmarked", "identity", "constant-grey",
    "unsharp-mask",
))  # fmt: skip


def train_target(pairs: Any, arch: str, seed: int, epochs: int) -> nn.Module:
    """An image-to-image network of ``arch`` trained from ``seed`` on ``pairs``."""
    from ownmark.models import ModelSpec
    from ownmark.train.image2image import I2ITrainConfig, fit_i2i, seeded

    spec = ModelSpec(arch, pairs.x.shape[1], pairs.y.shape[1], pairs.x.shape[-1], family="image2image")
    model = seeded(spec.build, seed)
    fit_i2i(model, pairs.x, pairs.y, I2ITrainConfig(epochs=epochs), seed=seed)
    return model.eval()


def i2i_zoo(
    splits: Any, owner: nn.Module, cache: Path, *, epochs: int, size: str = "default"
) -> tuple[dict[str, Suspect], dict[str, str]]:
    """The image-to-image suspects (see the module docstring) and their kinds."""
    from ownmark.attacks.surrogate import Surrogate, SurrogateConfig
    from ownmark.models import ModelSpec
    from ownmark.train.image2image import I2ITrainConfig, fit_i2i, seeded

    specs = _sized(I2I_SUSPECTS, I2I_SUSPECTS_TINY, size)
    out: dict[str, Suspect] = {}
    kinds: dict[str, str] = {}
    for name, kind, arch, seed, split in specs:
        pairs = splits.attacker if split == "attacker" else splits.owner
        path = Path(cache) / name
        if kind == "owner":
            out[name] = owner
        elif kind == "trained":
            out[name] = _cached(path, lambda a=arch, s=seed, p=pairs: train_target(p, a, s, epochs))
        elif kind == "finetuned":

            def tune(s: int = seed, p: Any = pairs) -> nn.Module:
                tuned = copy.deepcopy(owner)
                fit_i2i(tuned, p.x, p.y, I2ITrainConfig(epochs=max(1, epochs // 3), lr=1e-4), seed=s)
                return tuned

            out[name] = _cached(path, tune)
        elif kind == "surrogate":
            attack = Surrogate(SurrogateConfig(arch=arch, epochs=epochs))
            out[name] = _cached(path, lambda at=attack, s=seed, p=pairs: at(owner, p.x, seed=s)[0])
        elif kind == "untrained":
            spec = ModelSpec(arch, pairs.x.shape[1], pairs.y.shape[1], pairs.x.shape[-1], family="image2image")
            out[name] = seeded(spec.build, seed).eval()
        elif kind == "identity":
            out[name] = Identity()
        elif kind == "constant":
            out[name] = ConstantImage()
        else:
            out[name] = UnsharpMask()
        kinds[name] = kind
    return out, kinds


def deepwm_keys(scheme: Any, owner: nn.Module, inputs: Any, seeds: list[int], *, extractors: int) -> list[Any]:
    """``len(seeds)`` deepwm keys over ``extractors`` trained extractors: key ``i`` holds the extractor
    drawn from ``seeds[i % extractors]`` and its secret bits redrawn from ``seeds[i]`` (the first
    ``extractors`` keys are the drawn keys themselves, as ``embed`` would make them)."""
    if extractors < 1:
        raise ConfigError(f"the image-to-image validity bench needs >= 1 extractor, got {extractors}")
    drawn = [scheme.draw_key(owner, inputs, seed=s) for s in seeds[:extractors]]
    return [drawn[i] if i < extractors else scheme.with_bits(drawn[i % extractors], s) for i, s in enumerate(seeds)]


def _sized(full: tuple, tiny: tuple, size: str) -> tuple:
    if size not in ("default", "tiny"):
        raise ConfigError(f"zoo size must be 'default' or 'tiny', got {size!r}")
    return full if size == "default" else tiny
