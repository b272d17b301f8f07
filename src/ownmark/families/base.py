"""The model family as a unit: what differs between classifiers, encoders and image-to-image networks.

A :class:`Family` answers every question whose answer depends on the kind of model: how a model
of an architecture is built, which data it learns from, how it is trained, how its utility is
measured, what its API answers, which null models a benchmark verifies keys against and how they
are adapted, and which toy fixture its contract test runs on. The rest of ownmark asks the family
(``family_of(model)`` or ``FAMILIES.get(name)``) instead of testing names, so adding a family is one
module here (plus its architectures under ``ownmark.models``) and no edit in the bench, the CLI or
the service.

Bench-facing methods take the matrix config (:class:`ownmark.bench.plan.MatrixConfig`, typed, checked
once when it is built, and shipped as it is to every task's process); a family parses its own section of it
into typed settings (:meth:`Family.parse_settings`, run once by the config) and reads them back with
:meth:`Family.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ownmark.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from ownmark.bench.plan import MatrixConfig
    from ownmark.core import Evidence, Key
    from ownmark.models import ModelSpec


@dataclass(frozen=True)
class NullSpec:
    """One independently trained model a benchmark verifies every key of its family with.

    ``split`` is ``owner`` or ``attacker`` (the data it trained on); ``method`` the SSL method of a
    null encoder. The clean model of a bench seed is described by a NullSpec too.
    """

    name: str
    family: str
    arch: str
    seed: int
    split: str
    method: str = ""


class Family:
    """One model family. Subclasses set the class attributes and implement the methods.

    Attributes:
        name: the registry name, stored as ``ModelSpec.family`` in every artefact's manifest.
        description: one line for ``ownmark list families``.
        serve_kinds: what the family's model API can answer; the first is the default.
        utility_name: what :meth:`utility` measures, for reports.
        default_arch: the architecture a command uses when none is named.
        section: the bench config section holding the family's settings ("" for the top level).
        report_note: what the bench report says of the family's utility and verdicts ("" for none).
        default_dataset: the data a command trains on when none is named (bundled, offline).
        utility_key: the manifest field ``ownmark train`` stores the utility under.
        utility_short: the utility's name in one-line summaries.
        utility_metric: the registered metric that is the utility; ``metrics``: what ``ownmark evaluate``
            reports by default.
        outputs: what the output size counts (classes, features, channels).
        outputs_fixed: whether the data fixes the output size (classes, channels), so a model with
            another output size does not fit it (an encoder's feature dimension is free).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    serve_kinds: ClassVar[tuple[str, ...]]
    utility_name: ClassVar[str]
    default_arch: ClassVar[str]
    section: ClassVar[str] = ""
    report_note: ClassVar[str] = ""
    default_dataset: ClassVar[str] = "mnist5k"
    utility_key: ClassVar[str]
    utility_metric: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    utility_short: ClassVar[str]
    outputs_fixed: ClassVar[bool] = True
    outputs: ClassVar[str] = "outputs"

    @property
    def default_kind(self) -> str:
        """What the family's API returns unless told otherwise."""
        return self.serve_kinds[0]

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    def archs(self) -> list[str]:
        """Names of the family's registered architectures (``tv:NAME`` / ``timm:NAME`` aside)."""
        raise NotImplementedError

    def owns_arch(self, arch: str) -> bool:
        """Whether ``arch`` names one of the family's architectures (the CLI tells the family by it)."""
        return arch in self.archs()

    # -- models --------------------------------------------------------------------------------
    def build(self, arch: str, in_channels: int, out_dim: int, image_size: int) -> nn.Module:
        """An untrained model of ``arch``: images of ``in_channels`` x ``image_size`` px in,
        ``out_dim`` outputs (classes, feature dimension or output channels) out."""
        raise NotImplementedError

    def spec(self, arch: str, data: Any, out_dim: int | None = None) -> ModelSpec:
        """The ModelSpec of ``arch`` for ``data`` (its shape; ``out_dim`` where the data does not fix it)."""
        raise NotImplementedError

    def toy(self, seed: int = 0) -> tuple[nn.Module, Any]:
        """A tiny untrained model of the family and data it takes, for contract tests (no files)."""
        raise NotImplementedError

    def utility(self, model: nn.Module, splits: Any) -> float:
        """The model's utility on a split's test part (higher is better): the metric
        :attr:`utility_metric` of :mod:`ownmark.metrics`, as :attr:`utility_name` says."""
        from ownmark.metrics import METRICS

        return METRICS.get(self.utility_metric)(model, splits)

    def require(self, model: Any, what: str) -> None:
        """Raise ConfigError unless ``model`` (an ownmark model) belongs to this family; foreign
        modules and remote APIs pass (their family is unknown)."""
        from ownmark.errors import ConfigError

        spec = getattr(model, "spec", None)
        family = getattr(spec, "family", None)
        if family is not None and family != self.name:
            raise ConfigError(f"{what} works on {self.name} models, got a {family} ({getattr(spec, 'arch', '?')})")

    def check_fits(self, model: nn.Module, data: Any, source: str) -> None:
        """Raise KeyMismatchError unless ``model`` (an ownmark model of this family) takes ``data``'s
        images and gives its outputs; ``source`` names the data in the message."""
        from ownmark.errors import KeyMismatchError

        spec, want = model.spec, self.spec(model.spec.arch, data)
        if spec.input_shape != want.input_shape or (self.outputs_fixed and spec.out_dim != want.out_dim):
            raise KeyMismatchError(
                f"the {self.name} takes {spec.input_shape} images with {spec.out_dim} {self.outputs} but {source} "
                f"has {want.input_shape} with {want.out_dim}; pass the data the model was trained on"
            )

    def embed_note(self, clean: nn.Module, marked: nn.Module, splits: Any) -> str:
        """What ``ownmark embed`` says beyond utility (image-to-image: marked vs clean outputs)."""
        return ""

    def describe_attack(self, name: str, victim: nn.Module | None, attacked: nn.Module, splits: Any,
                        seed: int) -> str:  # fmt: skip
        """One line for ``ownmark attack``: the victim's utility (when its weights are at hand) and the
        attacked model's."""
        before = f"{self.utility(victim, splits):.4f}" if victim is not None else "n/a (served)"
        return (f"victim {self.utility_short} {before} -> attacked {self.utility_short} "
                f"{self.utility(attacked, splits):.4f}")  # fmt: skip

    def after_embed(self, scheme: Any, key: Key, clean: nn.Module, splits: Any, *, nulls: int, engine: Any) -> Key:
        """The key as saved by ``ownmark embed``, after any step its verdicts need first (encoders:
        the null margin, set on ``nulls`` encoders trained here). The key as embedded by default."""
        return key

    # -- training from the command line and the API ------------------------------------------
    def load_splits(self, dataset: str, split_seed: int) -> Any:
        """Owner, attacker and test parts of ``dataset`` (a dataset name, or a task for image-to-image)."""
        from ownmark.families.classifier import Context

        return Context.load(dataset, split_seed).splits

    def train_config(self, overrides: dict[str, str]) -> Any:
        """The family's training config (its defaults with ``--set`` overrides applied)."""
        raise NotImplementedError

    def fit(self, arch: str, data: Any, *, seed: int, config: Any, engine: Any = None, checkpoint: Any = None,
            resume: bool = False, out_dim: int | None = None) -> nn.Module:  # fmt: skip
        """A fresh model of ``arch`` initialised from ``seed`` and trained on ``data`` (one split part);
        ``checkpoint`` and ``resume`` as in :func:`ownmark.train.fit`."""
        raise NotImplementedError

    # -- the bench -----------------------------------------------------------------------------
    def parse_settings(self, config: MatrixConfig) -> Any:
        """The family's typed settings out of a matrix config; ConfigError for a bad section. Called once,
        when the config is built (a config naming a scheme of this family); read them with :meth:`settings`."""
        return None

    def plan_data(self, dataset: str, split_seed: int) -> dict[str, Any]:
        """The matrix config fields that make a plan of this family run on ``dataset`` (a command's
        ``--dataset``): the top-level dataset by default (image-to-image: the section's task)."""
        return {"dataset": dataset, "split_seed": split_seed}

    def settings(self, config: MatrixConfig) -> Any:
        """The typed settings :meth:`parse_settings` made of ``config``."""
        return config.settings(self.name)

    def load(self, config: MatrixConfig) -> Any:
        """The data a bench task of this family works on: an object whose ``.splits`` has owner,
        attacker and test parts."""
        raise NotImplementedError

    def clean_name(self, seed: int) -> str:
        """Artefact name of a bench seed's clean model."""
        return f"clean-{self.name}-seed{seed}"

    def clean_spec(self, config: MatrixConfig, seed: int) -> NullSpec:
        """How a bench seed's clean (owner's) model is made."""
        raise NotImplementedError

    def nulls(self, config: MatrixConfig) -> list[NullSpec]:
        """The independent models every key of the family is verified with."""
        return []

    def calibration(self, config: MatrixConfig) -> list[NullSpec]:
        """Models trained before any embedding, for :meth:`prepare_key` (none by default)."""
        return []

    def train(self, data: Any, config: MatrixConfig, null: NullSpec, engine: Any) -> nn.Module:
        """Train the model ``null`` describes on its split of ``data`` (from :meth:`load`)."""
        raise NotImplementedError

    def rehearse(self, config: MatrixConfig, raw: dict[str, Any]) -> None:
        """Shrink this family's sections of ``raw`` (``config`` as a dict) for a rehearsal
        (:func:`ownmark.bench.plan.rehearsal`): every training one epoch, few null models of each
        architecture, same paths. Nothing to shrink by default."""

    def adapted(self, name: str, model: nn.Module, data: Any, config: MatrixConfig,
                seed: int) -> dict[str, nn.Module]:  # fmt: skip
        """Variants of a null model adapted as a suspect in the wild would be (none by default)."""
        return {}

    def prepare_suspect(self, model: nn.Module, data: Any, config: MatrixConfig) -> Any:
        """Work on one suspect model that the extra evidence of every key shares, done once per model
        (encoders with ``encoder.blackbox``: the downstream linear probe); None by default."""
        return None

    def extra_evidence(self, scheme: Any, key: Key, evidence: Evidence, suspect: Any, config: MatrixConfig,
                       alpha: float) -> dict[str, Any]:  # fmt: skip
        """Further figures a bench row records beside the scheme's own verdict, as row fields: from the
        scheme's ``evidence`` on the suspect (its ``detect``, already computed) and what
        :meth:`prepare_suspect` made of it (none by default; encoders: the black-box verdict through a
        downstream classifier when the matrix's ``encoder.blackbox`` is on)."""
        return {}

    def prepare_key(self, scheme: Any, key: Key, data: Any, config: MatrixConfig, load: Any) -> Key:
        """The key as the bench verifies with it, after any step the family's verdicts need before
        the first detect (``load(name)`` returns a stored model). The key as embedded by default."""
        return key


FAMILIES: Registry[Family] = Registry("model family")


def family_of(model: Any) -> Family:
    """The family of an ownmark model (from its ``spec``); classifiers for anything else."""
    name = getattr(getattr(model, "spec", None), "family", None) or "classifier"
    return FAMILIES.get(name)
