"""Overwriting: the thief embeds a watermark of its own into the copy it stole.

The attacker runs a watermarking scheme of the victim's family (any registered classifier scheme, FCW
by default; deep output watermarking on an image-to-image network) on the victim with the attacker's
data and a seed of its own, and keeps the marked model; the key it makes
is the attacker's and is thrown away here. The second embedding fine-tunes the whole network, which
can weaken the owner's mark, and lets the thief claim the model too: a verdict must still name the
owner. Written here on top of ownmark's own schemes (no library offers it).

Reference:
    Lukas, Jiang, Li, Kerschbaum, "SoK: How Robust is Image Classification Deep Neural Network
    Watermarking?", IEEE S&P 2022, arXiv:2108.04974 (overwriting as a removal attack).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ownmark.attacks.base import ATTACKS, timed
from ownmark.core import Cost
from ownmark.data import ImageSet
from ownmark.errors import ConfigError
from ownmark.train import Engine, key_seed

OVERWRITE_STREAM = 0x4F565257

FAMILIES_OVERWRITTEN = ("classifier", "image2image")  # a scheme of the victim's own family is embedded


@dataclass(frozen=True)
class OverwriteConfig:
    """The attacker's scheme, its preset, its number of embedding epochs (0: the preset's own) and
    further settings of that scheme as ``"key=value,key=value"``."""

    scheme: str = "fcw"
    preset: str = "default"
    epochs: int = 0
    settings: str = ""

    def __post_init__(self) -> None:
        from ownmark.watermarks import WATERMARKS

        cls = WATERMARKS.get(self.scheme)  # an unknown name is refused with the known ones
        if getattr(cls, "family", "classifier") not in FAMILIES_OVERWRITTEN:
            raise ConfigError(
                f"OverwriteConfig.scheme {self.scheme!r} marks {cls.family} models; overwrite a classifier with a "
                "classifier scheme (fcw, content, noise, unrelated, ptynet) or an image-to-image network with deepwm"
            )
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"OverwriteConfig.epochs must be an int >= 0 (0: the preset's), got {self.epochs!r}")
        self.scheme_settings()  # a bad setting fails here, not after the victim is copied

    def scheme_settings(self) -> dict[str, str]:
        """``settings`` as a dict, refusing an item without ``=``."""
        out = {}
        for item in filter(None, (p.strip() for p in self.settings.split(","))):
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"OverwriteConfig.settings expects key=value items, got {item!r}")
            out[name.strip()] = value
        return out


@ATTACKS.register("overwrite")
class Overwrite:
    """Embed the attacker's own watermark (``scheme``) into a copy of the victim, with the attacker's data.

    Example:
        >>> from ownmark.data.toy import toy_images
        >>> from ownmark.models import ModelSpec
        >>> victim = ModelSpec("cnn2", 3, 4, 16).build()
        >>> cfg = OverwriteConfig(epochs=1, settings="n_embed=8,n_verify=8")
        >>> attacked, cost = Overwrite(cfg)(victim, toy_images(n=96), seed=0)
        >>> cost.epochs, cost.details["scheme"], attacked is victim
        (1.0, 'fcw', False)
    """

    access = "white-box"
    group = "modification"
    families = FAMILIES_OVERWRITTEN
    config_class = OverwriteConfig
    presets: dict = {}

    def __init__(self, config: OverwriteConfig = OverwriteConfig()) -> None:
        self.config = config

    def scheme(self):
        """The attacker's scheme, configured."""
        import dataclasses

        from ownmark.watermarks import WATERMARKS, resolve_config

        cls = WATERMARKS.get(self.config.scheme)
        config = resolve_config(cls, self.config.preset, self.config.scheme_settings())
        if self.config.epochs and "epochs" in {f.name for f in dataclasses.fields(config)}:
            config = dataclasses.replace(config, epochs=self.config.epochs)
        return cls(config)

    def __call__(
        self, model: nn.Module, data: ImageSet, *, seed: int, engine: Engine = Engine()
    ) -> tuple[nn.Module, Cost]:
        from ownmark.families import family_of

        scheme, cost = self.scheme(), Cost()
        victim_family = family_of(model).name
        if getattr(scheme, "family", "classifier") != victim_family:
            raise ConfigError(
                f"overwrite: the victim is a {victim_family} model and {self.config.scheme!r} marks "
                f"{getattr(scheme, 'family', 'classifier')} models; set scheme= to a scheme of the victim's family"
            )
        with timed(cost):
            attacked, _attackers_key = scheme.embed(model, data, seed=key_seed(seed, OVERWRITE_STREAM), engine=engine)
        cost.epochs = float(getattr(scheme.config, "epochs", 0))
        cost.details["scheme"] = self.config.scheme
        return attacked.eval(), cost
