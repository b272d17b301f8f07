"""Self-supervised image encoders: images in, feature vectors out (AWEncoder, StolenEncoder).

Utility is the linear-probe accuracy of frozen features (a linear classifier fitted on the
attacker's labelled split, scored on the test split). Bench settings live under ``encoder`` in a
matrix config (:data:`DEFAULTS`): the clean encoders' architecture, feature dimension and SSL
overrides, the >= 5 calibration encoders that set a key's null margin, the null encoders every key
is verified with (other seeds, SSL methods, architectures, the attacker's data) and the learning
rates at which each null is also fine-tuned downstream, as a suspect met in the wild would be.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from ownmark.errors import ConfigError
from ownmark.families.base import FAMILIES, Family, NullSpec

if TYPE_CHECKING:
    from ownmark.bench.plan import MatrixConfig

DEFAULTS: dict[str, Any] = {
    "arch": "conv4",
    "dim": 128,
    "ssl": {},  # SSLConfig overrides for the clean and null encoders (default SimCLR, 10 epochs)
    "calibration": [["conv4", "simclr", s] for s in (101, 102, 103, 104, 105)],
    "nulls": [
        ["conv4", "simclr", 201, "attacker"], ["conv4", "simclr", 202, "attacker"], ["conv4", "moco", 203, "attacker"],
        ["conv4", "byol", 204, "attacker"], ["resnet-s", "simclr", 205, "attacker"],
    ],
    # every null encoder is also verified after downstream fine-tuning (enc-finetune, Adam) at these
    # rates, and keys are calibrated on their calibration nulls so adapted: a suspect met in the wild
    # is adapted, and so must be the negative controls
    "adapt_lrs": [0.001, 0.01],
    # also verify every encoder row black-box: a linear classifier fitted on the attacker's labelled split
    # over the suspect's features, queried for labels only (AWEncoder.detect_blackbox); off in `quick`
    "blackbox": False,
}  # fmt: skip


@dataclass(frozen=True)
class EncoderSettings:
    """The checked ``encoder`` section of a matrix config (fields as in :data:`DEFAULTS`)."""

    arch: str
    dim: int
    ssl: dict[str, Any]
    calibration: tuple[tuple[str, str, int], ...]
    nulls: tuple[tuple[str, str, int, str], ...]
    adapt_lrs: tuple[float, ...]
    blackbox: bool

    def ssl_config(self, method: str):
        """The SSL recipe of the section's encoders, pre-trained with ``method``."""
        from ownmark.train.ssl import SSLConfig

        try:
            return SSLConfig(**{**self.ssl, "method": method})
        except TypeError as err:
            raise ConfigError(f"`encoder.ssl` has a setting SSLConfig does not know: {err}") from None


def encoder_settings(raw: dict[str, Any]) -> EncoderSettings:
    """A matrix's ``encoder`` section over :data:`DEFAULTS`, checked."""
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} under `encoder`; known: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **raw}
    if len(out["calibration"]) < 5:
        raise ConfigError(
            f"`encoder.calibration` needs >= 5 null encoders [arch, method, seed], got {out['calibration']}"
        )
    for entry in out["calibration"]:
        if len(entry) != 3:
            raise ConfigError(f"each `encoder.calibration` entry is [arch, SSL method, seed], got {entry!r}")
    if not all(isinstance(lr, (int, float)) and lr > 0 for lr in out["adapt_lrs"]):
        raise ConfigError(f"`encoder.adapt_lrs` is a list of positive learning rates, got {out['adapt_lrs']!r}")
    if not isinstance(out["blackbox"], bool):
        raise ConfigError(f"`encoder.blackbox` is true or false, got {out['blackbox']!r}")
    for entry in out["nulls"]:
        if len(entry) != 4 or entry[3] not in ("owner", "attacker"):
            raise ConfigError(f"each `encoder.nulls` entry is [arch, SSL method, seed, owner|attacker], got {entry!r}")
    if not isinstance(out["ssl"], dict):
        raise ConfigError(f"`encoder.ssl` is a mapping of SSL settings, got {out['ssl']!r}")
    if isinstance(out["dim"], bool) or not isinstance(out["dim"], int) or out["dim"] < 1:
        raise ConfigError(f"`encoder.dim` is a positive int (the feature dimension), got {out['dim']!r}")
    settings = EncoderSettings(
        arch=str(out["arch"]), dim=out["dim"], ssl=dict(out["ssl"]),
        calibration=tuple((str(a), str(m), int(s)) for a, m, s in out["calibration"]),
        nulls=tuple((str(a), str(m), int(s), str(p)) for a, m, s, p in out["nulls"]),
        adapt_lrs=tuple(float(lr) for lr in out["adapt_lrs"]), blackbox=out["blackbox"],
    )  # fmt: skip
    settings.ssl_config("simclr")  # an unknown SSL setting fails here, before any task runs
    return settings


def calibration_nulls(settings: EncoderSettings) -> list[NullSpec]:
    """The encoders an encoder key's null margin is set on (never among the verified nulls)."""
    return [NullSpec(f"calib-{a}-{m}-seed{s}", "encoder", a, s, "owner", m) for a, m, s in settings.calibration]


def train_encoder(data: Any, settings: EncoderSettings, arch: str, method: str, seed: int, split: str,
                  engine) -> nn.Module:  # fmt: skip
    """An encoder of ``arch`` pre-trained with ``method`` on the owner's or the attacker's split of
    ``data`` (an object with ``.splits``)."""
    return FAMILIES.get("encoder").fit(
        arch, getattr(data.splits, split), seed=seed, config=settings.ssl_config(method), engine=engine,
        out_dim=settings.dim,
    )  # fmt: skip


class Encoder(Family):
    """Encoders: ``conv4``, ``resnet-s``, ``tv:NAME``, ``timm:NAME``; utility is linear-probe accuracy."""

    name = "encoder"
    description = "self-supervised image encoders: images in, feature vectors out (AWEncoder, StolenEncoder)"
    serve_kinds = ("features",)
    utility_name = "linear-probe accuracy"
    default_arch = "conv4"
    utility_key = "probe_accuracy"
    utility_metric = "linear-probe"
    metrics = ("linear-probe", "knn")
    utility_short = "probe"
    outputs = "features"
    outputs_fixed = False
    section = "encoder"
    report_note = (
        "For encoder schemes the accuracy is the linear-probe accuracy of the encoder's frozen features (a linear "
        "classifier fitted on the attacker's labelled split, scored on the test split), and the verdict is the "
        "white-box rank test (the owner's key ranked among the decoy keys drawn by the same procedure, by the "
        "suspect's mean key effect)."
    )

    def archs(self) -> list[str]:
        from ownmark.models import ENCODERS

        return ENCODERS.names()

    def build(self, arch: str, in_channels: int, out_dim: int, image_size: int) -> nn.Module:
        from ownmark.models.encoder import build_encoder

        return build_encoder(arch, in_channels, out_dim, image_size)

    def spec(self, arch: str, data: Any, out_dim: int | None = None):
        from ownmark.models import ModelSpec

        c, h, _ = data.shape
        return ModelSpec(arch, c, out_dim or int(DEFAULTS["dim"]), h, family=self.name)

    def toy(self, seed: int = 0) -> tuple[nn.Module, Any]:
        from ownmark.data.toy import toy_images
        from ownmark.train import cpu_seeded

        data = toy_images(seed)
        with cpu_seeded(seed):
            return self.spec("conv4", data, 16).build(), data

    def train_config(self, overrides: dict[str, str]) -> Any:
        from ownmark.train.ssl import SSLConfig
        from ownmark.watermarks import apply_overrides

        return apply_overrides(SSLConfig(), overrides)

    def fit(self, arch: str, data: Any, *, seed: int, config: Any, engine: Any = None, checkpoint: Any = None,
            resume: bool = False, out_dim: int | None = None) -> nn.Module:  # fmt: skip
        """Pre-train with ``config.method`` (SimCLR, MoCo or BYOL)."""

        from ownmark.train import Engine, cpu_seeded, key_seed
        from ownmark.train.ssl import pretrain

        with cpu_seeded(key_seed(seed, 3)):
            encoder = self.spec(arch, data, out_dim).build()
        pretrain(encoder, data, config, seed=seed, engine=engine or Engine(), checkpoint=checkpoint, resume=resume)
        return encoder.eval()

    def describe_attack(self, name: str, victim: nn.Module | None, attacked: nn.Module, splits: Any,
                        seed: int) -> str:  # fmt: skip
        """Downstream probes (full / 10-shot) of the victim and the attacked encoder, and their feature CKA."""
        from ownmark.attacks.encoder_eval import describe_theft

        text = describe_theft(victim, attacked, splits.attacker, splits.test, seed=seed)
        return text if name == "stolenencoder" else text.replace("stolen encoder", "attacked encoder")

    def after_embed(self, scheme: Any, key: Any, clean: nn.Module, splits: Any, *, nulls: int, engine: Any) -> Any:
        """Calibrate the key's null margin on ``nulls`` (>= 5) encoders of the clean one's architecture,
        pre-trained here on the owner's split with the scheme's SSL recipe and seeds 10,000 + i."""
        if nulls < 5:
            raise ConfigError(f"--nulls must be at least 5 (the margin needs them), got {nulls}")
        spec = clean.spec
        calib = {
            f"null-{i}": self.fit(
                spec.arch, splits.owner, seed=10_000 + i, config=scheme.config.ssl, engine=engine, out_dim=spec.out_dim
            )  # fmt: skip
            for i in range(nulls)
        }
        return scheme.calibrate(key, calib, probe=(splits.attacker, splits.test))

    def parse_settings(self, config: MatrixConfig) -> EncoderSettings:
        return encoder_settings(config.encoder or {})

    def rehearse(self, config: MatrixConfig, raw: dict[str, Any]) -> None:
        s = self.settings(config)
        first_per_arch = {}  # the first null encoder of each architecture, in the config's order
        for null in s.nulls:
            first_per_arch.setdefault(null[0], list(null))
        raw["encoder"] = {
            **(config.encoder or {}), "ssl": {**s.ssl, "epochs": 1},  # the >= 5 calibration encoders stay, at 1 epoch
            "nulls": list(first_per_arch.values()),
        }  # fmt: skip

    def load(self, config: MatrixConfig) -> Any:
        from ownmark.families.classifier import Context

        return Context.load(config.dataset, config.split_seed)  # the classifiers' split: probes need its labels

    def clean_spec(self, config: MatrixConfig, seed: int) -> NullSpec:
        s = self.settings(config)
        return NullSpec(self.clean_name(seed), self.name, s.arch, seed, "owner", s.ssl.get("method", "simclr"))

    def nulls(self, config: MatrixConfig) -> list[NullSpec]:
        return [NullSpec(f"enc-{a}-{m}-seed{s}" + ("-attacker-data" if split == "attacker" else ""), self.name, a, s,
                         split, m) for a, m, s, split in self.settings(config).nulls]  # fmt: skip

    def calibration(self, config: MatrixConfig) -> list[NullSpec]:
        return calibration_nulls(self.settings(config))

    def train(self, data: Any, config: MatrixConfig, null: NullSpec, engine: Any) -> nn.Module:
        return train_encoder(data, self.settings(config), null.arch, null.method, null.seed, null.split, engine)

    def adapted(self, name: str, model: nn.Module, data: Any, config: MatrixConfig,
                seed: int) -> dict[str, nn.Module]:  # fmt: skip
        from ownmark.attacks.encoder_attacks import finetuned_variants

        return finetuned_variants(name, model, data.splits.attacker, list(self.settings(config).adapt_lrs), seed=seed)

    def prepare_suspect(self, model: nn.Module, data: Any, config: MatrixConfig) -> Any:
        """With ``encoder.blackbox``: the suspect as a downstream user would deploy it, a linear probe
        fitted on the attacker's labelled split over its frozen features (fitted once per model)."""
        if not self.settings(config).blackbox:
            return None
        from ownmark.train.probe import linear_probe

        return linear_probe(model, data.splits.attacker, data.splits.test, seed=0)

    def extra_evidence(self, scheme: Any, key: Any, evidence: Any, suspect: Any, config: MatrixConfig,
                       alpha: float) -> dict[str, Any]:  # fmt: skip
        """With ``encoder.blackbox``: the black-box verdict on the suspect's probe (answering labels
        only), as ``p_black``, ``owned_black`` and the distinctness statistic of the owner's delta against
        the decoys' largest; beside it the probe's accuracy (``probe_accuracy``, the utility, also of null
        rows), the share of images the owner's delta sends to one label against the decoys' largest
        (``flip_rate``, ``decoy_flip_max``; reported, not decided on), and the white-box verdict's details
        (``effect``: the suspect's mean effect of the owner's key, ``decoy_effect_max``: the best decoy's,
        ``naive_paired_p``: the paired test over images that flags any encoder, never the verdict)."""
        if suspect is None or not hasattr(scheme, "detect_blackbox"):
            return {}
        from ownmark.verify import decide

        black = scheme.detect_blackbox(suspect.classifier, key)
        verdict = decide(black, alpha)
        white = evidence.details
        return {
            "p_black": verdict.p_value, "owned_black": verdict.owned, "distinct": black.details["distinct"],
            "decoy_distinct_max": black.details["decoy_distinct_max"], "probe_accuracy": suspect.accuracy,
            "flip_rate": black.details["flip_rate"], "decoy_flip_max": black.details["decoy_flip_max"],
            "effect": white["effect"], "decoy_effect_max": white["decoy_effect_max"],
            "naive_paired_p": white["naive_paired_p"],
        }  # fmt: skip

    def prepare_key(self, scheme: Any, key: Any, data: Any, config: MatrixConfig, load: Any) -> Any:
        """Calibrate the key's null margin on the calibration encoders, adapted at the null rows' rates
        (the calibrated verdict needs it before any detect)."""
        nulls = {n.name: load(n.name) for n in self.calibration(config)}
        lrs = self.settings(config).adapt_lrs
        return scheme.calibrate(key, nulls, probe=(data.splits.attacker, data.splits.test), adapt_lrs=lrs)


FAMILIES.register("encoder")(Encoder())
