"""Image-to-image networks: images in, images out (deep output watermarking).

Bench rows run on a bundled photo-patch task (owner, attacker and test pairs of
:func:`ownmark.data.image2image.load_task`); utility is the SSIM of the model's outputs against
the ground truth on the test pairs; the nulls are targets trained independently (other seeds,
architectures, the attacker's pairs). Bench settings live under ``image2image`` in a matrix
config (:data:`DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from torch import nn

from ownmark.errors import ConfigError
from ownmark.families.base import FAMILIES, Family, NullSpec

if TYPE_CHECKING:
    from ownmark.bench.plan import MatrixConfig

DEFAULTS: dict[str, Any] = {
    "task": "deblur",  # or TASK@SOURCE: deblur@folder:PATH (a user's images, any size)
    "arch": "encdec",
    "epochs": 10,  # the target's training epochs (the i2i bench's CPU preset)
    "nulls": [["encdec", 301, "owner"], ["unet", 302, "owner"], ["resnet-i2i", 303, "attacker"]],
}


@dataclass(frozen=True)
class I2ISettings:
    """The checked ``image2image`` section of a matrix config (fields as in :data:`DEFAULTS`)."""

    task: str
    arch: str
    epochs: int
    nulls: tuple[tuple[str, int, str], ...]


def i2i_settings(raw: dict[str, Any]) -> I2ISettings:
    """A matrix's ``image2image`` section over :data:`DEFAULTS`, checked."""
    from ownmark.data.image2image import parse_task
    from ownmark.models.image2image import check_i2i_arch

    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} under `image2image`; known: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **raw}
    parse_task(out["task"])
    check_i2i_arch(out["arch"])
    for entry in out["nulls"]:
        if len(entry) != 3 or entry[2] not in ("owner", "attacker"):
            raise ConfigError(f"each `image2image.nulls` entry is [arch, seed, owner|attacker], got {entry!r}")
        check_i2i_arch(entry[0])
    if isinstance(out["epochs"], bool) or not isinstance(out["epochs"], int) or out["epochs"] < 1:
        raise ConfigError(f"`image2image.epochs` is a positive int, got {out['epochs']!r}")
    nulls = tuple((str(a), int(s), str(p)) for a, s, p in out["nulls"])
    return I2ISettings(task=out["task"], arch=out["arch"], epochs=out["epochs"], nulls=nulls)


def train_i2i(splits: Any, settings: I2ISettings, arch: str, seed: int, split: str, engine: Any = None) -> nn.Module:
    """An image-to-image model of ``arch`` trained on the owner's or the attacker's pairs."""
    from ownmark.train.image2image import I2ITrainConfig

    config = I2ITrainConfig(epochs=settings.epochs)
    return FAMILIES.get("image2image").fit(arch, getattr(splits, split), seed=seed, config=config, engine=engine)


class Image2Image(Family):
    """Image-to-image networks: ``encdec``, ``unet``, ``resnet-i2i``, ``conv3``; utility is output SSIM."""

    name = "image2image"
    description = "image-to-image networks: images in, images out (deep output watermarking)"
    serve_kinds = ("images",)
    utility_name = "output SSIM"
    default_arch = "encdec"
    default_dataset = "deblur"
    utility_key = "test_ssim"
    utility_metric = "ssim"
    metrics = ("ssim", "psnr")
    utility_short = "SSIM"
    outputs = "channels"
    section = "image2image"
    report_note = (
        "For image-to-image schemes the accuracy is the SSIM (in percent) of the model's outputs against the "
        "ground truth on the test pairs, and the verdict is the exact hypergeometric test of the bit string the "
        "extractor decodes from the suspect's mean output against the secret balanced bits (the extractor never "
        "saw them)."
    )

    def archs(self) -> list[str]:
        from ownmark.models.image2image import I2I_MODELS

        return I2I_MODELS.names()

    def owns_arch(self, arch: str) -> bool:
        """A registered name, or one with a depth (``unet:4``, ``encdec:3``, ``resnet-i2i:6``)."""
        from ownmark.errors import OwnmarkError
        from ownmark.models.image2image import split_depth

        try:
            split_depth(arch)
        except OwnmarkError:
            return False
        return True

    def build(self, arch: str, in_channels: int, out_dim: int, image_size: int) -> nn.Module:
        from ownmark.models.image2image import build_i2i

        return build_i2i(arch, in_channels, out_dim, image_size)

    def spec(self, arch: str, data: Any, out_dim: int | None = None):
        from ownmark.models import ModelSpec

        return ModelSpec(arch, data.x.shape[1], out_dim or data.y.shape[1], data.x.shape[-1], family=self.name)

    def toy(self, seed: int = 0) -> tuple[nn.Module, Any]:
        import torch

        from ownmark.data.image2image import Pairs
        from ownmark.train import cpu_seeded

        g = torch.Generator().manual_seed(seed)
        y = torch.rand(32, 3, 16, 16, generator=g)
        data = Pairs("toy", (y + 0.1 * torch.randn(y.shape, generator=g)).clamp(0, 1), y)
        with cpu_seeded(seed):
            return self.spec("conv3", data).build(), data

    def load_splits(self, dataset: str, split_seed: int) -> Any:
        """The pairs of a task (``denoise``, ``deblur``, ``colourise``) on the bundled photo patches, or
        on any dataset as ``TASK@SOURCE`` (e.g. ``deblur@folder:/data/faces``: a user's images, any size)."""
        from ownmark.data.image2image import load_task, parse_task

        task, source = parse_task(dataset)
        return load_task(task, split_seed=split_seed, dataset=source)

    def train_config(self, overrides: dict[str, str]) -> Any:
        from ownmark.train.image2image import I2ITrainConfig
        from ownmark.watermarks import apply_overrides

        return apply_overrides(I2ITrainConfig(), overrides)

    def fit(self, arch: str, data: Any, *, seed: int, config: Any, engine: Any = None, checkpoint: Any = None,
            resume: bool = False, out_dim: int | None = None) -> nn.Module:  # fmt: skip
        """Train on the pairs ``data`` with the image-to-image trainer, on ``engine``."""
        from ownmark.train import Engine
        from ownmark.train.image2image import fit_i2i, seeded

        model = seeded(self.spec(arch, data, out_dim).build, seed)
        fit_i2i(model, data.x, data.y, config, seed=seed, checkpoint=checkpoint, resume=resume,
                engine=engine or Engine())  # fmt: skip
        return model.eval()

    def embed_note(self, clean: nn.Module, marked: nn.Module, splits: Any) -> str:
        """PSNR and SSIM of the marked model's outputs against the clean model's, on the test inputs."""
        from ownmark.train.image2image import predict
        from ownmark.verify.metrics import psnr, ssim

        b, bp = predict(clean, splits.test.x), predict(marked, splits.test.x)
        return f"PSNR {psnr(bp, b):.2f} dB, SSIM {ssim(bp, b):.4f} (marked vs clean outputs, test split)"

    def parse_settings(self, config: MatrixConfig) -> I2ISettings:
        return i2i_settings(config.image2image or {})

    def plan_data(self, dataset: str, split_seed: int) -> dict[str, Any]:
        return {"split_seed": split_seed, "image2image": {"task": dataset}}

    def load(self, config: MatrixConfig) -> Any:
        return SimpleNamespace(splits=self.load_splits(self.settings(config).task, config.split_seed))

    def rehearse(self, config: MatrixConfig, raw: dict[str, Any]) -> None:
        raw["image2image"] = {**(config.image2image or {}), "epochs": 1}

    def clean_spec(self, config: MatrixConfig, seed: int) -> NullSpec:
        return NullSpec(self.clean_name(seed), self.name, self.settings(config).arch, seed, "owner")

    def nulls(self, config: MatrixConfig) -> list[NullSpec]:
        return [NullSpec(f"i2i-{a}-seed{s}" + ("-attacker-data" if split == "attacker" else ""), self.name, a, s,
                         split) for a, s, split in self.settings(config).nulls]  # fmt: skip

    def train(self, data: Any, config: MatrixConfig, null: NullSpec, engine: Any) -> nn.Module:
        return train_i2i(data.splits, self.settings(config), null.arch, null.seed, null.split, engine)

    def prepare_suspect(self, model: nn.Module, data: Any, config: MatrixConfig) -> dict[str, float]:
        """``task_psnr``: the PSNR of the model's outputs against the ground truth on the test pairs."""
        from ownmark.train.image2image import predict
        from ownmark.verify.metrics import psnr

        test = data.splits.test
        return {"task_psnr": psnr(predict(model, test.x), test.y)}

    def extra_evidence(self, scheme: Any, key: Any, evidence: Any, suspect: Any, config: MatrixConfig,
                       alpha: float) -> dict[str, Any]:  # fmt: skip
        """The paper's figures beside the bit test's verdict (``ownmark bench image2image`` reports them):
        ``nc_success`` (share of probe outputs whose extraction has centred NC above the key's threshold),
        mean centred and raw NC, ``raw_nc_success``, the bit accuracy of R's mean extraction and per image,
        and the suspect's ``task_psnr`` (:meth:`prepare_suspect`)."""
        d = evidence.details
        return {
            "nc_success": d.get("success"), "centred_nc": d.get("centred_nc"), "raw_nc": d.get("raw_nc"),
            "raw_nc_success": d.get("raw_success"), "bit_accuracy": d.get("bit_accuracy"),
            "bit_accuracy_per_image": d.get("bit_accuracy_per_image"), **(suspect or {}),
        }  # fmt: skip


FAMILIES.register("image2image")(Image2Image())
