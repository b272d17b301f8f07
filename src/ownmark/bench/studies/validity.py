"""The validity benchmark: do verdicts keep their promise on models made without the secret?

A verdict promises that a model made without the owner's secret is judged OWNED with probability at
most alpha (METHODS.md, "What a verdict promises"; issue 14). The benchmark measures that promise
instead of assuming it: per scheme it draws many keys by the scheme's own procedure
(``scheme.draw_key``, which draws the key ``embed`` would, without training a marked model), verifies
every key against every suspect of a null zoo (:mod:`ownmark.bench.studies.nulls_zoo`: other seeds and
architectures, the attacker's split, fine-tuned nulls, the owner's unmarked model, constant and
label-biased answerers, surrogates distilled from the unmarked model in and out of distribution,
scikit-learn models), and collects ``decide(scheme.detect(suspect, key)).p_value``. For a valid
test the null p-values are super-uniform: their empirical CDF lies at or below the diagonal, and the
false-claim rate at alpha is at most alpha. Beside them stand the true-positive rates on models
really marked with a few keys, unattacked and fine-tuned.

Rows of one (key, suspect) pair are not independent of other rows of the same suspect (or key), so
the Clopper-Pearson bound over all pairs is a yardstick, not a proof; the report therefore also
names the worst suspect and its own claim rate over the key draws, which for a valid test is at
most alpha up to its own binomial bound (keys are independent draws for one fixed suspect).

A test may be added beside a scheme's own ``detect`` to show the benchmark catches an invalid one:
``binomial-1/K`` counts matches of the held-out triggers with their label and runs the exact
binomial against ``p0 = 1/K`` (the trigger-set evidence of the old FCW and of the baselines), which
any model that reads fused or patched images as one label defeats.

Families: classifiers (:mod:`ownmark.bench.studies.nulls_zoo`: FCW, content, noise, unrelated, PTYNet),
encoders and image-to-image networks (:mod:`ownmark.bench.studies.validity_families`: AWEncoder's secret
variant over 200 key draws on the owner's clean encoder; deep output watermarking over 200 secrets
spread across a few trained extractors, since the extractor never reads the secret). Each family
is one preset (``default``, ``encoder``, ``image2image``; ``tiny*`` for tests). Keys of the
encoder and image-to-image presets draw no marked model; their marked rows embed one.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ownmark.bench.report.validity import (  # noqa: F401  (re-exported: the report's functions)
    ALPHAS,
    clopper_pearson,
    ecdf_excess,
    ecdf_figure,
    rows_csv,
    summarise,
    validity_section,
    write_outputs,
)
from ownmark.core import Evidence, Key
from ownmark.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)

OWN_TEST = "detect"
FAMILIES = ("classifier", "encoder", "image2image")  # each has a suspect zoo below (SETTINGS)
INVALID_TEST = "binomial-1/K"
Row = dict[str, Any]


def draw_key(scheme: Any, model: nn.Module, data: Any, *, seed: int) -> Key:
    """The key ``scheme.embed(model, data, seed=seed)`` would make, without training a marked model.

    Uses the scheme's ``draw_key``; trigger-set baselines that lack it fall back to their
    ``make_triggers`` (the same tensors and meta ``embed`` stores). Other schemes raise ConfigError.
    """
    if hasattr(scheme, "draw_key"):
        return scheme.draw_key(model, data, seed=seed)
    from ownmark.watermarks.base import config_dict
    from ownmark.watermarks.baselines import TriggerSetBaseline

    if isinstance(scheme, TriggerSetBaseline):
        trig, target = scheme.make_triggers(data, seed=seed)
        meta = {
            "num_classes": data.num_classes,
            "input_shape": list(data.shape),
            "dataset": data.name,
            "target": target,
        }
        return Key(scheme.name, config_dict(scheme.config), trig, meta)
    raise ConfigError(f"{type(scheme).__name__} has no draw_key; the validity bench cannot redraw its keys cheaply")


def binomial_one_over_k(scheme: Any, suspect: Any, key: Key) -> Evidence:
    """The deliberately invalid test: held-out triggers answered with their label, exact binomial
    against ``p0 = 1/K`` (counts images of one model as independent evidence)."""
    from ownmark.verify import LabelOracle
    from ownmark.watermarks.triggers import count_matches

    if "verify_x" not in key.tensors or "verify_y" not in key.tensors:
        raise ConfigError(f"{INVALID_TEST} needs a trigger-set key (verify_x, verify_y); {key.scheme} keys have none")
    num_classes = int(key.meta["num_classes"])
    oracle = LabelOracle(suspect, num_classes=num_classes)
    k = count_matches(oracle, key.tensors["verify_x"], key.tensors["verify_y"])
    return Evidence(key.scheme, k=k, n=len(key.tensors["verify_x"]), p0=1 / num_classes, queries=oracle.queries)


TESTS = {OWN_TEST: lambda scheme, suspect, key: scheme.detect(suspect, key), INVALID_TEST: binomial_one_over_k}


@dataclass(frozen=True)
class ValiditySettings:
    """What one validity run measures.

    Attributes:
        schemes: scheme label -> ``{"scheme": registry name (default: the label), "preset": ...,
            "set": {field: value}, "nulls": {field: value}}``; ``nulls`` applies to the null rows'
            key draws only. The CPU default shrinks their verification sets (FCW's pool, the decoy
            counts) so 200 keys x 24 suspects finish in time; the validity of a rank test does not
            depend on these sizes, only its power and smallest p do, and the marked rows measure
            power at the scheme's own sizes.
        tests: scheme label -> extra tests run beside its own ``detect`` (e.g. ``binomial-1/K``).
        n_keys: key draws per scheme, seeds ``key_seed0 + i``.
        zoo: ``default`` (24 suspects) or ``tiny`` (8).
        marked_seeds: keys really embedded (the true-positive rate); ``attack``: the attack run on
            each marked model (``none`` to skip).
        clean_epochs: training epochs of the owner's model and of the trained suspects (SSL epochs
            for encoders).
        family: ``classifier``, ``encoder`` or ``image2image``; ``dataset`` is the image-to-image task
            (e.g. ``deblur``) for the last.
        extractors: image-to-image only: trained deepwm extractors the key draws are spread over.
    """

    family: str = "classifier"
    dataset: str = "mnist5k"
    split_seed: int = 0
    arch: str = "lenet"
    owner_seed: int = 0
    schemes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tests: dict[str, tuple[str, ...]] = field(default_factory=dict)
    n_keys: int = 200
    key_seed0: int = 10_000
    zoo: str = "default"
    marked_seeds: tuple[int, ...] = (0, 1)
    attack: str = "ftal"
    clean_epochs: int = 10
    alphas: tuple[float, ...] = ALPHAS
    extractors: int = 2

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"ValiditySettings.family must be one of {FAMILIES}, got {self.family!r}")
        if not isinstance(self.n_keys, int) or self.n_keys < 1:
            raise ConfigError(f"ValiditySettings.n_keys must be a positive int, got {self.n_keys!r}")
        for label, tests in self.tests.items():
            unknown = set(tests) - set(TESTS)
            if unknown:
                raise ConfigError(f"unknown tests {sorted(unknown)} for {label!r}; known: {sorted(TESTS)}")


CLASSIFIER_SCHEMES: dict[str, dict[str, Any]] = {
    # verification sets shrunk so 200 keys x 24 suspects fit the CPU budget (measured at n_verify 10:
    # FCW 0.3 s per verdict on lenet, 1 s on cnn2, on a shared 2-core CPU). Rank tests keep their
    # validity at any size; fewer decoys raise the smallest p to 1/100 (no claim at 1e-3 is possible)
    # (the marked rows verify at the scheme's own sizes: "nulls" applies to the null rows only)
    "fcw": {"nulls": {"n_verify": 5}},  # 90 fused pairs x 5 = 450 queries per verdict
    "content": {"nulls": {"n_verify": 10, "decoys": 99}},  # (decoys + 2) x 10 = 1,010 queries
    "noise": {"nulls": {"n_verify": 10, "decoys": 99}},
    "unrelated": {"nulls": {"n_verify": 30}},  # random labels: a permutation test, 30 queries
    "unrelated-zhang": {"scheme": "unrelated", "preset": "zhang", "nulls": {"n_verify": 10, "decoys": 99}},
    "ptynet": {"nulls": {"n_verify": 10, "n_decoys": 99}},  # 100 candidates x 10 queries
}
PRESETS: dict[str, ValiditySettings] = {
    "default": ValiditySettings(schemes=CLASSIFIER_SCHEMES, tests={"fcw": (INVALID_TEST,)}),
    "tiny": ValiditySettings(
        schemes={"fcw": {"set": {"n_verify": 5, "n_embed": 20, "epochs": 3}}},
        tests={"fcw": (INVALID_TEST,)},
        n_keys=24,
        zoo="tiny",
        marked_seeds=(0,),
        attack="none",
        clean_epochs=3,
    ),
    # AWEncoder's secret variant (the default): 99 decoys, 50 held-out images per verdict
    "encoder": ValiditySettings(
        family="encoder",
        arch="conv4",
        schemes={"awencoder": {"nulls": {"n_verify": 50, "decoys": 99}}},
        marked_seeds=(0,),
        attack="enc-finetune",
        clean_epochs=10,
    ),
    "tiny-encoder": ValiditySettings(
        family="encoder",
        arch="conv4",
        schemes={"awencoder": {"set": {"n_verify": 20, "decoys": 99, "epochs": 3}}},
        n_keys=16,
        zoo="tiny",
        marked_seeds=(0,),
        attack="none",
        clean_epochs=2,
    ),
    # deepwm's default (bits, barrier form): 200 secrets over 2 trained extractors
    "image2image": ValiditySettings(
        family="image2image",
        dataset="deblur",
        arch="encdec",
        schemes={"deepwm": {}},
        marked_seeds=(0,),
        attack="surrogate",
        clean_epochs=10,
        extractors=2,
    ),
    "tiny-image2image": ValiditySettings(
        family="image2image",
        dataset="deblur",
        arch="encdec",
        schemes={"deepwm": {"set": {"epochs": 2, "extractor_epochs": 2, "surrogate_epochs": 0, "n_probe": 16}}},
        n_keys=16,
        zoo="tiny",
        marked_seeds=(),
        attack="none",
        clean_epochs=2,
        extractors=1,
    ),
}
FAMILY_PRESET = {"classifier": "default", "encoder": "encoder", "image2image": "image2image"}


@dataclass
class ValidityReport:
    """Everything a run measured: rows, their summary per (scheme, test), errors and files."""

    rows: list[Row]
    summary: list[Row]
    errors: dict[str, str]
    seconds: dict[str, float]
    files: dict[str, str]
    settings: dict[str, Any]


def run_validity(
    workdir: str | Path,
    *,
    preset: str | None = None,
    schemes: list[str] | None = None,
    n_keys: int | None = None,
    family: str | None = None,
    workers: int = 1,
) -> ValidityReport:
    """Run the validity benchmark and write its rows, summary, ECDF figure and markdown section.

    Trained models (owner, suspects, marked models) and finished (scheme, test, suspect) row groups
    are cached under ``workdir``, so an interrupted run resumes where it stopped.

    Args:
        workdir: output and cache folder; writes ``validity-rows.json``, ``validity-rows.csv``,
            ``validity-summary.json``, ``validity-ecdf.png`` and ``validity.md``.
        preset: a key of :data:`PRESETS` (``default``: 200 keys x 24 suspects per classifier scheme;
            ``encoder`` and ``image2image``: 200 keys x 15 and 13 suspects). Default: the family's.
        schemes: run only these scheme labels of the preset.
        n_keys: override the preset's key draws per scheme.
        family: ``classifier``, ``encoder`` or ``image2image``; must match the preset's family.
        workers: processes computing row groups (see :func:`measure`); rows do not depend on it.
    """
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"no model family {family!r}; known: {list(FAMILIES)}")
    preset = preset or FAMILY_PRESET[family or "classifier"]
    if preset not in PRESETS:
        raise UnknownNameError(f"no validity preset {preset!r}; known: {sorted(PRESETS)}")
    settings = PRESETS[preset]
    if family is not None and settings.family != family:
        raise ConfigError(
            f"validity preset {preset!r} is of family {settings.family!r}, not {family!r}; "
            f"use --preset {FAMILY_PRESET[family]}"
        )
    if schemes is not None:
        unknown = set(schemes) - set(settings.schemes)
        if unknown:
            raise ConfigError(
                f"schemes {sorted(unknown)} are not in preset {preset!r}; known: {sorted(settings.schemes)}"
            )
        settings = replace(settings, schemes={s: settings.schemes[s] for s in schemes})
    if n_keys is not None:
        settings = replace(settings, n_keys=n_keys)
    return measure(settings, Path(workdir), workers=workers)


@dataclass
class Setting:
    """What a family hands the benchmark: the owner's clean model, its data, and the null zoo."""

    owner: nn.Module
    owner_data: Any  # what embed and draw_key take (ImageSet, or image-to-image Pairs)
    attacker_data: Any  # what the marked rows' attack takes
    zoo: dict[str, Any]
    kinds: dict[str, str]
    fine_tune: Any = None  # (model, data, seed) -> model for attack "ftal"


def _classifier_setting(settings: ValiditySettings, models: Path) -> Setting:
    from ownmark.bench.studies.nulls_zoo import build_classifier_zoo, classifier_specs, fine_tuned
    from ownmark.families.classifier import CLEAN_TRAINING, Context, train_model

    ctx = Context.load(settings.dataset, settings.split_seed)
    training = replace(CLEAN_TRAINING, epochs=settings.clean_epochs)
    owner = _cached_model(
        models / "owner-clean",
        lambda: train_model(ctx.spec(settings.arch), ctx.splits.owner, seed=settings.owner_seed, config=training),
    )
    specs = classifier_specs(settings.arch, size=settings.zoo)
    zoo = build_classifier_zoo(ctx, owner, specs, models / "zoo", training=training)
    kinds = {s.name: s.kind for s in specs}
    return Setting(owner, ctx.splits.owner, ctx.splits.attacker, zoo, kinds, fine_tuned)


def _encoder_setting(settings: ValiditySettings, models: Path) -> Setting:
    from ownmark.bench.studies.validity_families import encoder_zoo
    from ownmark.families.classifier import Context
    from ownmark.families.encoder import encoder_settings, train_encoder
    from ownmark.train import Engine

    ctx = Context.load(settings.dataset, settings.split_seed)
    raw = encoder_settings({"arch": settings.arch, "ssl": {"epochs": settings.clean_epochs}})
    owner = _cached_model(
        models / "owner-clean",
        lambda: train_encoder(ctx, raw, settings.arch, "simclr", settings.owner_seed, "owner", Engine()),
    )
    zoo, kinds = encoder_zoo(
        ctx, owner, models / "zoo", arch=settings.arch, ssl_epochs=settings.clean_epochs, size=settings.zoo
    )
    return Setting(owner, ctx.splits.owner, ctx.splits.attacker, zoo, kinds)


def _i2i_setting(settings: ValiditySettings, models: Path) -> Setting:
    from ownmark.bench.studies.validity_families import i2i_zoo, train_target
    from ownmark.data.image2image import load_task

    splits = load_task(settings.dataset, split_seed=settings.split_seed)
    owner = _cached_model(
        models / "owner-clean",
        lambda: train_target(splits.owner, settings.arch, settings.owner_seed, settings.clean_epochs),
    )
    zoo, kinds = i2i_zoo(splits, owner, models / "zoo", epochs=settings.clean_epochs, size=settings.zoo)
    return Setting(owner, splits.owner, splits.attacker.x, zoo, kinds)


SETTINGS = {"classifier": _classifier_setting, "encoder": _encoder_setting, "image2image": _i2i_setting}


def measure(settings: ValiditySettings, workdir: Path, workers: int = 1) -> ValidityReport:
    """:func:`run_validity` on explicit settings.

    The work is cut into row groups (one scheme, test and null suspect over every key draw; one
    scheme's marked models), each cached in its own file: ``workers`` spawned processes (one torch
    thread each) compute the missing groups, after the zoo is trained and each scheme's keys are
    drawn and stored here once. Rows do not depend on ``workers``.
    """
    from ownmark.bench.executors import local

    seconds: dict[str, float] = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    setting = SETTINGS[settings.family](settings, workdir / "models")
    seconds["models"] = time.perf_counter() - start
    errors: dict[str, str] = {}
    tasks: list[GroupTask] = []
    for label, spec in settings.schemes.items():
        try:
            tasks += _scheme_tasks(settings, label, spec, setting, workdir)
        except Exception as err:  # a scheme in flux must not sink the others; the report names it
            log.exception("validity: scheme %s failed", label)
            errors[label] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    seconds["keys"] = time.perf_counter() - start - seconds["models"]
    _WORKER_SETTING[_setting_id(settings, workdir)] = setting  # the serial path computes in this process
    run = local(workers)
    for task, failure in run(_run_group, tasks):
        if failure is not None and task.label not in errors:
            log.error("validity: %s / %s failed: %s", task.label, task.suspect, failure)
            errors[task.label] = failure
    rows: list[Row] = []
    for label, spec in settings.schemes.items():
        if label in errors:
            continue
        try:
            groups = [_load_group(path) for path in _group_paths(settings, label, spec, setting, workdir)]
        except (FileNotFoundError, ValueError, OSError) as err:
            errors[label] = f"a row group is missing ({err}); run again to compute it"
            continue
        rows += [row for group in groups for row in group["rows"]]
        seconds[label] = sum(g.get("seconds", 0.0) for g in groups)  # compute time as first measured
    seconds["wall"] = time.perf_counter() - start
    seconds["cpu"] = time.process_time() - cpu_start  # this process only
    summary = summarise(rows, settings.alphas)
    files = write_outputs(workdir, rows, summary, {**_settings_dict(settings), "workers": workers}, errors, seconds)
    return ValidityReport(rows, summary, errors, seconds, files, _settings_dict(settings))


def _settings_dict(settings: ValiditySettings) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()}


def _cached_model(path: Path, build) -> nn.Module:
    from ownmark.io import artefact_paths
    from ownmark.models import load_model, save_model

    if artefact_paths(path)[1].is_file():
        return load_model(path)[0]
    model = build().eval()
    save_model(path, model, info={"validity": path.name})
    return model


def make_scheme(spec: dict[str, Any], label: str, family: str = "classifier", *, nulls: bool = True) -> Any:
    """The scheme object a settings entry describes (of the preset's family): ``spec["set"]``
    applies to every key, ``spec["nulls"]`` (verification sizes) to the null rows' key draws only,
    so the marked rows measure power at the scheme's own verification size."""
    from ownmark.watermarks import WATERMARKS, resolve_config

    cls = WATERMARKS.get(spec.get("scheme", label))
    if getattr(cls, "family", "classifier") != family:
        raise ConfigError(
            f"scheme {label!r} is of family {getattr(cls, 'family', 'classifier')!r}; this validity preset runs "
            f"{family} schemes"
        )
    overrides = {**spec.get("set", {}), **(spec.get("nulls", {}) if nulls else {})}
    return cls(resolve_config(cls, spec.get("preset"), overrides))


def draw_keys(settings: ValiditySettings, scheme: Any, setting: Setting, seeds: list[int]) -> list[Key]:
    """The key draws of one scheme: ``draw_key`` per seed, or for deep output watermarking a few
    trained extractors with redrawn secrets (:func:`ownmark.bench.studies.validity_families.deepwm_keys`)."""
    if getattr(scheme, "key_draw_trains", False):
        from ownmark.bench.studies.validity_families import deepwm_keys

        return deepwm_keys(scheme, setting.owner, setting.owner_data, seeds, extractors=settings.extractors)
    return [draw_key(scheme, setting.owner, setting.owner_data, seed=s) for s in seeds]


def fingerprint(scheme: Any, n_keys: int, key_seed0: int, extra: str = "") -> str:
    """What a cached row group depends on: the scheme's config and source code, and the key draws."""
    from ownmark.watermarks.base import config_dict

    source = inspect.getsource(inspect.getmodule(type(scheme)))
    text = f"{type(scheme).__name__}|{sorted(config_dict(scheme.config).items())}|{n_keys}|{key_seed0}|{source}"
    text += extra
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GroupTask:
    """One row group to compute: a null suspect under one test over every key draw (``suspect``
    a zoo name), or the scheme's marked models (``suspect`` is ``None``) under every test."""

    settings: ValiditySettings
    label: str
    spec: dict[str, Any]
    test: str | None
    suspect: str | None
    path: str
    workdir: str
    stamp: str


_WORKER_SETTING: dict[str, Setting] = {}  # per process: the zoo loaded once, reused by every task


def _setting_id(settings: ValiditySettings, workdir: Path) -> str:
    return f"{workdir.resolve()}|{settings.family}|{settings.dataset}|{settings.arch}|{settings.zoo}"


def _tests(settings: ValiditySettings, label: str) -> tuple[str, ...]:
    return (OWN_TEST, *settings.tests.get(label, ()))


def _stamp(settings: ValiditySettings, scheme: Any) -> str:
    extra = f"|extractors {settings.extractors}" if getattr(scheme, "key_draw_trains", False) else ""
    return fingerprint(scheme, settings.n_keys, settings.key_seed0, extra)


def _group_paths(
    settings: ValiditySettings, label: str, spec: dict[str, Any], setting: Setting, workdir: Path
) -> list[Path]:
    """Every row-group file of one scheme, in report order."""
    rows = workdir / "rows" / label
    paths = []
    for test in _tests(settings, label):
        paths += [rows / test.replace("/", "_") / f"{name}.json" for name in setting.zoo]
    return paths + [rows / "marked" / f"seeds{'-'.join(map(str, settings.marked_seeds))}.json"]


def _load_group(path: Path, stamp: str | None = None) -> dict[str, Any]:
    from ownmark.io import load_json

    cached = load_json(path)
    if stamp is not None and cached.get("fingerprint") != stamp:
        raise FileNotFoundError(path)
    return cached


def _fresh(path: Path, stamp: str) -> bool:
    try:
        _load_group(path, stamp)
    except (FileNotFoundError, ValueError, OSError):
        return False
    return True


def _scheme_tasks(
    settings: ValiditySettings, label: str, spec: dict[str, Any], setting: Setting, workdir: Path
) -> list[GroupTask]:
    """The missing row groups of one scheme; draws and stores its keys first when any is missing."""
    scheme = make_scheme(spec, label, settings.family)
    stamp = _stamp(settings, scheme)
    marked_stamp = _stamp(settings, make_scheme(spec, label, settings.family, nulls=False))
    tasks = []
    paths = _group_paths(settings, label, spec, setting, workdir)
    names = [(test, name) for test in _tests(settings, label) for name in setting.zoo] + [(None, None)]
    for path, (test, name) in zip(paths, names, strict=True):
        group_stamp = stamp if name is not None else marked_stamp
        if not _fresh(path, group_stamp):
            tasks.append(GroupTask(settings, label, spec, test, name, str(path), str(workdir), group_stamp))
    if any(t.suspect is not None for t in tasks):
        _stored_keys(settings, scheme, setting, workdir, label, stamp)  # drawn once, before the workers
    return tasks


def _stored_keys(
    settings: ValiditySettings, scheme: Any, setting: Setting | None, workdir: Path, label: str, stamp: str
) -> list[Key]:
    """The scheme's key draws, stored under ``workdir/keys`` (deepwm's draws train extractors)."""
    from ownmark.io import artefact_paths, load_json, load_key, save_json, save_key

    folder = workdir / "keys" / label / stamp
    seeds = [settings.key_seed0 + i for i in range(settings.n_keys)]
    done = folder / "done.json"
    if done.is_file() and load_json(done).get("seeds") == seeds:
        return [load_key(folder / f"seed{s}") for s in seeds]
    if setting is None:
        raise FileNotFoundError(f"{label}: no stored key draws under {folder}")
    t0 = time.perf_counter()
    keys = draw_keys(settings, scheme, setting, seeds)
    for seed, key in zip(seeds, keys, strict=True):
        if not artefact_paths(folder / f"seed{seed}")[1].is_file():
            save_key(folder / f"seed{seed}", key)
    save_json(done, {"seeds": seeds, "seconds": round(time.perf_counter() - t0, 2)})
    return [load_key(folder / f"seed{s}") for s in seeds]  # as stored: what every worker verifies


def _run_group(task: GroupTask) -> tuple[GroupTask, str | None]:
    """Compute one row group and store it; returns the task and an error line (None when done)."""
    try:
        _compute_group(task)
        return task, None
    except Exception as err:  # reported per scheme by measure
        log.exception("validity: group %s failed", task.path)
        return task, f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"


def _compute_group(task: GroupTask) -> None:
    from ownmark.io import save_json

    settings, workdir = task.settings, Path(task.workdir)
    ident = _setting_id(settings, workdir)
    if ident not in _WORKER_SETTING:  # a spawned worker: one thread, the zoo loaded from the cache
        torch.set_num_threads(1)
        _WORKER_SETTING[ident] = SETTINGS[settings.family](settings, workdir / "models")
    setting = _WORKER_SETTING[ident]
    scheme = make_scheme(task.spec, task.label, settings.family, nulls=task.suspect is not None)
    t0 = time.perf_counter()
    if task.suspect is None:
        rows = []
        for test in _tests(settings, task.label):
            rows += _marked_rows(settings, task.label, scheme, test, setting, workdir, task.stamp)
    else:
        keys = _stored_keys(settings, scheme, None, workdir, task.label, task.stamp)
        seeds = [settings.key_seed0 + i for i in range(settings.n_keys)]
        base = {
            "family": settings.family, "scheme": task.label, "test": task.test, "role": "null",
            "suspect": task.suspect, "kind": setting.kinds[task.suspect],
        }  # fmt: skip
        suspect = setting.zoo[task.suspect]
        rows = [
            _verify(scheme, TESTS[task.test], suspect, key, base={**base, "key_seed": seed})
            for seed, key in zip(seeds, keys, strict=True)
        ]
    save_json(Path(task.path), {"fingerprint": task.stamp, "rows": rows, "seconds": round(time.perf_counter() - t0, 2)})


def _verify(scheme: Any, test, suspect: Any, key: Key, *, base: Row) -> Row:
    from ownmark.verify import decide

    t0 = time.perf_counter()
    verdict = decide(test(scheme, suspect, key), 0.01)
    return {
        **base,
        "p_value": verdict.p_value,
        "smallest_p": verdict.smallest_p,
        "statistic": verdict.statistic,
        "queries": verdict.queries,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def _marked_rows(
    settings: ValiditySettings, label: str, scheme: Any, test: str, setting: Setting, workdir: Path, stamp: str
) -> list[Row]:
    """Rows of models really marked with ``marked_seeds``' keys, unattacked and attacked."""
    from ownmark.io import artefact_paths, key_digest, load_key, save_key
    from ownmark.models import load_model, save_model

    rows = []
    for seed in settings.marked_seeds:
        base = workdir / "models" / f"marked-{label}-{stamp}-seed{seed}"  # a new config or code embeds anew
        if artefact_paths(base.with_name(base.name + "-key"))[1].is_file():
            marked, key = load_model(base)[0], load_key(base.with_name(base.name + "-key"))
        else:
            marked, key = scheme.embed(setting.owner, setting.owner_data, seed=seed)
            save_model(base, marked.eval(), info={"scheme": label, "seed": seed})
            save_key(base.with_name(base.name + "-key"), key)
        info = {
            "family": settings.family,
            "scheme": label,
            "test": test,
            "key_seed": seed,
            "kind": "marked",
            "key_digest": key_digest(key)[:16],
        }
        if not getattr(scheme, "key_draw_trains", False):  # a deepwm draw trains again: not re-checked here
            drawn = draw_key(scheme, setting.owner, setting.owner_data, seed=seed)
            info["draw_key_matches_embed"] = all(
                torch.equal(drawn.tensors[n], key.tensors[n]) for n in drawn.tensors if n in key.tensors
            )
        group = [_verify(scheme, TESTS[test], marked.eval(), key, base={**info, "role": "marked", "suspect": "marked"})]
        if settings.attack != "none":
            attacked = _attacked(
                settings.attack, marked, setting, seed, base.with_name(base.name + f"-{settings.attack}")
            )
            group.append(
                _verify(
                    scheme,
                    TESTS[test],
                    attacked,
                    key,
                    base={**info, "role": "attacked", "suspect": f"marked+{settings.attack}"},
                )
            )
        rows += group
    return rows


def _attacked(name: str, marked: nn.Module, setting: Setting, seed: int, path: Path) -> nn.Module:
    """``ftal`` on classifiers is the zoo's own all-layer fine-tuning (the attack's defaults, no
    registry import); any other name is an attack of ``ownmark.attacks`` at its default config."""
    if name == "ftal" and setting.fine_tune is not None:
        return _cached_model(path, lambda: setting.fine_tune(marked, setting.attacker_data, seed=seed))
    from ownmark.attacks import ATTACKS

    cls = ATTACKS.get(name)
    return _cached_model(path, lambda: cls()(marked, setting.attacker_data, seed=seed)[0])
