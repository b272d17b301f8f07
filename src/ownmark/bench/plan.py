"""The plan of an experiment: what a matrix run covers (scheme x attack x seed, nulls), typed and checked.

A matrix run has three phases, each a set of independent tasks:

1. one clean model per seed (trained on the owner's split);
2. one marked model and key per (scheme, seed), embedded into that seed's clean model;
3. the cells: every (scheme, attack setting, seed) attacks the marked model with the attacker's
   split and verifies the result; beside them, null models (independently trained) are verified
   with every key, which measures the false-positive rate.

Models and keys of phases 1-2 are cached as artefacts in the work folder, and every finished
cell is a row in the :class:`ResultStore`; a killed run resumes where it stopped and, every step
being seeded, ends with the rows of an uninterrupted run (timings aside). The bench only
orchestrates: training, embedding, attacks and verdicts are the library's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ownmark.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from ownmark.families import NullSpec

AttackSpec = dict[str, Any]


def scheme_class(schemes: dict[str, Any], label: str) -> type:
    """The watermark class behind a matrix scheme label (``{"scheme": name}`` aliases one)."""
    from ownmark.watermarks import WATERMARKS

    spec = schemes[label] or {}
    return WATERMARKS.get(spec.get("scheme", label))


def scheme_family(schemes: dict[str, Any], label: str) -> str:
    """The model family a matrix scheme label marks (its class's ``family``)."""
    return getattr(scheme_class(schemes, label), "family", "classifier")


def attack_families(spec: AttackSpec) -> tuple[str, ...]:
    """The families an attack entry runs on: its ``families``, else the families its class declares."""
    from ownmark.families import FAMILIES

    if "families" in spec:
        return tuple(spec["families"])
    if spec["name"] == "none":
        return tuple(FAMILIES.names())
    from ownmark.attacks import ATTACKS

    return tuple(ATTACKS.get(spec["name"]).families)


@dataclass(frozen=True)
class MatrixConfig:
    """What a matrix run covers; built from a preset or a YAML/TOML file.

    Attributes:
        schemes: scheme name -> {"preset": name, "set": {field: value}}.
        attacks: list of {"name": attack or "none", "label": optional, "set": {...},
            "sweep": {field: [values]}, "schemes": [only these]}; a sweep makes one cell per value.
        nulls: {"archs": [...], "seeds": n, "attacker_model": bool}: the null classifiers.
        encoder: settings of the encoder schemes' models (``ownmark.families.encoder.DEFAULTS``:
            arch, dim, ssl overrides, calibration nulls, null encoders).
        image2image: the image-to-image schemes' task, target arch, epochs and null models
            (``ownmark.families.image2image.DEFAULTS``).
    """

    name: str = "custom"
    dataset: str = "mnist5k"
    split_seed: int = 0
    arch: str = "cnn2"
    seeds: tuple[int, ...] = (0,)
    alpha: float = 0.01
    clean: dict[str, Any] = field(default_factory=dict)
    schemes: dict[str, dict[str, Any]] = field(default_factory=dict)
    attacks: tuple[AttackSpec, ...] = ()
    nulls: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] = field(default_factory=dict)
    image2image: dict[str, Any] = field(default_factory=dict)
    null_training: dict[str, Any] = field(default_factory=dict)
    accelerator: str = "cpu"
    threads: int = 1
    # each family's typed settings (``Family.parse_settings``), parsed once here; tasks read them back
    family_settings: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    # each scheme label's resolved config (preset + set) and each cell's attack stages (name, resolved config)
    # by (scheme, attack label)
    scheme_configs: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    attack_stages: dict[tuple[str, str], tuple[tuple[str, Any], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        from ownmark.attacks import ATTACKS
        from ownmark.families import FAMILIES

        if not self.schemes:
            raise ConfigError("a bench config needs at least one scheme under `schemes`")
        families = set()
        for name in self.schemes:
            family = scheme_family(self.schemes, name)
            if family not in FAMILIES:
                raise ConfigError(f"scheme {name!r} marks {family} models, which the matrix does not run")
            families.add(family)
        for family in sorted(families):
            self.family_settings[family] = FAMILIES.get(family).parse_settings(self)
        for spec in self.attacks:
            if not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(f"each attack needs a name, got {spec!r}")
            unknown = set(spec) - {"name", "label", "set", "sweep", "schemes", "families", "then"}
            if unknown:
                raise ConfigError(
                    f"attack {spec['name']!r} has unknown keys {sorted(unknown)}; use label, set, sweep, schemes, "
                    "families, then"
                )
            for stage in spec.get("then", []):
                if not isinstance(stage, dict) or "name" not in stage or set(stage) - {"name", "set"}:
                    raise ConfigError(
                        f"attack {spec['name']!r}: each stage under `then` is {{name: ATTACK, set: {{...}}}}, got "
                        f"{stage!r}"
                    )
                ATTACKS.get(stage["name"])  # an unknown stage fails here, before any cell runs
            bad = set(spec.get("families", ())) - set(FAMILIES.names())
            if bad:
                known = ", ".join(FAMILIES.names())
                raise ConfigError(f"attack {spec['name']!r} lists unknown families {sorted(bad)}; known: {known}")
            if spec["name"] == "none":
                continue
            cls = ATTACKS.get(spec["name"])
            if getattr(cls, "needs_injected", False) and "schemes" not in spec:
                raise ConfigError(
                    f"attack {spec['name']!r} attacks injected models only (PTYNet); list the schemes it attacks under "
                    "`schemes`"
                )
            unfit = set(spec.get("families", ())) - set(cls.families)
            if unfit:
                raise ConfigError(
                    f"attack {spec['name']!r} runs on {'/'.join(cls.families)} models, not {', '.join(sorted(unfit))}"
                )
            if not set(attack_families(spec)) & families:
                raise ConfigError(
                    f"attack {spec['name']!r} runs on {'/'.join(attack_families(spec))} models and no scheme here "
                    f"marks one; add such a scheme or drop the attack"
                )
        self._resolve_units()
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads must be a positive int, got {self.threads!r}")
        seeds = [self.split_seed, *self.seeds]
        if not self.seeds or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63 for v in seeds):
            raise ConfigError(
                f"seeds must be a non-empty list of ints in [0, 2**63) and split_seed one such int, got seeds "
                f"{list(self.seeds)!r}, split_seed {self.split_seed!r}"
            )
        if not 0 < self.alpha < 1:
            raise ConfigError(f"alpha must lie in (0, 1), got {self.alpha!r}")

    def _resolve_units(self) -> None:
        """Resolve every scheme's and every attack setting's config once, here: a bad ``set`` value fails on
        load (not in a task after the clean models trained), and tasks never parse settings again."""
        from ownmark.attacks import ATTACKS
        from ownmark.config import apply_overrides, resolve_config

        for label, spec in self.schemes.items():
            spec = spec or {}
            if not isinstance(spec, dict) or set(spec) - {"scheme", "preset", "set"}:
                raise ConfigError(f"scheme {label!r} is {{scheme: NAME, preset: NAME, set: {{...}}}}, got {spec!r}")
            self.scheme_configs[label] = resolve_config(
                scheme_class(self.schemes, label), spec.get("preset"), spec.get("set") or {}
            )
        built: dict[str, tuple[tuple[str, Any], ...]] = {}
        for scheme, label, setting, _seed in self.cells():
            key = repr(setting)
            if key not in built:
                stages = []
                for stage in [setting, *setting.get("then", [])]:
                    if stage["name"] != "none":
                        cls = ATTACKS.get(stage["name"])
                        stages.append((stage["name"], apply_overrides(cls.config_class(), stage["set"])))
                built[key] = tuple(stages)
            if self.attack_stages.get((scheme, label), built[key]) != built[key]:
                raise ConfigError(f"two attack entries of scheme {scheme!r} are labelled {label!r}; give one a `label`")
            self.attack_stages[(scheme, label)] = built[key]

    def scheme_config(self, label: str) -> Any:
        """The resolved config of the scheme labelled ``label`` (its preset with ``set`` applied)."""
        return self.scheme_configs[label]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MatrixConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"unknown bench config keys {sorted(unknown)}; known: {sorted(known)}")
        raw = dict(raw)
        for key in ("seeds", "attacks"):
            if key in raw:
                if not isinstance(raw[key], (list, tuple)):
                    example = "[0, 1, 2]" if key == "seeds" else "[{name: ftal}]"
                    raise ConfigError(f"bench config `{key}` must be a list, got {raw[key]!r}; e.g. {key}: {example}")
                raw[key] = tuple(raw[key])
        return cls(**raw)

    def cells(self) -> Iterator[tuple[str, str, dict[str, Any], int]]:
        """(scheme, attack label, attack setting, seed) for every cell, in a fixed order."""
        for scheme, spec, seed in itertools.product(self.schemes, self.attacks, self.seeds):
            if scheme not in spec.get("schemes", [scheme]):
                continue
            if "schemes" not in spec and scheme_family(self.schemes, scheme) not in attack_families(spec):
                continue
            for label, setting in expand(spec):
                yield scheme, label, setting, seed

    def families(self) -> list[str]:
        """The model families of the schemes, in a fixed order."""
        from ownmark.families import FAMILIES

        present = {scheme_family(self.schemes, name) for name in self.schemes}
        return [f for f in FAMILIES.names() if f in present]

    def null_names(self) -> list[NullSpec]:
        """Every null model: each family of the schemes contributes its own (``Family.nulls``)."""
        from ownmark.families import FAMILIES

        return [null for family in self.families() for null in FAMILIES.get(family).nulls(self)]

    def settings(self, family: str) -> Any:
        """The typed settings of ``family`` (``Family.parse_settings`` of this config, parsed when the
        config was built if one of its schemes marks that family, else now)."""
        from ownmark.families import FAMILIES

        if family not in self.family_settings:
            return FAMILIES.get(family).parse_settings(self)
        return self.family_settings[family]

    def to_dict(self) -> dict[str, Any]:
        """The config as written (plain values, lists for tuples), e.g. for a report's header."""
        return config_to_dict(self)


def expand(spec: AttackSpec) -> list[tuple[str, dict[str, Any]]]:
    """One (label, setting) per value of the attack's sweep (or one without a sweep).

    An entry may chain further attacks under ``then`` (``[{name, set}, ...]``): each stage attacks the
    previous stage's output (:class:`ownmark.attacks.Chain`), e.g. fine-pruning then fine-tuning, or
    distillation from an API behind bit-depth squeezing; its label joins the names with ``+``.

    Example:
        >>> expand({"name": "squeeze", "set": {"bits": 3}, "then": [{"name": "distill", "set": {"budget": 9}}]})[0][0]
        'squeeze+distill'
    """
    base = dict(spec.get("set", {}))
    sweep = spec.get("sweep", {})
    if len(sweep) > 1:
        raise ConfigError(f"attack {spec['name']!r} sweeps {sorted(sweep)}; sweep one setting per entry")
    then = [{"name": st["name"], "set": dict(st.get("set", {}))} for st in spec.get("then", [])]
    label = spec.get("label", "+".join([spec["name"], *(st["name"] for st in then)]))
    extra = {"then": then} if then else {}
    if not sweep:
        return [(label, {"name": spec["name"], "set": base, "param": None, "value": None, **extra})]
    ((param, values),) = sweep.items()
    return [
        (f"{label} {param}={v}", {"name": spec["name"], "set": {**base, param: v}, "param": param, "value": v, **extra})
        for v in values
    ]


def load_config(preset: str | None = None, path: str | Path | None = None) -> MatrixConfig:
    """A matrix config from a named preset or a YAML/TOML file (a file may name a `preset` to extend)."""
    from ownmark.bench.presets import PRESETS

    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_config_file(path)
        preset = raw.pop("preset", preset)
    if preset is not None:
        if preset not in PRESETS:
            raise UnknownNameError(f"no bench preset named {preset!r}; known: {', '.join(sorted(PRESETS))}")
        own = raw
        raw = {**PRESETS[preset], **raw}
        if "schemes" in own and "attacks" not in own and isinstance(own["schemes"], dict) and own["schemes"]:
            raw["attacks"] = fitting_attacks(PRESETS[preset]["attacks"], own["schemes"])
    if not raw:
        raise ConfigError("give a bench --preset (quick, paper) or a --config file")
    return MatrixConfig.from_dict(raw)


def fitting_attacks(attacks: list[AttackSpec], schemes: dict[str, Any]) -> list[AttackSpec]:
    """The entries of a preset's attack list that meet at least one of ``schemes`` (a file that narrows a
    preset's schemes keeps the preset's attacks for them, not those of families or schemes it dropped)."""
    families = {scheme_family(schemes, name) for name in schemes}
    kept = []
    for spec in attacks:
        if "schemes" in spec:
            if set(spec["schemes"]) & set(schemes):
                kept.append({**spec, "schemes": [n for n in spec["schemes"] if n in schemes]})
        elif set(attack_families(spec)) & families:
            kept.append(spec)
    return kept


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) bench config."""
    from ownmark.errors import MissingFileError

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no such bench config: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raise ConfigError(f"bench config {path} must end in .yaml, .yml or .toml")
    except (ValueError, ImportError) as err:  # tomllib and yaml errors derive from ValueError / YAMLError
        raise ConfigError(f"cannot parse {path}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # yaml.YAMLError does not derive from ValueError
        if type(err).__module__.startswith("yaml"):
            raise ConfigError(f"cannot parse {path}: {str(err).splitlines()[0]}") from None
        raise
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, got {type(raw).__name__}")
    return raw


@dataclass
class Task:
    """One unit of work for an executor: a phase, its key and its arguments."""

    phase: str
    key: str
    args: dict[str, Any]


Executor = Callable[[Callable[[Task], Any], list[Task]], Iterator[Any]]


def cell_id(scheme: str, label: str, seed: int) -> str:
    return f"cell|{scheme}|{label}|{seed}"


def config_to_dict(config: MatrixConfig) -> dict[str, Any]:
    """The config as written: its declared settings as plain values (the parsed family settings left out)."""
    from dataclasses import fields

    out = {}
    for f in fields(config):
        if f.init:
            value = getattr(config, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


REHEARSAL_BUDGET = 256  # query budgets above this shrink to it in a rehearsal


def rehearsal(config: MatrixConfig) -> MatrixConfig:
    """``config`` at its smallest, to prove every path of a long run in minutes before paying for it.

    Same schemes, attacks, architectures, model families and verdicts, on the first seed; a torchvision
    dataset becomes seeded random images of its shape (:func:`ownmark.data.datasets.synthetic_standin`,
    no download); every training length and optimisation loop (a config field named ``*epochs`` or
    ``*steps``, in nested configs too, such as ``enc-ssl``'s SSL training) is 1, milestones are dropped,
    query budgets are at most :data:`REHEARSAL_BUDGET`, each sweep keeps its first value, and each family
    keeps few null models (:meth:`ownmark.families.base.Family.rehearse`). Its figures mean nothing: it
    tells whether the run will run (``ownmark bench run --rehearse``).
    """
    from ownmark.attacks import ATTACKS
    from ownmark.config import apply_overrides
    from ownmark.data.datasets import synthetic_standin
    from ownmark.families import FAMILIES

    raw = config_to_dict(config)
    raw |= {
        "name": f"{config.name}-rehearsal",
        "seeds": [config.seeds[0]],
        "dataset": synthetic_standin(config.dataset),
    }
    for family in config.families():
        FAMILIES.get(family).rehearse(config, raw)
    raw["schemes"] = {
        label: {**(spec or {}), "set": {**((spec or {}).get("set") or {}), **_shrink(config.scheme_config(label))}}
        for label, spec in config.schemes.items()
    }

    def stage(spec: dict[str, Any]) -> dict[str, Any]:
        if spec["name"] == "none":
            return dict(spec)
        cls = ATTACKS.get(spec["name"])
        shrunk = _shrink(apply_overrides(cls.config_class(), spec.get("set") or {}))
        out = {**spec, "set": {**(spec.get("set") or {}), **shrunk}}
        if "sweep" in spec:
            out["sweep"] = {k: [shrunk.get(k, v[0])] for k, v in spec["sweep"].items()}
        if "then" in spec:
            out["then"] = [stage(s) for s in spec["then"]]
        return out

    raw["attacks"] = [stage(spec) for spec in config.attacks]
    return MatrixConfig.from_dict(raw)


def _shrink(config: Any) -> dict[str, Any]:
    """Overrides that make a resolved scheme or attack config as short as it gets (see :func:`rehearsal`)."""
    from dataclasses import fields, is_dataclass

    from ownmark.config import config_dict

    out: dict[str, Any] = {}
    for f in fields(config) if is_dataclass(config) else ():
        value = getattr(config, f.name)
        if is_dataclass(value) and (inner := _shrink(value)):
            out[f.name] = config_dict(value) | inner  # a nested config (enc-ssl's SSL training), whole: shrunk
            continue
        if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
            continue
        if f.name.endswith(("epochs", "steps")) and isinstance(value, int) and value > 1:
            out[f.name] = 1  # training lengths, and optimisation loops such as AWEncoder's PGD steps
        elif f.name == "milestones" and value:
            out[f.name] = []
        elif f.name == "budget" and isinstance(value, int) and value > REHEARSAL_BUDGET:
            out[f.name] = REHEARSAL_BUDGET
    return out
